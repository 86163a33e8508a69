"""Where jobs run. Two backends with one interface, both running worker.run_job on a run directory
and leaving the same files, so the app, `coun-lab runs` and the sweep read a run the same way
whichever ran it:

- local: a worker process per run on this machine, queued per device (engine/jobs.py);
- ray: a Ray task per run on any node of a Ray cluster (engine/rayjobs.py, needs the `ray` extra).

    check(spec)                              refuse bad settings before anything is written
    launch(spec, out, find_reference_in, after, checked)
                                             start a run; returns its run directory (`checked`:
                                             what an earlier check(spec) returned, not redone)
    schedules                                True when the backend itself waits for resources and
                                             for `after` (a Retrain launched before): the sweep
                                             hands it every run at once
    close()                                  the client is leaving (Ray: its runs end with it)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from coun_tui.engine import UserError

if TYPE_CHECKING:
    from coun_tui.engine.runner import RunSpec

BACKENDS = ("local", "ray")
ADDRESS_ENV = "COUN_LAB_RAY_ADDRESS"
STORAGE_MODES = ("shared", "driver")
INSTALL_RAY = "pip install -e '.[ray]'"


def threads_for(cpus_per_run: float | None) -> int | None:
    """torch's threads for a run's CPU share (None: torch's default)."""
    return None if cpus_per_run is None else max(1, int(cpus_per_run))


class Backend(Protocol):
    """What every backend offers (the interface in the module's doc)."""

    name: str
    schedules: bool

    def check(self, spec: RunSpec) -> str: ...

    def launch(self, spec: RunSpec, out: str | Path, find_reference_in: str | Path | None = None,
               after: Path | None = None, checked: str | None = None) -> Path: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class LocalBackend:
    """Today's jobs: worker processes on this machine (engine/jobs.py)."""

    name = "local"
    schedules = False

    def __init__(self, cpus_per_run: float | None = None):
        self.threads = threads_for(cpus_per_run)

    def check(self, spec: RunSpec) -> str:
        from coun_tui.engine.runner import check

        return check(spec)

    def launch(self, spec: RunSpec, out: str | Path, find_reference_in: str | Path | None = None,
               after: Path | None = None, checked: str | None = None) -> Path:
        from coun_tui.engine import jobs

        return jobs.launch(spec, out, checked or self.check(spec), find_reference_in, threads=self.threads)

    def describe(self) -> str:
        return "local worker processes"

    def close(self) -> None:
        """Local jobs outlive their client: nothing to do."""


def make(backend: str | None = None, address: str | None = None, gpus_per_run: float | None = None,
         cpus_per_run: float | None = None, storage: str | None = None) -> Backend:
    """The backend the options ask for; one clear line (UserError) for options that do not fit.

    Without --backend, COUN_LAB_RAY_ADDRESS set in the environment chooses Ray at that address.
    """
    env_address = os.environ.get(ADDRESS_ENV) or None
    backend = backend or ("ray" if env_address else "local")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use local or ray")
    if cpus_per_run is not None and cpus_per_run <= 0:
        raise UserError(f"--cpus-per-run {cpus_per_run:g}: give a positive number of CPU cores, e.g. 1")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise UserError(f"--gpus-per-run {gpus_per_run:g}: give 0 or more GPUs, e.g. 0.25 for four runs a GPU")
    if storage is not None and storage not in STORAGE_MODES:
        raise UserError(f"--storage {storage!r}: use shared (every node sees the runs directory) or driver")
    if backend == "local":
        for flag, value in (("--address", address), ("--gpus-per-run", gpus_per_run), ("--storage", storage)):
            if value is not None:
                raise UserError(f"{flag} needs --backend ray (the local backend queues runs per device: "
                                "`coun-lab runs limit cuda:0 4` runs four at once on one GPU)")
        return LocalBackend(cpus_per_run)
    if address or env_address:
        send_token_if_any()
    require_ray()
    from coun_tui.engine.rayjobs import RayBackend

    return RayBackend(address or env_address, gpus_per_run, cpus_per_run, storage or "shared")


def send_token_if_any() -> None:
    """`ray start` turns on token authentication (Ray 2.60 does), but a driver sends the token only
    with RAY_AUTH_MODE=token, read when Ray is imported. Send it whenever there is one
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): a cluster without authentication
    accepts a driver that sends one."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def require_ray() -> None:
    """One line saying how to install Ray, if it is missing."""
    try:
        import ray  # noqa: F401 - only to say plainly that it is missing
    except ImportError:
        raise UserError(f"--backend ray needs Ray, which is not installed here: {INSTALL_RAY}") from None


_current: Backend | None = None


def use(backend: Backend) -> None:
    """The backend this process launches its runs with (set once by `coun-lab tui`)."""
    global _current
    _current = backend


def current() -> Backend:
    """This process's backend: the local one unless `use` chose another."""
    global _current
    if _current is None:
        _current = LocalBackend()
    return _current
