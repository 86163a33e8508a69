"""Trackers: a digits job started with `--log` and left alone (--detach) writes TensorBoard and MLflow
logs, read back with each library's own reader; a missing or failing tracker is one warning line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coun_tui.cli import main
from coun_tui.engine import UserError, jobs
from coun_tui.engine.trackers import mlflow_uri, parse_target, run_name

ROOT = Path(__file__).resolve().parents[1]


def unlearn_args(model: str, out: Path, *logs: str) -> list[str]:
    return ["unlearn", "--model", model, "--method", "ft", "--forget-class", "3", "--epochs", "1",
            "--device", "cpu", "--out", str(out), *[a for log in logs for a in ("--log", log)]]


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, digits_model):
    """One detached job (no client follows it) logging to TensorBoard, to MLflow's SQLite store, and
    to a TensorBoard folder that cannot be made (a file is in the way)."""
    where = tmp_path_factory.mktemp("trackers")
    (where / "in-the-way").write_text("a file, not a folder\n")
    try:
        main(unlearn_args(digits_model, where / "run", f"tensorboard:{where / 'tb'}",
                          f"mlflow:{where / 'mlflow.db'}", f"tensorboard:{where / 'in-the-way'}") + ["--detach"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    state = jobs.wait(where / "run", timeout=600)
    assert state.state == "done", state
    events = events_of(where / "run")
    total = next(e for e in events if e["kind"] == "started")
    metrics = json.loads((where / "run" / "metrics.json").read_text())
    return where, total["epochs"] * total["steps_per_epoch"], total["epochs"], metrics


def test_tensorboard_has_every_step_every_epoch_and_the_final_metrics(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    where, steps, epochs, metrics = logged
    reader = EventAccumulator(str(where / "tb" / "run"))
    reader.Reload()
    scalars = reader.Tags()["scalars"]
    assert [e.step for e in reader.Scalars("loss/total")] == list(range(1, steps + 1))
    assert [e.step for e in reader.Scalars("loss/ce")] == list(range(1, steps + 1))
    assert [e.step for e in reader.Scalars("lr")] == list(range(1, steps + 1))
    for key in ("RA", "UA", "TA", "MIA"):
        assert [e.step for e in reader.Scalars(f"epoch/{key}")] == list(range(epochs + 1))
        assert reader.Scalars(f"final/{key}")[0].value == pytest.approx(metrics[key], rel=1e-6)
    assert "final/pflops" in scalars and "final/seconds" in scalars
    assert "_hparams_/experiment" in reader.PluginTagToContent("hparams")  # the HParams dashboard


def test_mlflow_has_params_metrics_and_the_checkpoint(logged):
    from mlflow.tracking import MlflowClient

    where, steps, epochs, metrics = logged
    client = MlflowClient(tracking_uri=f"sqlite:///{where / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("coun-lab")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["method"] == "ft" and params["forget"] == "class 3" and params["epochs"] == "1"
    assert params["dataset"] == "digits" and params["n_forget"] == str(metrics["forget"]["n_forget"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")] == list(range(1, steps + 1))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/UA")] == list(range(epochs + 1))
    for key in ("RA", "UA", "TA", "MIA"):
        assert run.data.metrics[f"final/{key}"] == pytest.approx(metrics[key], rel=1e-6)
    artifacts = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id)}
    assert artifacts["model.safetensors"] == (where / "run" / "model.safetensors").stat().st_size
    assert "metrics.json" in artifacts
    # kept beside the store, not in the working directory of the process that trained
    assert run.info.artifact_uri.startswith((where / "mlartifacts").as_uri())
    assert (Path(run.info.artifact_uri.removeprefix("file://")) / "model.safetensors").is_file()
    assert not (Path.cwd() / "mlruns").exists()


def test_a_tracker_that_cannot_start_is_one_warning_in_the_jobs_log(logged):
    where = logged[0]
    warnings = [line for line in (where / "run" / "worker.log").read_text().splitlines()
                if line.startswith("warning:")]
    assert len(warnings) == 1 and "tensorboard logging is off" in warnings[0], warnings
    assert not (where / "run" / "tensorboard").exists()


def test_missing_libraries_are_one_warning_line_each_and_the_run_finishes(digits_model, tmp_path):
    """MLflow missing where the command runs (refused there), TensorBoard broken where the job runs
    (a package on PYTHONPATH whose import fails, so only the worker finds out)."""
    shim = tmp_path / "shim" / "tensorboard"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('simulated: tensorboard is not installed')\n")
    code = ("import sys; sys.modules['mlflow'] = None\n"
            "from coun_tui.cli import main\n"
            f"main({unlearn_args(digits_model, tmp_path / 'run', 'tensorboard', 'mlflow') + ['-q']!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{shim.parent}", "MLFLOW_TRACKING_URI": "",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warned == ["warning: mlflow is not installed (pip install 'coun-lab[mlflow]'): this run is not "
                      "logged to mlflow"]
    worker = [line for line in (tmp_path / "run" / "worker.log").read_text().splitlines()
              if line.startswith("warning:")]
    assert len(worker) == 1 and "tensorboard is not installed" in worker[0], worker
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "mlflow.db").exists()
    assert "TA" in done.stdout  # the verdict's table


def test_targets_are_kept_absolute_and_named_by_their_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert parse_target("tensorboard") == "tensorboard"
    assert parse_target("TensorBoard:tb") == f"tensorboard:{tmp_path / 'tb'}"
    assert parse_target("mlflow") == f"mlflow:sqlite:///{tmp_path / 'mlflow.db'}"
    assert parse_target("mlflow:http://host:5000") == "mlflow:http://host:5000"
    assert mlflow_uri("runs/mlruns") == (tmp_path / "runs" / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert parse_target("mlflow") == "mlflow:sqlite:///elsewhere.db"
    with pytest.raises(UserError, match="unknown tracker 'wandb'"):
        parse_target("wandb:x")
    assert run_name(tmp_path / "sweep" / "class-3" / "seed-0" / "coun") == "class-3/seed-0/coun"
    assert run_name(tmp_path / "runs" / "coun-3") == "coun-3"


def test_a_sweep_gives_its_trackers_to_every_run(digits_model, tmp_path):
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.sweep import Sweep

    plan = Sweep(digits_model, ["coun", "ft"], [ForgetSpec(classes=[3])], [0], tmp_path, log=["tensorboard"])
    assert [spec.log for _, spec in plan.runs()] == [["tensorboard"]] * 3


def test_a_runs_tensorboard_folder_belongs_to_it_and_a_retry_starts_it_afresh(tmp_path):
    from coun_tui.engine.rundir import check_out_dir, clear_for_writing

    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"an earlier attempt")
    (run / "run.toml").write_text('method = "ft"\n')
    (run / "labels.json").write_text("{}")
    assert check_out_dir(run) == run  # an unfinished run with its logs may be written again
    clear_for_writing(run)
    assert sorted(p.name for p in run.iterdir()) == ["labels.json"]


async def test_the_app_logs_every_run_it_starts_to_its_trackers(tmp_path, digits_model):
    """`coun-lab tui --log tensorboard`: each run the app starts records the tracker and writes its logs."""
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.runner import RunSpec
    from coun_tui.tui.app import CounLab

    app = CounLab(model=digits_model, runs_dir=tmp_path, log=["tensorboard"])
    async with app.run_test(size=(120, 40)) as pilot:
        spec = RunSpec(method="ga", model=digits_model, forget=ForgetSpec(classes=[3]), device="cpu",
                       hparams={"epochs": 1, "batch_size": 128})  # two steps
        pane = app.start_run(spec)
        run_dir = pane.runlog.run_dir
        assert 'log = [\n    "tensorboard",\n]' in (run_dir / "run.toml").read_text()
        assert jobs.wait(run_dir, timeout=300).state == "done"
        await pilot.pause(0.5)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
