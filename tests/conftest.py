import os
import tempfile

import pytest

# Tests run on the CPU and must not be slowed by thread oversubscription between processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("COUN_LAB_CANCEL_GRACE", "3")  # read when coun_tui.engine.jobs is imported
# Module- and session-scoped fixtures launch jobs before the per-test queues below exist: they
# queue here, never behind the user's own runs.
os.environ["COUN_LAB_QUEUES"] = tempfile.mkdtemp(prefix="coun-lab-test-queues-")
# No warm worker server (engine/warm.py) unless a test starts its own: none outlives the tests.
os.environ["COUN_LAB_WARM"] = "off"


@pytest.fixture(autouse=True)
def private_device_queues(tmp_path_factory, monkeypatch, request):
    """Each test's jobs queue among themselves, never behind a user's runs or another test's;
    a job a test leaves going (an app quit that leaves its runs running) is cancelled after it."""
    monkeypatch.setenv("COUN_LAB_QUEUES", str(tmp_path_factory.mktemp("queues")))
    monkeypatch.setenv("COUN_LAB_CANCEL_GRACE", "3")
    yield
    tmp_path = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if tmp_path is not None:
        from coun_tui.engine import jobs

        for run in jobs.find_runs(tmp_path, depth=6):
            jobs.cancel(run)


@pytest.fixture(scope="session")
def digits_model():
    """The shipped digits model (trained by `coun-lab train`, see models/README.md)."""
    from coun_tui.engine.paths import DEFAULT_MODEL

    assert DEFAULT_MODEL.is_file(), f"{DEFAULT_MODEL} is missing: run the command in models/README.md"
    return str(DEFAULT_MODEL)


@pytest.fixture
def cli():
    """Run `coun-lab ARGS...` in-process; returns the exit code."""
    from coun_tui.cli import main

    def invoke(*args):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            return exc.code
        return 0

    return invoke
