"""A tiny sweep on digits end to end, its resume, and `coun-lab compare`."""

import json
import shutil
from pathlib import Path

import pytest

from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.report import compare
from coun_tui.engine.sweep import Sweep, execute


class StopAfterRuns:
    """Cancel once n runs have started (a kill mid-sweep, as seen by the next invocation)."""

    def __init__(self):
        self.flag = False

    def is_set(self):
        return self.flag


def test_tiny_sweep_resumes_to_the_same_table(digits_model, tmp_path, capsys, cli):
    out = tmp_path / "sweep"
    args = ["sweep", "--model", digits_model, "--methods", "ft", "--cl-too", "--forget-fraction", "0.1",
            "--seeds", "0,1", "--set", "epochs=1", "--set", "retrain.epochs=2", "--out", out]
    assert cli(*args) == 0
    table = (out / "table.md").read_text()
    data = json.loads((out / "table.json").read_text())
    rows = data["random-10pct"]
    assert set(rows) == {"retrain", "ft", "ft+CL"} and rows["ft+CL"]["n"] == 2
    assert rows["retrain"]["avg_gap"] == 0 and rows["ft+CL"]["avg_gap"] > 0
    assert "Avg. Gap +CL" in table

    # Resume: a finished run is never redone, a half-finished one is redone cleanly.
    victim = out / "random-10pct" / "seed-1" / "ft+cl"
    (victim / "metrics.json").unlink()
    (victim / "model.safetensors").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    assert cli(*args) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert (victim / "metrics.json").is_file()
    again = json.loads((out / "table.json").read_text())
    for method, row in data["random-10pct"].items():  # same seeds, same numbers (but wall time)
        fresh = again["random-10pct"][method]
        assert {k: v for k, v in row.items() if "seconds" not in k} == \
            {k: v for k, v in fresh.items() if "seconds" not in k}
    capsys.readouterr()

    # Other settings into the same --out are refused before anything runs or is deleted.
    assert cli(*[a if a != "epochs=1" else "epochs=2" for a in args]) == 2
    err = capsys.readouterr().err
    assert "was made with other settings (hparams:" in err and "rerun with the same options" in err
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    # The comparison table of one seed's runs, from the CLI and the library, agree.
    seed0 = sorted((out / "random-10pct" / "seed-0").iterdir())
    assert cli("compare", *seed0, "--format", "csv") == 0
    assert capsys.readouterr().out == compare(seed0, "csv")


def test_cancelled_sweep_leaves_no_finished_table_rows_it_did_not_run(digits_model, tmp_path):
    sweep = Sweep(digits_model, ["ft"], [ForgetSpec(classes=[3])], [0], tmp_path / "s",
                  hparams={"*": {"epochs": 1}, "retrain": {"epochs": 1}})
    token = StopAfterRuns()
    for run_dir, event in execute(sweep, token):
        if event.kind == "step" and run_dir.name == "retrain":
            token.flag = True
    assert not (tmp_path / "s" / "class-3" / "seed-0" / "retrain" / "metrics.json").exists()
    assert not (tmp_path / "s" / "table.json").exists()
    shutil.rmtree(tmp_path / "s")


def test_stopped_sweep_tables_hold_the_runs_it_finished(digits_model, tmp_path):
    sweep = Sweep(digits_model, ["ft"], [ForgetSpec(classes=[3])], [0], tmp_path / "s",
                  hparams={"*": {"epochs": 1}, "retrain": {"epochs": 1}})
    token = StopAfterRuns()
    for run_dir, event in execute(sweep, token):
        if event.kind == "step" and run_dir.name == "ft":  # stopped once the Retrain finished
            token.flag = True
    tables = json.loads((tmp_path / "s" / "table.json").read_text())
    assert list(tables["class-3"]) == ["retrain"] and tables["class-3"]["retrain"]["n"] == 1
    assert "retrain (n=1)" in (tmp_path / "s" / "table.md").read_text()
    assert not (tmp_path / "s" / "class-3" / "seed-0" / "ft" / "metrics.json").exists()


def test_set_for_a_method_outside_the_sweep_is_refused(digits_model, tmp_path, capsys, cli):
    out = tmp_path / "sweep"
    assert cli("sweep", "--model", digits_model, "--methods", "ft,l1-sparse", "--forget-class", "3",
               "--set", "l1_sparse.gamma=1e-3", "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'l1_sparse' is not one of this sweep's methods" in err
    assert not out.exists()


def test_compare_with_reference_fills_gaps_a_run_did_not_record(tmp_path, capsys, cli):
    fixtures = Path(__file__).parent / "fixtures" / "runs"
    run = tmp_path / "coun"
    shutil.copytree(fixtures / "coun-digits-class3", run)
    recorded = json.loads((run / "metrics.json").read_text())
    stripped = {k: v for k, v in recorded.items() if k not in ("gap", "avg_gap")}
    (run / "metrics.json").write_text(json.dumps(stripped))

    assert cli("compare", run, "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)[0]["avg_gap"] is None
    assert cli("compare", run, "--format", "json", "--reference", fixtures / "retrain-digits-class3") == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["avg_gap"] == pytest.approx(recorded["avg_gap"])
    assert row["gap_UA"] == pytest.approx(recorded["gap"]["UA"])

    assert cli("compare", run, "--reference", fixtures / "ft-digits-class3") == 2
    assert "the reference must be a Retrain run" in capsys.readouterr().err
