"""Runs are jobs: real worker processes on the shipped digits model (short runs, real files)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coun_tui.engine import UserError, devqueue, jobs
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.rundir import read_state, read_status
from coun_tui.engine.runner import RunSpec

SLOW = {"epochs": 1, "batch_size": 16}  # 81 steps of FT on class 3's retain set: time to act mid-run
QUICK = {"epochs": 1, "batch_size": 128}  # GA on the forget set: 2 steps


def spec(model, method="ft", **hparams) -> RunSpec:
    # The runs acted on mid-run get a small live probe: its evaluation before the first step is time
    # these tests only wait out. QUICK runs keep the full one: a test acts while one still runs.
    return RunSpec(method=method, model=model, forget=ForgetSpec(classes=[3]), hparams=hparams or SLOW,
                   device="cpu", probe_size=RunSpec.probe_size if hparams else 64)


def wait_for(condition, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)
    return value


def steps(run_dir: Path) -> int:
    return read_state(run_dir).step


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_sigkill_shows_died_then_the_directory_is_reused_cleanly(digits_model, tmp_path, capsys, cli):
    run = jobs.launch(spec(digits_model), tmp_path / "run", "cpu")
    wait_for(lambda: steps(run) >= 2, 180, "training steps")
    os.kill(read_status(run)[0]["pid"], signal.SIGKILL)
    state = jobs.wait(run, 30)
    assert state.state == "died", state
    assert "killed by SIGKILL" in state.detail and f"at step {state.step}" in state.detail and state.step >= 2
    assert not (run / "metrics.json").exists()
    capsys.readouterr()
    assert cli("runs", tmp_path) == 0
    listed = capsys.readouterr().out
    assert "died" in listed and "killed by SIGKILL" in listed and "class 3" in listed and f"{state.step}/81" in listed

    # A kill during the model write leaves atomic_write's temporary file: the next writer cleans it.
    stale = run / ".model.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"\0" * 1024)
    jobs.launch(spec(digits_model, "ga", **QUICK), run, "cpu")
    assert jobs.wait(run, 300).state == "done"
    assert not stale.exists() and not list(run.glob(".*.tmp"))
    assert [e["kind"] for e in events_of(run)][-1] == "done"


def test_a_second_writer_is_refused_and_the_first_run_is_whole(digits_model, tmp_path, capsys, cli):
    run = jobs.launch(spec(digits_model, "ga", **QUICK), tmp_path / "run", "cpu")
    with pytest.raises(UserError, match=r"is in use by pid \d+ on "):
        jobs.launch(spec(digits_model, "ft"), run, "cpu")
    assert cli("unlearn", "--model", digits_model, "--method", "ft", "--forget-class", "3", "--out", run,
               "--detach") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "in use by pid" in err and "\n" not in err
    assert jobs.wait(run, 300).state == "done"
    kinds = [e["kind"] for e in events_of(run)]  # every line whole, one run's events only
    assert kinds[0] == "started" and kinds[-1] == "done" and kinds.count("started") == 1
    assert json.loads((run / "metrics.json").read_text())["method"] == "ga"
    assert "ga" in (run / "run.toml").read_text()
    capsys.readouterr()
    assert cli("runs", "watch", run) == 0 and capsys.readouterr().out.startswith("done")
    assert cli("runs", "cancel", run) == 2 and "nothing to cancel" in capsys.readouterr().err


def test_bad_out_is_refused_before_anything_is_written(digits_model, tmp_path, capsys, cli):
    models = tmp_path / "models"
    models.mkdir()
    source = models / "digits.safetensors"
    source.write_bytes(Path(digits_model).read_bytes())
    before = source.read_bytes()
    args = ["unlearn", "--model", source, "--method", "ft", "--forget-class", "3", "--detach", "--out"]
    cases = {models: "holds the source checkpoint", "": "--out is empty", source: "is a file"}
    other = tmp_path / "notes"
    other.mkdir()
    (other / "paper.pdf").write_text("x")
    cases[other] = "holds files that are not a run's (paper.pdf)"
    for out, why in cases.items():
        assert cli(*args, out) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "\n" not in err, err
    assert source.read_bytes() == before
    assert sorted(p.name for p in models.iterdir()) == ["digits.safetensors"]
    assert [p.name for p in other.iterdir()] == ["paper.pdf"]
    # `coun-lab train` never replaces a checkpoint without --force.
    assert cli("train", "--dataset", "digits", "--out", source, "--epochs", "1") == 2
    assert "--force" in capsys.readouterr().err and source.read_bytes() == before


def test_cancel_takes_effect_within_one_step(digits_model, tmp_path):
    run = jobs.launch(spec(digits_model), tmp_path / "run", "cpu")
    wait_for(lambda: steps(run) >= 3, 180, "training steps")
    assert jobs.cancel(run)
    seen = steps(run)  # read after the request: the worker can finish at most the step in flight
    state = jobs.wait(run, 60)
    assert state.state == "cancelled" and state.step <= seen + 1, (state, seen)
    assert events_of(run)[-1] == {"step": state.step, "kind": "cancelled"}
    assert read_status(run)[0]["state"] == "cancelled" and not (run / "model.safetensors").exists()
    assert not jobs.cancel(run)  # nothing left to cancel


def test_ctrl_c_of_a_followed_unlearn_cancels_its_job(digits_model, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "coun_tui", "unlearn", "--model", digits_model, "--method", "ft",
           "--forget-class", "3", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(run)]
    # As from a terminal: a shell's background job (CI run with `&`) starts with SIGINT ignored,
    # and Python then never turns it into KeyboardInterrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: (run / "events.jsonl").exists() and steps(run) >= 2, 180, "training steps")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "cancelled · at step" in err and str(run) in err and "Traceback" not in err
    state = read_state(run)
    assert state.state == "cancelled" and events_of(run)[-1]["kind"] == "cancelled"


def test_a_worker_that_does_not_stop_is_killed_and_marked_cancelled(digits_model, tmp_path):
    run = jobs.launch(spec(digits_model), tmp_path / "run", "cpu")
    wait_for(lambda: steps(run) >= 1, 180, "training steps")
    trainer = read_status(run)[0]["pid"]
    os.kill(trainer, signal.SIGSTOP)  # a hung worker: it never reaches its next cancel check
    try:
        jobs.cancel(run)
        state = jobs.wait(run, 60)
    finally:
        with pytest.raises(ProcessLookupError):
            os.kill(trainer, signal.SIGCONT)
    assert state.state == "cancelled" and "stopped by force" in state.detail


def test_device_queue_keeps_launch_order_and_honours_its_limit(digits_model, tmp_path, monkeypatch):
    monkeypatch.setenv("COUN_LAB_QUEUES", str(tmp_path / "queues"))
    first = jobs.launch(spec(digits_model), tmp_path / "a", "cpu")
    second = jobs.launch(spec(digits_model), tmp_path / "b", "cpu")
    wait_for(lambda: steps(first) >= 1, 180, "the first job to train")
    # which run is ahead, and where: a user whose job waits behind another process's sees what it waits for
    assert wait_for(lambda: read_state(second).detail, 30, "the queue note") == \
        f"1 ahead on cpu of {socket.gethostname()}; first {Path(first).resolve()}"
    assert read_state(second).state == "queued" and steps(second) == 0
    jobs.cancel(first)
    wait_for(lambda: steps(second) >= 1, 180, "the second job to start when the first ends")
    assert read_status(second)[0]["started"] >= read_status(first)[0]["heartbeat"] - 0.5

    devqueue.set_limit("cpu", 2)  # e.g. several small runs on one large GPU
    third = jobs.launch(spec(digits_model), tmp_path / "c", "cpu")
    wait_for(lambda: steps(third) >= 1, 180, "a second job to run beside the first")
    assert read_state(second).state == "running" and read_state(third).state == "running"
    for run in (second, third):
        jobs.cancel(run)
    assert all(jobs.wait(run, 60).state == "cancelled" for run in (second, third))


def test_a_full_disk_ends_as_failed_with_one_line(digits_model, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = jobs.launch(spec(digits_model, "ga", **QUICK), disk / "run", "cpu")
        state = jobs.wait(run, 300)
        assert state.state == "failed", state
        assert "No space left on device" in state.detail and "\n" not in state.detail
        kinds = [e["kind"] for e in events_of(run)]
        assert "done" not in kinds and kinds[-1] == "failed"
        assert not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()
        assert not list(run.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
