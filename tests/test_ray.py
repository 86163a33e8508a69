"""Runs on Ray: a local Ray on 127.0.0.1 with 2 CPUs (started once for this module) runs small
digits sweeps whose tables must equal the local backend's, survives a killed worker, works
without shared storage, and cancels its task from `coun-lab runs cancel`; the app follows and
cancels Ray tasks too. Without Ray, those tests skip; the one-line message for a missing Ray
and the option checks are tested anyway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coun_tui.engine import backends, jobs
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.rundir import read_holder, read_state, read_status
from coun_tui.engine.runner import RunSpec
from coun_tui.engine.sweep import Sweep, execute

RAY_MISSING = "Ray is not installed (pip install -e '.[ray]')"
# A Retrain (6 steps of 256 retain images) and GA (3 steps of 64 forget images) on forgetting
# class 3: the smallest sweep with a real dependency, one epoch of real training each.
SETTINGS = {"*": {"epochs": 1, "batch_size": 64}, "retrain": {"epochs": 1, "batch_size": 256}}
RUN_FILES = {"run.toml", "split.npz", "events.jsonl", "status.json", "metrics.json", "model.safetensors",
             "embedding.npy"}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def tiny_sweep(model: str, out: Path) -> Sweep:
    return Sweep(model, ["ga"], [ForgetSpec(classes=[3])], [0], out, hparams=SETTINGS)


def without_time(table: dict) -> dict:
    return {tag: {row: {k: v for k, v in cols.items() if "seconds" not in k} for row, cols in rows.items()}
            for tag, rows in table.items()}


def table_of(out: Path) -> dict:
    return without_time(json.loads((out / "table.json").read_text()))


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def local_table(digits_model, tmp_path_factory):
    """The tiny sweep through the local backend, with the thread count a Ray run gets (1 CPU)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    for _ in execute(tiny_sweep(digits_model, out), backend=backends.make("local", cpus_per_run=1)):
        pass
    return table_of(out)


def test_a_ray_sweep_survives_a_killed_worker_and_equals_the_local_table(local_table, ray_cluster, digits_model,
                                                                         tmp_path):
    backend = backends.make("ray", cpus_per_run=1)
    out = tmp_path / "sweep"
    retrain, ga = out / "class-3" / "seed-0" / "retrain", out / "class-3" / "seed-0" / "ga"
    killed, ga_started_at = None, None
    for run_dir, event in execute(tiny_sweep(digits_model, out), backend=backend):
        if run_dir == retrain and event.kind == "step" and event.step >= 2 and killed is None:
            assert read_state(ga).state == "queued"  # a Ray task waiting on its Retrain's result
            killed = read_status(run_dir)[0]["pid"]  # the Ray worker running the task
            os.kill(killed, signal.SIGKILL)
        if run_dir == ga and ga_started_at is None:
            ga_started_at = time.time()
    assert killed is not None
    status = read_status(retrain)[0]
    assert status["attempt"] == 2 and status["pid"] != killed and status["backend"] == "ray"
    assert ga_started_at >= status["ended"] - 1  # the method ran once its Retrain had finished
    for run in (retrain, ga):
        assert read_state(run).state == "done" and read_holder(run) is None
        kinds = [e["kind"] for e in events_of(run)]  # retried from scratch: one run's events, whole
        assert kinds.count("started") == 1 and kinds[-1] == "done"
    assert table_of(out) == local_table  # same seeds, device and threads: the same numbers
    assert set(table_of(out)["class-3"]) == {"retrain", "ga"}


def test_without_shared_storage_events_come_live_and_the_driver_writes_the_runs(local_table, ray_cluster,
                                                                               digits_model, tmp_path):
    backend = backends.make("ray", cpus_per_run=1, storage="driver")
    out = tmp_path / "sweep"
    before = set(Path(tempfile.gettempdir()).glob("coun-lab-ray-*"))
    live_steps: dict[str, int] = {}
    for run_dir, event in execute(tiny_sweep(digits_model, out), backend=backend):
        if event.kind == "step" and read_state(run_dir).live and not (run_dir / "metrics.json").exists():
            live_steps[run_dir.name] = live_steps.get(run_dir.name, 0) + 1  # relayed while the task trains
    assert set(live_steps) == {"retrain", "ga"}
    assert table_of(out) == local_table  # agreement and CKA too: the Retrain's reference.npz came along
    for run in (out / "class-3" / "seed-0").iterdir():
        assert {p.name for p in run.iterdir()} >= RUN_FILES, run
        assert read_state(run).state == "done" and read_status(run)[0]["storage"] == "driver"
        assert "coun-lab-ray-" not in (run / "run.toml").read_text()  # the task's temporary paths stay there
    assert (out / "class-3" / "seed-0" / "retrain" / "reference.npz").is_file()
    assert set(Path(tempfile.gettempdir()).glob("coun-lab-ray-*")) <= before  # the tasks' folders are gone


def test_unlearn_on_ray_follows_its_task_to_the_table(ray_cluster, digits_model, tmp_path, cli, capsys):
    run = tmp_path / "ga"
    assert cli("unlearn", "--model", digits_model, "--method", "ga", "--forget-class", "3", "--epochs", "1",
               "--batch-size", "64", "--out", run, "--backend", "ray", "--storage", "driver", "--cpus-per-run", "1",
               "-q") == 0
    out = capsys.readouterr().out
    assert f"saved run in {run}" in out and "UA" in out
    status = read_status(run)[0]
    assert (status["backend"], status["storage"], status["threads"]) == ("ray", "driver", 1)
    assert read_state(run).state == "done" and read_holder(run) is None


def test_a_task_whose_worker_keeps_dying_is_retried_a_bounded_number_of_times(ray_cluster, digits_model,
                                                                             tmp_path):
    from coun_tui.engine.rayjobs import RayBackend

    # Driver storage: the driver clears the run directory, under the run's lock, when a retry starts.
    backend = RayBackend(cpus_per_run=1, storage="driver", max_retries=1)
    spec = RunSpec(method="ft", model=digits_model, forget=ForgetSpec(classes=[3]),
                   hparams={"epochs": 1, "batch_size": 16})
    run = backend.launch(spec, tmp_path / "run")
    killed = []
    for attempt in (1, 2):
        wait_for(lambda n=attempt: read_status(run)[0].get("attempt") == n and (run / "events.jsonl").is_file()
                 and sum(e["kind"] == "step" for e in events_of(run)) >= 2, 300, f"attempt {attempt}'s steps")
        killed.append(read_status(run)[0]["pid"])
        os.kill(killed[-1], signal.SIGKILL)
    state = jobs.wait(run, 120)
    assert state.state == "died" and "its Ray worker died" in state.detail, state
    assert killed[0] != killed[1] and read_holder(run) is None and not backend.live()
    assert not (run / "metrics.json").exists()
    # The retry removed the killed attempt's folder; the last one's stays (its worker was killed).
    left = list(Path(tempfile.gettempdir()).glob(f"coun-lab-ray-{read_status(run)[0]['launch']}*"))
    assert len(left) == 1
    shutil.rmtree(left[0])


def test_runs_cancel_cancels_the_ray_task(ray_cluster, digits_model, tmp_path, cli, capsys):
    # Driver storage: the task never sees the cancel file, so only ray.cancel can stop it.
    backend = backends.make("ray", cpus_per_run=1, storage="driver")
    spec = RunSpec(method="ft", model=digits_model, forget=ForgetSpec(classes=[3]),
                   hparams={"epochs": 1, "batch_size": 16})
    run = backend.launch(spec, tmp_path / "run")
    wait_for(lambda: read_state(run).step >= 2, 300, "training steps")
    capsys.readouterr()
    assert cli("runs", "cancel", run) == 0
    assert capsys.readouterr().out.startswith("cancelled · at step")
    state = read_state(run)
    assert state.state == "cancelled" and state.step < 81 and events_of(run)[-1]["kind"] == "cancelled"
    assert not (run / "model.safetensors").exists() and not backend.live()


def test_a_gpu_share_on_a_cluster_without_gpus_is_said(ray_cluster):
    line = backends.make("ray", gpus_per_run=0.25).describe()
    assert "0 GPUs" in line and "no GPU in the cluster yet" in line and "\n" not in line, line
    assert "no GPU" not in backends.make("ray", cpus_per_run=1).describe()


def test_backend_options_that_do_not_fit_are_one_line(digits_model, tmp_path, capsys, cli):
    base = ["sweep", "--model", digits_model, "--methods", "ft", "--forget-class", "3", "--out", tmp_path / "s"]
    cases = {("--gpus-per-run", "0.25"): "--gpus-per-run needs --backend ray",
             ("--backend", "slurm"): "unknown backend 'slurm'; use local or ray",
             ("--cpus-per-run", "0"): "--cpus-per-run 0: give a positive number"}
    for extra, why in cases.items():
        assert cli(*base, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and err.startswith("error:") and "\n" not in err, err
    assert not (tmp_path / "s").exists()


def test_backend_ray_without_ray_installed_says_how_in_one_line(digits_model, tmp_path):
    code = ("import json, sys\n"
            "sys.modules['ray'] = None  # as if Ray were not installed: `import ray` fails\n"
            "from coun_tui.cli import main\n"
            "codes = []\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        main(args)\n"
            "    except SystemExit as exc:\n"
            "        codes.append(exc.code)\n"
            "print(json.dumps(codes))\n")
    model = ["--model", digits_model]
    commands = [["sweep", *model, "--methods", "ft", "--forget-class", "3", "--out", str(tmp_path / "s")],
                ["unlearn", *model, "--method", "ft", "--forget-class", "3", "--out", str(tmp_path / "u")],
                ["tui"]]
    out = subprocess.run([sys.executable, "-c", code, json.dumps([[*c, "--backend", "ray"] for c in commands])],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COUN_LAB_RAY_ADDRESS": ""})
    assert json.loads(out.stdout) == [2, 2, 2], out.stderr
    line = "error: --backend ray needs Ray, which is not installed here: pip install -e '.[ray]'"
    assert out.stderr.splitlines() == [line] * 3, out.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "u").exists()


async def test_the_app_on_ray_follows_its_tasks_live_and_cancels_them(ray_cluster, digits_model, tmp_path,
                                                                      monkeypatch):
    """`coun-lab tui --backend ray` without shared storage: the app sees steps relayed from a task
    while it trains, `c` cancels the task, and a finished task's run reads like a local one."""
    from test_tui_app import finished, forget_classes, launch, ready, text_of, wait_until
    from textual.widgets import Select

    from coun_tui.tui.app import CounLab
    from coun_tui.tui.widgets.run_pane import MetricsTable

    backend = backends.make("ray", cpus_per_run=1, storage="driver")
    monkeypatch.setattr(backends, "_current", backend)
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3)
        app.setup_panel.set_hparams(epochs=1, batch_size=16)  # FT, 81 steps: time to watch and cancel
        await launch(pilot)
        slow = app.active_pane
        await wait_until(pilot, lambda: slow.runlog.step >= 2, 300, "steps relayed from the Ray task")
        assert not (slow.runlog.run_dir / "metrics.json").exists() and backend.live() == [slow.runlog.run_dir]
        assert "still going on Ray" in app.leave_note()
        await pilot.press("c")
        await finished(pilot, slow, 120)
        assert slow.runlog.status == "cancelled" and slow.runlog.cancelled_at < slow.runlog.total_steps
        assert read_state(slow.runlog.run_dir).state == "cancelled" and not backend.live()

        app.query_one("#method", Select).value = "ga"
        await pilot.pause()
        app.setup_panel.set_hparams(epochs=1, batch_size=64)
        await launch(pilot)
        done = app.active_pane
        await finished(pilot, done, 300)
        assert done.runlog.status == "done", done.runlog.reason
        assert done.query_one(MetricsTable).row_count == 3  # epochs 0, 1 and final
        assert "UA" in text_of(done.query_one(MetricsTable))
        status = read_status(done.runlog.run_dir)[0]
        assert (status["backend"], status["storage"]) == ("ray", "driver")
        assert {p.name for p in done.runlog.run_dir.iterdir()} >= RUN_FILES
