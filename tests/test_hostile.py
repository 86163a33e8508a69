"""Hostile input, as a table: every case must end in exit code 2 with exactly one `error:` line,
no traceback, and nothing written (the files it was given are untouched, no --out appears).

The CLI runs in-process (the `cli` fixture); the damaged run records of RECORD_DAMAGE are also
opened by the app with Pilot (tests/test_tui_hostile.py).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
FASHION = Path(__file__).parents[1] / "models" / "resnet18-fashion-mnist-10k.safetensors"
FT_METRICS = (FIXTURE_RUNS / "ft-digits-class3" / "metrics.json").read_text()


def _metrics(**change) -> str:
    m = json.loads(FT_METRICS)
    for key, value in change.items():
        if value is ...:
            m.pop(key)
        else:
            m[key] = value
    return json.dumps(m)


# Damaged run records: (file, content). Shared with the app's test.
RECORD_DAMAGE = {
    "metrics-truncated": ("metrics.json", FT_METRICS[:40]),
    "metrics-no-method": ("metrics.json", _metrics(method=...)),
    "metrics-seconds-fast": ("metrics.json", _metrics(seconds="fast")),
    "metrics-RA-text": ("metrics.json", _metrics(RA="99.1")),
    "metrics-gap-number": ("metrics.json", _metrics(gap=5)),
    "metrics-a-list": ("metrics.json", "[1, 2, 3]"),
    "metrics-not-utf8": ("metrics.json", b"\xff\xfe{\x00"),
    "metrics-empty": ("metrics.json", ""),
    "status-not-json": ("status.json", "{not json"),
    "events-losses-5": ("events.jsonl", None),  # built from the fixture: a step's losses become 5
    "events-garbage-line": ("events.jsonl", None),  # built from the fixture: one line of garbage
    "run-toml-invalid": ("run.toml", "method = \n[forget\n"),
    "run-toml-wrong-types": ("run.toml", 'method = "ft"\nseed = "zero"\n[forget]\nclasses = ["three"]\n'),
    "labels-garbage": ("labels.json", "{\"name\": 5, \"tags\": \"x\"}"),
    "labels-long-name": ("labels.json", json.dumps({"name": "n" * 3000, "tags": ["t" * 500]})),
    "split-garbage": ("split.npz", b"PK\x03\x04 not really a zip"),
    "embedding-garbage": ("embedding.npy", b"\x93NUMPY garbage"),
}


def damaged_run(root: Path, case: str, base: str = "ft-digits-class3") -> Path:
    """A copy of a recorded fixture run with one file damaged as RECORD_DAMAGE[case] says."""
    run = root / f"{case}-run"
    shutil.copytree(FIXTURE_RUNS / base, run)
    name, content = RECORD_DAMAGE[case]
    if case == "events-losses-5":
        lines = (run / name).read_text().splitlines()
        i = next(i for i, line in enumerate(lines) if '"kind":"step"' in line)
        lines[i] = json.dumps({**json.loads(lines[i]), "losses": 5})
        content = "\n".join(lines) + "\n"
    elif case == "events-garbage-line":
        lines = (run / name).read_text().splitlines()
        content = "\n".join(lines[:3] + ["}{ garbage"] + lines[3:]) + "\n"
    elif case == "status-not-json":  # a run that stopped without a verdict in its events
        (run / "metrics.json").unlink()
        lines = (run / "events.jsonl").read_text().splitlines()
        (run / "events.jsonl").write_text("\n".join(lines[:10]) + "\n")
    path = run / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return run


# --- files the cases read ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, digits_model) -> dict[str, Path]:
    """Checkpoints broken in the ways people meet them."""
    root = tmp_path_factory.mktemp("models")
    state = load_file(digits_model)
    meta = safe_open(digits_model, "pt").metadata()
    out = {}

    def save(name, tensors, metadata=meta):
        out[name] = root / f"{name}.safetensors"
        save_file(tensors, str(out[name]), metadata=metadata)

    save("int32", {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in state.items()})
    nan = dict(state)
    nan["conv1.weight"] = state["conv1.weight"].clone()
    nan["conv1.weight"][0, 0, 0, 0] = float("nan")
    save("nan", nan)
    save("subset-abc", state, {**meta, "subset": json.dumps("abc")})
    save("mean-broken-json", state, {**meta, "mean": "[0.3, "})
    save("mean-two-channels", state, {**meta, "mean": "[0.3, 0.3]"})
    save("classes-too-few", state, {**meta, "classes": json.dumps(["a", "b"])})
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(Path(digits_model).read_bytes()[:4096])
    out["truncated"] = truncated

    class Payload:  # would create a marker file if unpickled
        def __reduce__(self):
            return (os.system, (f"touch {root / 'PWNED'}",))

    (root / "evil.pt").write_bytes(pickle.dumps(Payload()))
    out["evil"] = root / "evil.pt"
    (root / "garbage.pt").write_bytes(b"\x80\x02garbage" * 10)
    out["garbage"] = root / "garbage.pt"
    torch.save({"weights": torch.zeros(3)}, root / "not-resnet.pt")
    out["not-resnet"] = root / "not-resnet.pt"
    (root / "model.ckpt").write_bytes(b"x")
    out["ckpt"] = root / "model.ckpt"
    return out


def index_file(root: Path, name: str) -> Path:
    path = root / name
    if name == "floats.npy":
        np.save(path, np.array([1.7, 2.2]))
    elif name == "mask.npy":
        np.save(path, np.array([True, False, True]))
    elif name == "2d.npy":
        np.save(path, np.arange(6).reshape(2, 3))
    elif name == "far.npy":
        np.save(path, np.array([5, 10**6]))
    elif name == "objects.npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif name == "floats.txt":
        path.write_text("1.5 2.5")
    elif name == "words.txt":
        path.write_text("1 2 three")
    elif name == "huge.txt":
        path.write_text("9" * 40)
    elif name == "other.npz":
        np.savez(path, something=np.arange(3))
    elif name == "garbage.npz":
        path.write_bytes(b"PK\x03\x04 garbage")
    elif name == "seeds.toml":
        path.write_text(f'model = "m"\nmethods = ["ft"]\nout = "{root}/o"\nforget = [{{classes = [3]}}]\n'
                        'seeds = ["a"]\n')
    elif name == "typo.toml":
        path.write_text(f'model = "m"\nmethods = ["ft"]\nout = "{root}/o"\nforget = [{{classes = [3]}}]\nseed = 1\n')
    return path


def sweep_dir(root: Path, damage: str, content: str) -> Path:
    """A sweep folder whose finished Retrain run is damaged."""
    out = root / "sweep"
    run = out / "class-3" / "seed-0" / "retrain"
    shutil.copytree(FIXTURE_RUNS / "retrain-digits-class3", run)
    (run / damage).write_text(content)
    return out


# --- the table ----------------------------------------------------------------------------------

U = ("unlearn", "--model", "{digits}", "--out", "{out}")  # add --method and a forget set
FT3 = (*U, "--method", "ft", "--forget-class", "3")

CASES: list[tuple[str, tuple, str]] = [
    # (id, arguments, a fragment the one line must hold)
    # hyperparameters: checked against the method's declaration before anything is written
    ("lr-negative", (*FT3, "--lr", "-1"), "--lr '-1': expected a number > 0"),
    ("lr-zero", (*FT3, "--lr", "0"), "expected a number > 0"),
    ("lr-text", (*FT3, "--lr", "abc"), "--lr 'abc'"),
    ("lr-nan", (*FT3, "--lr", "nan"), "expected a number > 0"),
    ("lr-inf", (*FT3, "--lr", "inf"), "expected a number > 0"),
    ("tau-zero", (*U, "--method", "coun", "--forget-class", "3", "--tau", "0"), "--tau '0': expected a number > 0"),
    ("lambda-negative", (*U, "--method", "coun", "--forget-class", "3", "--lambda", "-1"), "--lambda '-1'"),
    ("lambda-cl-negative", (*FT3, "--cl", "--lambda", "-0.5"), "expected a number >= 0"),
    ("mask-ratio-2", (*U, "--method", "salun", "--forget-class", "3", "--mask-ratio", "2"),
     "expected a number in (0, 1]"),
    ("mask-ratio-0", (*U, "--method", "salun", "--forget-class", "3", "--mask-ratio", "0"), "--mask-ratio"),
    ("alpha-1.5", (*U, "--method", "neggrad+", "--forget-class", "3", "--alpha", "1.5"), "in [0, 1]"),
    ("gamma-negative", (*U, "--method", "l1-sparse", "--forget-class", "3", "--gamma", "-1"), "--gamma"),
    ("l1-epochs-negative", (*U, "--method", "l1-sparse", "--forget-class", "3", "--l1-epochs", "-2"),
     "an integer >= 0"),
    ("epochs-zero", (*FT3, "--epochs", "0"), "an integer >= 1"),
    ("epochs-fraction", (*FT3, "--epochs", "1.5"), "an integer >= 1"),
    ("batch-size-1", (*FT3, "--batch-size", "1"), "an integer >= 2"),
    ("momentum-1", (*FT3, "--momentum", "1"), "in [0, 1)"),
    ("weight-decay-negative", (*FT3, "--weight-decay", "-0.1"), "--weight-decay"),
    ("schedule-unknown", (*FT3, "--schedule", "linear"), "one of cosine, step, constant"),
    ("alpha-for-ft", (*FT3, "--alpha", "0.5"), "ft has no hyperparameter alpha"),
    ("method-unknown", (*U, "--method", "magic", "--forget-class", "3"), "unknown method 'magic'"),
    # forget sets
    ("class-3-and-42", (*U, "--method", "ft", "--forget-class", "3,42"), "unknown class '42'"),
    ("class-42", (*U, "--method", "ft", "--forget-class", "42"), "unknown class '42'"),
    ("class-superscript", (*U, "--method", "ft", "--forget-class", "³"), "unknown class '³'"),
    ("class-negative", (*U, "--method", "ft", "--forget-class", "-1"), "unknown class '-1'"),
    ("class-dress-on-digits", (*U, "--method", "ft", "--forget-class", "Dress"), "unknown class 'Dress'"),
    ("fashion-dress-12", ("unlearn", "--model", FASHION, "--out", "{out}", "--method", "ft",
                          "--forget-class", "Dress,12"), "unknown class '12' for fashion-mnist"),
    ("fashion-socks", ("unlearn", "--model", FASHION, "--out", "{out}", "--method", "ft",
                       "--forget-class", "Socks"), "or one of: T-shirt/top"),
    ("fraction-zero", (*U, "--method", "ft", "--forget-fraction", "0"), "between 0 and 1"),
    ("fraction-1.5", (*U, "--method", "ft", "--forget-fraction", "1.5"), "between 0 and 1"),
    ("fraction-nan", (*U, "--method", "ft", "--forget-fraction", "nan"), "between 0 and 1"),
    ("two-forget-modes", (*FT3, "--forget-fraction", "0.1"), "not several"),
    ("nothing-to-forget", (*U, "--method", "ft"), "nothing to forget"),
    ("indices-floats", (*U, "--method", "ft", "--forget-indices", "{root}/floats.npy"), "float64, not integers"),
    ("indices-bool-mask", (*U, "--method", "ft", "--forget-indices", "{root}/mask.npy"), "boolean mask"),
    ("indices-2d", (*U, "--method", "ft", "--forget-indices", "{root}/2d.npy"), "save a 1-D array"),
    ("indices-out-of-range", (*U, "--method", "ft", "--forget-indices", "{root}/far.npy"), "must lie in 0..1436"),
    ("indices-pickled-objects", (*U, "--method", "ft", "--forget-indices", "{root}/objects.npy"),
     "cannot read forget indices"),
    ("indices-text-floats", (*U, "--method", "ft", "--forget-indices", "{root}/floats.txt"), "'1.5' is not an integer"),
    ("indices-text-words", (*U, "--method", "ft", "--forget-indices", "{root}/words.txt"), "'three'"),
    ("indices-text-huge", (*U, "--method", "ft", "--forget-indices", "{root}/huge.txt"), "is not an integer"),
    ("indices-missing", (*U, "--method", "ft", "--forget-indices", "{root}/nope.npy"), "No such file"),
    ("indices-npz-without-forget", (*U, "--method", "ft", "--forget-indices", "{root}/other.npz"), "forget"),
    ("indices-npz-garbage", (*U, "--method", "ft", "--forget-indices", "{root}/garbage.npz"),
     "cannot read forget indices"),
    # seeds, devices, precision
    ("seed-negative", (*FT3, "--seed", "-1"), "--seed -1 must lie in 0.."),
    ("seed-huge", (*FT3, "--seed", "99999999999"), "must lie in 0..4294967295"),
    ("device-absent", (*FT3, "--device", "cuda:7"), "cuda:7"),
    ("device-unknown", (*FT3, "--device", "tpu"), "use auto, cpu or cuda:N"),
    ("precision-unknown", (*FT3, "--precision", "fp8"), "use auto, bf16 or fp32"),
    # checkpoints
    ("model-missing", ("unlearn", "--model", "{root}/nope.safetensors", "--out", "{out}", "--method", "ft",
                       "--forget-class", "3"), "no such checkpoint"),
    ("model-int32-weights", ("eval", "--model", "{model:int32}", "--forget-class", "3"), "stored as int32"),
    ("model-nan-weights", ("eval", "--model", "{model:nan}", "--forget-class", "3"), "NaN or infinite"),
    ("model-subset-text", ("eval", "--model", "{model:subset-abc}", "--forget-class", "3"), "subset"),
    ("model-mean-broken-json", ("eval", "--model", "{model:mean-broken-json}", "--forget-class", "3"), "mean"),
    ("model-mean-two-channels", ("eval", "--model", "{model:mean-two-channels}", "--forget-class", "3"),
     "mean has 2 value(s) for 1 channel(s)"),
    ("model-classes-too-few", ("eval", "--model", "{model:classes-too-few}"), "2 class names for 10 classes"),
    ("model-truncated", ("eval", "--model", "{model:truncated}"), "re-save or re-download it"),
    ("model-raw-pickle", ("eval", "--model", "{model:evil}"), "evil.pt"),
    ("model-garbage-pt", ("eval", "--model", "{model:garbage}"), "not a PyTorch checkpoint"),
    ("model-not-resnet", ("eval", "--model", "{model:not-resnet}"), "not a ResNet-18 checkpoint"),
    ("model-unknown-suffix", ("eval", "--model", "{model:ckpt}"), "unsupported checkpoint type"),
    ("unlearn-int32-weights", ("unlearn", "--model", "{model:int32}", "--out", "{out}", "--method", "ft",
                               "--forget-class", "3"), "not as floating-point weights"),
    ("dataset-mismatch", (*FT3, "--dataset", "cifar10", "--data-root", "{root}"), "cifar10"),
    # references and run records
    ("reference-not-finished", (*FT3, "--reference", "{root}"), "not a finished run"),
    ("reference-damaged-metrics", (*FT3, "--reference", "{run:metrics-truncated}"), "metrics.json is damaged"),
    ("reference-not-retrain", (*FT3, "--reference", FIXTURE_RUNS / "ft-digits-class3"), "must be a Retrain run"),
    ("compare-metrics-truncated", ("compare", "{run:metrics-truncated}"),
     "EOF while parsing an object (not valid JSON)"),
    ("compare-metrics-no-method", ("compare", "{run:metrics-no-method}"), "method: field required"),
    ("compare-metrics-seconds-text", ("compare", "{run:metrics-seconds-fast}"), "seconds: input should be a valid"),
    ("compare-metrics-RA-text", ("compare", "{run:metrics-RA-text}"), "RA: input should be a valid number"),
    ("compare-metrics-gap-number", ("compare", "{run:metrics-gap-number}"), "gap:"),
    ("compare-metrics-list", ("compare", "{run:metrics-a-list}"), "metrics.json is damaged"),
    ("compare-metrics-not-utf8", ("compare", "{run:metrics-not-utf8}"), "metrics.json is damaged"),
    ("compare-metrics-empty", ("compare", "{run:metrics-empty}"), "metrics.json is damaged"),
    ("compare-unfinished", ("compare", "{run:status-not-json}"), "not a finished run"),
    ("compare-format-unknown", ("compare", FIXTURE_RUNS / "ft-digits-class3", "--format", "xml"),
     "use md, csv or json"),
    ("compare-sort-unknown", ("compare", FIXTURE_RUNS / "ft-digits-class3", "--sort", "speed"), "cannot sort by"),
    ("compare-reference-damaged", ("compare", FIXTURE_RUNS / "ft-digits-class3", "--reference",
                                   "{run:metrics-seconds-fast}"), "metrics.json is damaged"),
    ("sweep-resume-truncated-metrics", ("sweep", "--model", "{digits}", "--methods", "ft", "--forget-class", "3",
                                        "--out", "{sweep:metrics.json}"), "metrics.json is damaged: line"),
    ("sweep-resume-invalid-run-toml", ("sweep", "--model", "{digits}", "--methods", "ft", "--forget-class", "3",
                                       "--out", "{sweep:run.toml}"), "run.toml is damaged"),
    ("sweep-set-out-of-range", ("sweep", "--model", "{digits}", "--methods", "ft", "--forget-class", "3",
                                "--out", "{out}", "--set", "lr=-1"), "--set lr '-1': expected a number > 0"),
    ("sweep-set-unknown", ("sweep", "--model", "{digits}", "--methods", "ft", "--forget-class", "3",
                           "--out", "{out}", "--set", "ft.beta=1"),
     "--set beta: no method has a hyperparameter 'beta'"),
    ("sweep-set-no-value", ("sweep", "--model", "{digits}", "--methods", "ft", "--forget-class", "3",
                            "--out", "{out}", "--set", "lr"), "expected METHOD.KEY=VALUE"),
    ("sweep-seeds-text", ("sweep", "--model", "{digits}", "--methods", "ft", "--forget-class", "3",
                          "--out", "{out}", "--seeds", "a,b"), "comma-separated integers"),
    ("sweep-spec-seed-text", ("sweep", "--spec", "{root}/seeds.toml"),
     "seeds.toml: seeds.0: input should be a valid integer"),
    ("sweep-spec-unknown-key", ("sweep", "--spec", "{root}/typo.toml"), "seed: extra inputs are not permitted"),
    # train
    ("train-out-suffix", ("train", "--dataset", "digits", "--out", "{root}/m.pt"), "must end in .safetensors"),
    ("train-subset-zero", ("train", "--dataset", "digits", "--subset", "0", "--out", "{root}/m.safetensors"),
     "--subset 0"),
    ("train-lr-negative", ("train", "--dataset", "digits", "--lr", "-1", "--out", "{root}/m.safetensors"),
     "--lr '-1'"),
    ("train-dataset-unknown", ("train", "--dataset", "nope", "--out", "{root}/m.safetensors"), "unknown dataset"),
    # usage: click's errors, on one line too
    ("usage-missing-method", ("unlearn", "--model", "{digits}", "--out", "{out}"), "missing option '--method'"),
    ("usage-unknown-option", (*FT3, "--bogus"), "no such option"),
    ("usage-seed-text", (*FT3, "--seed", "abc"), "invalid value for '--seed'"),
    ("usage-unknown-command", ("forget",), "no such command"),
]


def _fill(arg, ctx) -> str:
    arg = str(arg)
    if not arg.startswith("{") or not arg.endswith("}") or arg.count("{") != 1:
        return arg.format(**{k: v for k, v in ctx.items() if isinstance(v, (str, Path))})
    key, _, name = arg[1:-1].partition(":")
    if key == "model":
        return str(ctx["models"][name])
    if key == "run":
        return str(damaged_run(ctx["root"], name))
    if key == "sweep":
        content = FT_METRICS[:40] if name == "metrics.json" else "method = \n"
        return str(sweep_dir(ctx["root"], name, content))
    return str(ctx[key])


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case,args,fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_and_writes_nothing(case, args, fragment, tmp_path, cli, capsys, digits_model,
                                                      bad_models):
    for name in ("floats.npy", "mask.npy", "2d.npy", "far.npy", "objects.npy", "floats.txt", "words.txt",
                 "huge.txt", "other.npz", "garbage.npz", "seeds.toml", "typo.toml"):
        index_file(tmp_path, name)
    ctx = {"root": tmp_path, "out": tmp_path / "out", "digits": digits_model, "models": bad_models}
    argv = [_fill(a, ctx) for a in args]
    before = _tree(tmp_path, bad_models["int32"].parent)
    capsys.readouterr()
    code = cli(*argv)
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "Warning" not in err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert _tree(tmp_path, bad_models["int32"].parent) == before, "something was written"
    assert not (tmp_path / "out").exists()
    assert not (bad_models["int32"].parent / "PWNED").exists()  # the pickled payload never ran
    print(lines[0].replace(str(tmp_path), "TMP"))  # `pytest -rP` lists every message, to read them


def test_the_table_holds_sixty_cases_and_every_record_damage():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


def test_a_run_folder_name_with_a_pipe_keeps_the_markdown_table_whole(tmp_path, cli, capsys):
    run = tmp_path / "a|b"
    shutil.copytree(FIXTURE_RUNS / "ft-digits-class3", run)
    capsys.readouterr()
    assert cli("compare", run, FIXTURE_RUNS / "coun-digits-class3") == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line for line in table if line.startswith("| ")]  # the table, not the notes below it
    assert len(rows) == 3 and all(line.count(" | ") + 2 == table[0].count("|") for line in rows)
    assert "`a\\|b`" in table[2]
