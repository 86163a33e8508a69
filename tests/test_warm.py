"""The warm worker server (engine/warm.py), for real: a server process, forked workers, SIGKILL."""

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from coun_tui.engine import jobs, warm
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.rundir import read_status
from coun_tui.engine.runner import RunSpec, check


@pytest.fixture
def warm_dir(monkeypatch):
    """A private socket folder (short: a unix socket's path is limited); every server in it is
    killed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
    monkeypatch.setenv("COUN_LAB_WARM", str(folder))
    yield folder
    for sock in folder.glob("*.sock"):
        pid = warm.server_pid(sock.stem)
        if pid:
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _spec(model, epochs):
    return RunSpec(method="ft", model=model, forget=ForgetSpec(classes=[3]), probe_size=16,
                   hparams={"epochs": epochs, "batch_size": 128})


def _parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_job_started_through_the_warm_server_survives_its_sigkill(digits_model, warm_dir, tmp_path):
    server = warm.ensure_server()
    assert server is not None
    spec = _spec(digits_model, 2)
    run_dir = jobs.launch(spec, tmp_path / "run", check(spec))
    _wait_for(lambda: read_status(run_dir)[0].get("supervisor"))
    supervisor = read_status(run_dir)[0]["supervisor"]
    assert _parent(supervisor) == server  # forked by the server, not started by this process
    assert os.getsid(supervisor) == supervisor  # in a session of its own
    os.kill(server, signal.SIGKILL)
    state = jobs.wait(run_dir, timeout=300)
    assert state.state == "done", (state, (run_dir / "worker.log").read_text()[-2000:])
    assert read_status(run_dir)[0]["pid"] != supervisor  # the trainer was its own (forked) process
    assert not (run_dir / "worker.log").read_text().strip()  # nothing went wrong on the way


def test_a_stale_or_absent_server_never_serves_and_launches_still_work(digits_model, warm_dir, monkeypatch,
                                                                        tmp_path):
    old = warm.ensure_server()
    old_path = warm.socket_path()
    assert old is not None and old_path.exists()
    monkeypatch.setenv("COUN_LAB_CANCEL_GRACE", "4")  # an environment the old server was not built for
    assert warm.socket_path() != old_path and warm.server_pid() is None
    # Asked anyway, the old server refuses, and goes.
    reply = warm._ask(old_path, {"fingerprint": warm.fingerprint(), "args": [], "fds": []}, [])
    assert reply == {"error": "stale"}
    _wait_for(lambda: not old_path.exists(), 30)
    # No server for this environment: the launch starts the worker itself (and a server for later).
    spec = _spec(digits_model, 1)
    run_dir = jobs.launch(spec, tmp_path / "run", check(spec))
    supervisor = read_status(run_dir)[0].get("pid")
    assert supervisor is None or _parent(supervisor) == os.getpid()
    assert jobs.wait(run_dir, timeout=300).state == "done"
    assert warm.ensure_server() is not None  # the one the launch started (killed by the fixture)
