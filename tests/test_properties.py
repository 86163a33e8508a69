"""Property tests: the readers of what people hand us (class lists, index files, checkpoints, run
records) given arbitrary text, bytes, arrays, shapes and dtypes. The only outcomes allowed are a
valid result or a UserError of one line; any other exception fails the test."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coun_tui.engine import UserError, checkpoint
from coun_tui.engine.forget import ForgetSpec, class_id, make_split, parse_classes, read_indices
from coun_tui.engine.records import RunRecord, read_events, read_metrics, read_spec, read_status
from coun_tui.engine.rundir import read_state, scan_events
from coun_tui.engine.runlog import read_run

FIXTURE = Path(__file__).parent / "fixtures" / "runs" / "ft-digits-class3"
DIGITS = [str(i) for i in range(10)]
N = 50  # size of the train split the index files point into
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def one_line(exc: UserError) -> None:
    assert str(exc) and "\n" not in str(exc)


def outcome(fn, *args):
    """The result, or None after checking that the UserError raised is one line."""
    try:
        return fn(*args)
    except UserError as exc:
        one_line(exc)
        return None


@SETTINGS
@given(st.text(alphabet=string.printable + "³٣ÿ,,", max_size=30))
def test_class_lists(text):
    classes = outcome(parse_classes, text, lambda token: class_id(token, DIGITS, "digits"))
    if classes is not None:
        assert classes == sorted(set(classes)) and all(0 <= c < 10 for c in classes)


def _check_indices(result):
    if result is not None:
        assert result.dtype == np.int64 and result.ndim == 1
        assert np.all(np.diff(result) > 0) and (result.size == 0 or (result.min() >= 0 and result.max() < N))


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".npy", ".npz", ".txt"]))
def test_index_files_of_arbitrary_bytes(tmp_path, data, suffix):
    path = tmp_path / f"idx{suffix}"
    path.write_bytes(data)
    _check_indices(outcome(read_indices, str(path), N))


@SETTINGS
@given(arr=hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
       as_npz=st.booleans())
def test_index_files_of_arbitrary_arrays(tmp_path, arr, as_npz):
    path = tmp_path / ("split.npz" if as_npz else "idx.npy")
    if as_npz:
        np.savez(path, forget=arr)
    else:
        np.save(path, arr)
    result = outcome(read_indices, str(path), N)
    _check_indices(result)
    if result is not None:  # accepted only what is exactly a 1-D array of integer indices
        assert arr.ndim == 1 and arr.dtype.kind in "iu" and np.array_equal(result, np.unique(arr))


@SETTINGS
@given(text=st.text(max_size=60))
def test_index_text_files(tmp_path, text):
    path = tmp_path / "idx.txt"
    path.write_bytes(text.encode("utf-8", "replace"))
    _check_indices(outcome(read_indices, str(path), N))


@SETTINGS
@given(spec=st.fixed_dictionaries({}, optional={"classes": JSON, "fraction": JSON, "seed": JSON,
                                                "indices_file": JSON, "indices": JSON}))
def test_recorded_forget_sets(spec):
    forget = outcome(ForgetSpec.from_dict, spec)
    if forget is not None:
        split = outcome(make_split, forget, np.arange(N) % 10)
        if split is not None:
            assert len(split.retain) + len(split.forget) == N


# --- checkpoints ------------------------------------------------------------------------------

@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".safetensors", ".pt", ".pth", ".tar"]))
def test_checkpoints_of_arbitrary_bytes(tmp_path, data, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    assert outcome(checkpoint.load, path) is None  # never a model from noise


TENSOR_NAMES = ["conv1.weight", "fc.weight", "fc.bias", "bn1.weight", "layer1.0.conv1.weight", "x"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.uint8,
          torch.bool]


@st.composite
def state_dicts(draw):
    names = draw(st.lists(st.sampled_from(TENSOR_NAMES), min_size=1, max_size=4, unique=True))
    out = {}
    for name in names:
        shape = draw(st.lists(st.integers(0, 4), max_size=4))
        dtype = draw(st.sampled_from(DTYPES))
        out[name] = torch.zeros(shape, dtype=dtype) if dtype is torch.bool else torch.ones(shape, dtype=dtype)
    return out


@SETTINGS
@given(state=state_dicts(), wrap=st.sampled_from([None, "state_dict", "model"]), as_pt=st.booleans())
def test_checkpoints_of_arbitrary_tensors(tmp_path, state, wrap, as_pt):
    path = tmp_path / ("m.pt" if as_pt else "m.safetensors")
    obj = {wrap: state} if wrap else state
    if as_pt:
        torch.save(obj, path)
    else:
        safetensors.torch.save_file(state, str(path))
    assert outcome(checkpoint.load, path) is None  # none of these is a whole ResNet-18


@pytest.fixture(scope="module")
def resnet_state():
    from coun_tui.engine.model import build

    return build(3, 1).state_dict()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.integers(0, 121), dtype=st.sampled_from(DTYPES),
       change=st.sampled_from(["dtype", "nan", "shape", "drop"]))
def test_checkpoints_with_one_tensor_changed(tmp_path, resnet_state, key, dtype, change):
    state = dict(resnet_state)
    name = sorted(state)[key % len(state)]
    if change == "dtype":
        state[name] = state[name].to(dtype)
    elif change == "nan" and state[name].is_floating_point() and state[name].numel():
        state[name] = state[name].clone().fill_(float("nan"))
    elif change == "shape":
        state[name] = torch.ones(2, *state[name].shape)
    elif change == "drop":
        del state[name]
    path = tmp_path / "m.pt"
    torch.save(state, path)
    result = outcome(checkpoint.load, path)
    if result is not None:  # only a change that keeps every weight a finite float may load
        model, meta = result
        assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
        assert meta["num_classes"] == 3 and meta["in_channels"] == 1


@SETTINGS
@given(meta=st.fixed_dictionaries({k: JSON for k in checkpoint.REQUIRED_KEYS}, optional={
    "classes": JSON, "recipe": JSON, "forget": JSON, "metrics": JSON, "subset_seed": JSON}))
def test_checkpoint_metadata_of_arbitrary_values(tmp_path, meta):
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file({"fc.weight": torch.zeros(2, 2)}, str(path),
                                metadata={k: json.dumps(v) for k, v in meta.items()})
    result = outcome(checkpoint.read_meta, path)
    if result is not None:
        assert result["stem"] in ("cifar", "imagenet") and result["in_channels"] >= 1


# --- run records ------------------------------------------------------------------------------

RECORD_FILES = ["metrics.json", "status.json", "run.toml", "labels.json", "events.jsonl", "split.npz"]


def _run_with(tmp_path: Path, name: str, data: bytes) -> Path:
    run = tmp_path / "run"
    if not run.exists():
        import shutil

        shutil.copytree(FIXTURE, run)
    (run / name).write_bytes(data)
    return run


@SETTINGS
@given(name=st.sampled_from(RECORD_FILES), data=st.binary(max_size=300))
def test_run_records_of_arbitrary_bytes(tmp_path, name, data):
    run = _run_with(tmp_path, name, data)
    rec = RunRecord.read(run)  # never raises: damage is listed
    assert isinstance(rec.state_text, str) and all("\n" not in d for d in rec.damage)
    for reader in (read_metrics, read_status, read_spec):
        outcome(reader, run)
    log = outcome(read_run, run)
    assert log is not None
    log.final_gap(), log.seconds, log.flops, log.eta_seconds, log.images_per_second


@SETTINGS
@given(name=st.sampled_from(["metrics.json", "status.json", "labels.json"]), value=JSON)
def test_run_records_of_arbitrary_json(tmp_path, name, value):
    run = _run_with(tmp_path, name, json.dumps(value).encode())
    rec = RunRecord.read(run)
    if name == "metrics.json" and rec.metrics is not None:
        from coun_tui.engine.report import row_of

        row_of({"name": "x", **rec.metrics.as_dict()})
    outcome(read_metrics, run)


@SETTINGS
@given(lines=st.lists(JSON | st.fixed_dictionaries(
    {"kind": st.sampled_from(["started", "step", "epoch", "embedding", "done", "failed", "cancelled"]) | JSON},
    optional={k: JSON for k in ("epochs", "steps_per_epoch", "losses", "metrics", "gap", "xy", "labels", "forget",
                                "step", "epoch", "seconds", "flops", "reason", "hparams", "method")}), max_size=5))
def test_event_lines_of_arbitrary_json(tmp_path, lines):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    events, damage = read_events(path)
    assert len(events) + len(damage) == len(lines)
    from coun_tui.engine.runlog import RunLog

    log = RunLog()
    for event in events:  # whatever is accepted, a run log takes
        log.apply(event)
    log.final_gap(), log.seconds, log.eta_seconds, [log.gap(e.metrics, e.gap) for e in log.epochs]
    assert isinstance(read_state(tmp_path).state, str)  # the state's fast scan of the same file


def test_event_fields_of_the_wrong_type_are_damage_not_a_crash(tmp_path):
    lines = [{"kind": "started", "epochs": "x"}, {"kind": "step", "step": 3},
             {"kind": "step", "step": {}}, {"kind": "cancelled", "step": 1e400}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    facts = scan_events(tmp_path)
    assert (facts["total"], facts["step"], facts["damaged"]) == (0, 3, 2)


@pytest.mark.parametrize("name", RECORD_FILES)
def test_a_folder_where_a_record_belongs_is_no_crash(tmp_path, name):
    run = _run_with(tmp_path, name, b"")
    (run / name).unlink()
    (run / name).mkdir()  # a folder where the file belongs
    rec = RunRecord.read(run)
    assert isinstance(rec.state_text, str)
    assert outcome(read_run, run) is not None
