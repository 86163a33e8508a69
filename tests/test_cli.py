"""The headless commands, end to end on digits with the shipped model."""

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from coun_tui.engine.methods import all_methods


@pytest.mark.parametrize("method", list(all_methods()))
def test_every_method_runs_end_to_end(method, digits_model, tmp_path, cli):
    out = tmp_path / method
    extra = {"retrain": ["--epochs", 2], "ssd": []}.get(method, ["--epochs", 1])  # SSD trains no epochs
    assert cli("unlearn", "--model", digits_model, "--method", method, "--forget-class", "3",
               "--out", out, "--quiet", *extra) == 0
    for name in ("model.safetensors", "split.npz", "metrics.json", "events.jsonl", "run.toml"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == method and m["forget"]["classes"] == [3] and m["dataset"] == "digits"
    assert set(m) >= {"RA", "UA", "TA", "MIA", "pflops", "seconds", "gap", "avg_gap", "cl", "seed"}
    assert m["avg_gap"] is None and m["pflops"] > 0
    meta = safe_open(str(out / "model.safetensors"), "pt").metadata()
    assert json.loads(meta["method"]) == method and json.loads(meta["metrics"])["RA"] == m["RA"]
    with np.load(out / "split.npz") as z:
        assert len(z["forget"]) == m["forget"]["n_forget"] and z["retain"].dtype.kind == "i"


def test_metrics_match_an_independent_evaluation_and_gaps(digits_model, tmp_path, capsys, cli):
    ref, run = tmp_path / "retrain", tmp_path / "coun"
    assert cli("unlearn", "--model", digits_model, "--method", "retrain", "--forget-fraction", "0.1",
               "--seed", "1", "--epochs", "2", "--out", ref, "-q") == 0
    assert cli("unlearn", "--model", digits_model, "--method", "coun", "--forget-fraction", "0.1",
               "--seed", "1", "--epochs", "1", "--reference", ref, "--out", run, "-q") == 0
    saved = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert cli("eval", "--model", run / "model.safetensors", "--forget-indices", run / "split.npz",
               "--seed", "1", "--reference", ref, "--json") == 0
    fresh = json.loads(capsys.readouterr().out)
    for key in ("RA", "UA", "TA", "MIA", "avg_gap"):
        assert fresh[key] == pytest.approx(saved[key], abs=1e-9), key
    r = json.loads((ref / "metrics.json").read_text())
    assert saved["gap"]["TA"] == pytest.approx(abs(saved["TA"] - r["TA"]))
    assert saved["avg_gap"] == pytest.approx(np.mean([saved["gap"][k] for k in ("RA", "UA", "TA", "MIA")]))
    # A reference of another split is refused with one line.
    assert cli("unlearn", "--model", digits_model, "--method", "ft", "--forget-fraction", "0.1",
               "--seed", "2", "--epochs", "1", "--reference", ref, "--out", tmp_path / "x", "-q") == 2
    assert "another split" in capsys.readouterr().err


def test_train_is_deterministic_and_eval_prints_metrics(tmp_path, capsys, cli):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for path in (a, b):
        assert cli("train", "--dataset", "digits", "--subset", "400", "--epochs", "2", "--out", path) == 0
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)
    meta = {k: json.loads(v) for k, v in safe_open(str(a), "pt").metadata().items()}
    assert meta["subset"] == 400 and meta["dataset"] == "digits" and meta["recipe"]["epochs"] == 2
    assert len(meta["mean"]) == 1 and len(meta["std"]) == 1
    capsys.readouterr()
    assert cli("eval", "--model", a, "--forget-class", "3") == 0
    out = capsys.readouterr().out
    for key in ("RA", "UA", "TA", "MIA"):
        assert key in out


def test_bad_input_is_one_line(tmp_path, capsys, cli):
    assert cli("unlearn", "--model", tmp_path / "nope.safetensors", "--method", "ft", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.safetensors" in err and "\n" not in err
    assert cli("train", "--dataset", "cifar10", "--data-root", tmp_path, "--out", tmp_path / "m.safetensors") == 2
    err = capsys.readouterr().err.strip()
    assert "cifar-10-batches-py" in err and "Traceback" not in err
    assert cli("unlearn", "--model", "x.safetensors") == 2  # a usage error: click's message, no traceback
    err = capsys.readouterr().err
    assert "--method" in err and "Traceback" not in err


def test_bench_prints_throughput_rows(capsys, cli):
    assert cli("bench", "--image-size", "8", "--batch-size", "16", "--steps", "1") == 0
    out = capsys.readouterr().out
    assert "train step, fp32" in out and "img/s" in out and "speed-up" in out
    assert "inference + channels_last, fp32" in out


def test_methods_lists_every_method_with_defaults(capsys, cli):
    assert cli("methods") == 0
    out = capsys.readouterr().out
    for name in all_methods():
        assert name in out
    assert "mask_ratio=0.5" in out and "alpha=0.99" in out


def test_a_checkpoint_carries_the_forget_indices_it_was_made_with(digits_model, tmp_path, capsys, cli):
    idx = tmp_path / "idx.npy"
    np.save(idx, np.array([3, 10, 40, 41, 500]))
    run = tmp_path / "ga"
    assert cli("unlearn", "--model", digits_model, "--method", "ga", "--forget-indices", idx, "--epochs", "1",
               "--out", run, "-q") == 0
    meta = safe_open(str(run / "model.safetensors"), "pt").metadata()
    assert json.loads(meta["forget"])["indices"] == [3, 10, 40, 41, 500]
    capsys.readouterr()
    assert cli("eval", "--model", run / "model.safetensors", "--json") == 0
    first = json.loads(capsys.readouterr().out)
    np.save(idx, np.array([7]))  # the file changes, then goes: the checkpoint's own set still counts
    assert cli("eval", "--model", run / "model.safetensors", "--json") == 0
    assert json.loads(capsys.readouterr().out) == first
    idx.unlink()
    assert cli("eval", "--model", run / "model.safetensors", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again == first and again["n_forget"] == 5
