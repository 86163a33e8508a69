"""Device queues shared by every process of one user on one machine (app windows, the CLI, sweeps).

QUEUES/<device>/ holds one ticket per waiting or running job, named by its launch time, so runs
start in launch order; each ticket is flock'ed by its job (a dead job's ticket is unlocked and
swept away). A job starts when fewer than `limit` live tickets are ahead of it and it holds one
of the device's `limit` slot locks (slot-0 ...), so the limit holds even under races. The limit
is the file QUEUES/<device>/limit (default 1), set with `coun-lab runs limit DEVICE N`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from coun_tui.engine import UserError

STALE_SECONDS = 10.0  # an unlocked ticket younger than this may be one being created
POLL_SECONDS = 0.25


def queues_root() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("COUN_LAB_QUEUES") or Path(user_data_dir("coun-lab")) / "queues")


def device_dir(device: str) -> Path:
    path = queues_root() / re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    path.mkdir(parents=True, exist_ok=True)
    return path


def get_limit(device: str) -> int:
    try:
        return max(1, int((device_dir(device) / "limit").read_text().strip()))
    except (OSError, ValueError):
        return 1


def set_limit(device: str, n: int) -> None:
    if n < 1:
        raise UserError(f"a device's limit must be at least 1, not {n}")
    from coun_tui.engine.files import atomic_write

    with atomic_write(device_dir(device) / "limit", "w") as fh:
        fh.write(f"{n}\n")


def _locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def live_tickets(device: str) -> list[Path]:
    """Tickets of jobs waiting or running on `device`, in launch order (dead ones are removed)."""
    live = []
    for path in sorted(device_dir(device).glob("*.ticket")):
        if _locked(path):
            live.append(path)
        else:
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > STALE_SECONDS:
                    path.unlink()
    return live


class Ticket:
    """A job's place in its device's queue; its descriptor travels to the worker (pass_fds)."""

    def __init__(self, path: Path, fd: int, device: str):
        self.path, self.fd, self.device = path, fd, device
        self.slot_fd = -1

    @classmethod
    def take(cls, device: str, run_dir: Path) -> Ticket:
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}.ticket"
        path = device_dir(device) / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(Path(run_dir).resolve()).encode())
        return cls(path, fd, device)

    @classmethod
    def adopt(cls, path: str | Path, fd: int, device: str) -> Ticket:
        return cls(Path(path), fd, device)

    def ahead(self) -> int:
        live = live_tickets(self.device)
        return live.index(self.path) if self.path in live else len(live)

    def runs_ahead(self) -> list[str]:
        """The run directories of the live jobs ahead of this one (each ticket holds its run's path)."""
        live = live_tickets(self.device)
        out = []
        for path in live[:live.index(self.path)] if self.path in live else live:
            with contextlib.suppress(OSError):
                out.append(path.read_text().strip() or "?")
        return out

    def waiting_note(self, ahead: int) -> str:
        """Why the job waits: how many are ahead on which device, and the first of them by its run."""
        runs = self.runs_ahead()
        first = f"; first {runs[0]}" if runs else ""
        return f"{ahead} ahead on {self.device} of {socket.gethostname()}{first}"

    def try_start(self) -> bool:
        """Take a free slot if this ticket's turn has come; True when it may run now."""
        limit = get_limit(self.device)
        if self.ahead() >= limit:
            return False
        for i in range(limit):
            fd = os.open(device_dir(self.device) / f"slot-{i}", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.slot_fd = fd
            return True
        return False

    def wait_turn(self, cancelled: Callable[[], bool], on_wait: Callable[[int], object]) -> bool:
        """Block until this job may run (True) or is cancelled first (False)."""
        last = None
        while not self.try_start():
            if cancelled():
                return False
            ahead = self.ahead()
            if ahead != last:
                on_wait(ahead)
                last = ahead
            time.sleep(POLL_SECONDS)
        return True

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        for fd in (self.fd, self.slot_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.slot_fd = -1
