"""A tiny sweep on digits end to end, its resume, and `coun-lab compare`."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from coun_tui.engine import UserError, devqueue
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.jobs import read_spec_dict
from coun_tui.engine.report import compare
from coun_tui.engine.rundir import read_status
from coun_tui.engine.sweep import Sweep, execute, write_tables


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
    # Meanwhile the +CL comparison sets ft+CL's one finished seed against ft's same seed only.
    sweep = Sweep(model=digits_model, methods=["ft"], forgets=[ForgetSpec(fraction=0.1)], seeds=[0, 1],
                  out=out, cl_too=True)
    ft0 = write_tables(dataclasses.replace(sweep, seeds=[0]))["random-10pct"]["ft"]["avg_gap"]
    half = write_tables(sweep)["random-10pct"]
    assert half["ft"]["n"] == 2 and half["ft+CL"]["n"] == 1
    assert f"| ft (seed 0) | {ft0:.2f} | {half['ft+CL']['avg_gap']:.2f} |" in (out / "table.md").read_text()
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
    assert "was made with other settings (hparams epochs: 1 there, 2 now)" in err
    assert "rerun with the same options" in err
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    # The comparison table of one seed's runs, from the CLI and the library, agree.
    seed0 = sorted((out / "random-10pct" / "seed-0").iterdir())
    assert cli("compare", *seed0, "--format", "csv") == 0
    assert capsys.readouterr().out == compare(seed0, "csv")


def test_cancelled_sweep_leaves_no_finished_table_rows_it_did_not_run(digits_model, tmp_path):
    sweep = Sweep(digits_model, ["ft"], [ForgetSpec(classes=[3])], [0], tmp_path / "s",
                  hparams={"*": {"epochs": 1}, "retrain": {"epochs": 1, "batch_size": 16}})
    token = StopAfterRuns()
    for run_dir, event in execute(sweep, token):
        if event.kind == "step" and run_dir.name == "retrain":
            token.flag = True
    assert not (tmp_path / "s" / "class-3" / "seed-0" / "retrain" / "metrics.json").exists()
    assert not (tmp_path / "s" / "table.json").exists()
    shutil.rmtree(tmp_path / "s")


def test_stopped_sweep_tables_hold_the_runs_it_finished(digits_model, tmp_path):
    sweep = Sweep(digits_model, ["ft"], [ForgetSpec(classes=[3])], [0], tmp_path / "s",
                  hparams={"*": {"epochs": 1, "batch_size": 16}, "retrain": {"epochs": 1}})
    token = StopAfterRuns()
    for run_dir, event in execute(sweep, token):
        if event.kind == "step" and run_dir.name == "ft":  # stopped once the Retrain finished
            token.flag = True
    tables = json.loads((tmp_path / "s" / "table.json").read_text())
    assert list(tables["class-3"]) == ["retrain"] and tables["class-3"]["retrain"]["n"] == 1
    assert "retrain (n=1)" in (tmp_path / "s" / "table.md").read_text()
    assert not (tmp_path / "s" / "class-3" / "seed-0" / "ft" / "metrics.json").exists()


def test_jobs_run_side_by_side_and_a_moved_sweep_resumes(digits_model, tmp_path, monkeypatch, capsys, cli):
    monkeypatch.setenv("COUN_LAB_QUEUES", str(tmp_path / "queues"))
    devqueue.set_limit("cpu", 2)
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "moved"
    args = ["sweep", "--model", digits_model, "--methods", "ft", "--cl-too", "--forget-class", "3",
            "--set", "epochs=1", "--set", "retrain.epochs=1", "--device", "cpu", "--jobs", "2"]
    assert cli(*args, "--out", first) == 0
    seed0 = first / "class-3" / "seed-0"
    times = {name: read_status(seed0 / name)[0] for name in ("retrain", "ft", "ft+cl")}
    assert times["retrain"]["ended"] <= min(times["ft"]["started"], times["ft+cl"]["started"])  # Retrain first
    assert times["ft"]["started"] < times["ft+cl"]["ended"] and times["ft+cl"]["started"] < times["ft"]["ended"]
    assert read_spec_dict(seed0 / "ft")["reference"] == "../retrain"  # relative: the folder can move

    moved.parent.mkdir()
    shutil.move(first, moved)
    redo = moved / "class-3" / "seed-0" / "ft"
    for name in ("metrics.json", "model.safetensors"):
        (redo / name).unlink()
    kept = {p: p.stat().st_mtime_ns for p in moved.rglob("metrics.json")}
    capsys.readouterr()
    assert cli(*args, "--out", moved) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert json.loads((redo / "metrics.json").read_text())["avg_gap"] is not None  # its Retrain found


def test_a_copy_of_a_committed_sweep_resumes_without_running_anything(tmp_path, monkeypatch, cli):
    """results/ holds sweeps whose references are relative to where they ran from: still accepted;
    the experiment file's picks come from the committed search."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    copy = tmp_path / "sweep-digits"
    def unfinished(folder, names):  # runs a sweep in this checkout may still be adding
        return [n for n in names if (Path(folder, n, "run.toml").is_file()
                                     and not Path(folder, n, "metrics.json").is_file())]

    shutil.copytree(repo / "results" / "sweep-digits", copy, ignore=unfinished)
    methods = "ft,neggrad+,l1-sparse,salun,not,coun"  # the searched ones, all finished
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("metrics.json")}
    logs = set(copy.rglob("events.jsonl"))  # committed runs keep none (gitignored)
    assert cli("sweep", "--spec", "experiments/digits.toml", "--methods", methods, "--out", copy) == 0
    assert len(before) >= 72 and all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert set(copy.rglob("events.jsonl")) == logs  # nothing ran
    committed = json.loads((repo / "results" / "sweep-digits" / "table.json").read_text())
    for forget, rows in json.loads((copy / "table.json").read_text()).items():
        assert len(rows) == 12  # Retrain, six methods, five +CL
        for name, row in rows.items():
            assert row["avg_gap"] == committed[forget][name]["avg_gap"], (forget, name)


def test_picks_of_the_committed_digits_search(tmp_path):
    """Each method's lowest Avg. Gap over the two forget sets, read from its run.toml."""
    from coun_tui.engine.sweep import Sweep, picks

    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "results" / "tuning" / "digits", tmp_path / "search")
    search = Sweep.from_file(repo / "experiments" / "digits-search.toml", out=tmp_path / "search")
    lrs = {method: hp["lr"] for method, hp in picks(search).items()}
    assert lrs == {"ft": 0.1, "neggrad+": 0.02, "l1-sparse": 0.1, "salun": 0.01, "not": 0.05, "coun": 0.1}


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


def test_grid_points_name_runs_by_axis_and_tie_values():
    from coun_tui.engine.sweep import grid_points

    grid = {"*": {"epochs": [1, 5]}, "coun": {"lambda": [0.3, 1.0]},
            "l1-sparse": {"epochs": [{"epochs": 2, "l1_epochs": 1}, {"epochs": 10, "l1_epochs": 4}]}}
    assert grid_points(grid, "ft") == [({"epochs": 1}, "-epochs1"), ({"epochs": 5}, "-epochs5")]
    assert [s for _, s in grid_points(grid, "coun")] == ["-epochs1-lambda0.3", "-epochs1-lambda1",
                                                         "-epochs5-lambda0.3", "-epochs5-lambda1"]
    assert grid_points(grid, "l1-sparse")[1] == ({"epochs": 10, "l1_epochs": 4}, "-epochs10")
    assert grid_points({}, "ft") == [({}, "")]


def experiment(path: Path, model: str, out: Path, epochs: list[int], reuse: list[Path] = ()) -> Path:
    path.write_text(f"""
model = "{model}"
out = "{out}"
methods = ["ft"]
forget = [{{fraction = 0.1}}]
seeds = [0]
reuse = {json.dumps([str(p) for p in reuse])}
[set.retrain]
epochs = 1
[set.ft]
batch_size = 256
[grid]
epochs = {epochs}
""")
    return path


def test_experiment_file_runs_a_grid_and_a_second_sweep_reuses_its_runs(digits_model, tmp_path, capsys, cli):
    first, second = tmp_path / "first", tmp_path / "second"
    spec = experiment(tmp_path / "a.toml", digits_model, first, [1, 2])
    assert cli("curve", spec) == 2  # nothing to plot yet: one line saying what to run
    assert capsys.readouterr().err.strip() == \
        f"error: no finished runs along 'epochs' in {first}; run `coun-lab sweep --spec {spec}` first"
    assert cli("sweep", "--spec", spec) == 0
    rows = json.loads((first / "table.json").read_text())["random-10pct"]
    assert set(rows) == {"retrain", "ft-epochs1", "ft-epochs2"}
    one, two = (json.loads((first / "random-10pct" / "seed-0" / f"ft-epochs{e}" / "metrics.json").read_text())
                for e in (1, 2))
    assert (one["hparams"]["epochs"], two["hparams"]["epochs"]) == (1, 2)
    assert two["pflops"] == pytest.approx(2 * one["pflops"])

    # The curve: Avg. Gap along the grid axis, drawn in the terminal, listed, and written as a PNG.
    capsys.readouterr()
    assert cli("curve", spec, "--axis", "epochs", "--png", tmp_path / "curve.png") == 0
    out = capsys.readouterr().out
    listed = f"1: {one['avg_gap']:.2f} ({one['pflops']:.3g} PF)  2: {two['avg_gap']:.2f} ({two['pflops']:.3g} PF)"
    assert any(line.split() and line.split()[0] == "ft" and line.endswith(listed) for line in out.splitlines()), out
    assert "Avg. Gap vs epochs" in out and "PFLOPs" in out
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli("curve", spec, "--axis", "lr") == 2  # an axis the grid lacks: said, not drawn

    # A finished search gives each method's best point, from that run's run.toml.
    from coun_tui.engine.sweep import Sweep, picks

    best = min((one, two), key=lambda m: m["avg_gap"])
    assert picks(Sweep.from_file(tmp_path / "a.toml")) == {"ft": {"batch_size": 256,
                                                                  "epochs": best["hparams"]["epochs"]}}
    with pytest.raises(UserError, match="has 3 of 4 runs finished; finish it first"):
        picks(Sweep.from_file(experiment(tmp_path / "c.toml", digits_model, first, [1, 2, 3])))

    # The same settings elsewhere are copied, not trained: the dry run says so, and the copies are
    # the same runs, measured against the second sweep's own (copied) Retrain.
    spec = experiment(tmp_path / "b.toml", digits_model, second, [2, 3], reuse=[first])
    capsys.readouterr()
    assert cli("sweep", "--spec", spec, "--epochs-not-an-option") == 2  # a usage error runs nothing
    assert cli("sweep", "--spec", spec, "--dry-run") == 0
    listed = capsys.readouterr().out
    assert f"retrain: reuse {first}" in listed and f"ft-epochs2: reuse {first}" in listed
    assert "ft-epochs3: to run" in listed and not second.exists()
    spec = experiment(tmp_path / "b.toml", digits_model, second, [2], reuse=[first])
    assert cli("sweep", "--spec", spec) == 0
    copied = second / "random-10pct" / "seed-0" / "ft-epochs2"
    again = json.loads((copied / "metrics.json").read_text())
    assert {k: again[k] for k in ("RA", "UA", "TA", "MIA", "avg_gap")} == \
        {k: two[k] for k in ("RA", "UA", "TA", "MIA", "avg_gap")}
    assert read_spec_dict(copied)["reference"] == "../retrain"  # its own sweep's Retrain, relative
