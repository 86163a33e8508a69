import os

import pytest

# Tests run on the CPU and must not be slowed by thread oversubscription between processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
