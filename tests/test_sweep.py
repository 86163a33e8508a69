"""A tiny sweep on digits end to end, its resume, and `coun-lab compare`."""

import json
import shutil

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
    shutil.rmtree(tmp_path / "s")
