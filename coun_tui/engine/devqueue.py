"""Device queues shared by every process of one user on one machine (app windows, the CLI, sweeps).

QUEUES/<device>/ holds one ticket per waiting or running job, named by its launch time, so runs
start in launch order; each ticket is flock'ed by its job (a dead job's ticket is unlocked and
swept away). A job starts when fewer than `limit` live tickets are ahead of it and it holds one
of the device's `limit` slot locks (slot-0 ...), so the limit holds even under races. The limit
is the file QUEUES/<device>/limit (default 1), set with `coun-lab runs limit DEVICE N`.

A device's name is a torch device (cpu, cuda:N, mps): it names a folder, so nothing else is
accepted (no `..`, no slash). Slots are opened without following links, and a slot or limit that
is not a file, or a queue folder that cannot be written, is a problem said at launch and in
`coun-lab runs` (queue_problems).
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
from coun_tui.engine.files import atomic_write, not_a_file, open_file

STALE_SECONDS = 10.0  # an unlocked ticket younger than this may be one being created
POLL_SECONDS = 0.25


def queues_root() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("COUN_LAB_QUEUES") or Path(user_data_dir("coun-lab")) / "queues")


DEVICE_NAME = re.compile(r"(cpu|mps|cuda|xpu)(:[0-9]{1,3})?")


def check_device(device: str) -> str:
    """The device's name when it is one a queue may have (cpu, cuda:N, mps), else UserError."""
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise UserError(f"device {ascii(device)} is not a device "
                        "name; use cpu, cuda:N or mps")
    return device


def device_dir(device: str) -> Path:
    path = queues_root() / check_device(device).replace(":", "_")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"the {device} queue {path} cannot be made ({exc.strerror or type(exc).__name__}); "
                        "check it or set COUN_LAB_QUEUES to another folder") from None
    return path


def queue_problem(device: str) -> str:
    """Why the device's queue cannot be used ("" when it can): its folder, limit or a slot."""
    path = queues_root() / check_device(device).replace(":", "_")
    what = not_a_file(path) if not path.is_dir() or path.is_symlink() else ""
    if what:  # a link would put the queue's files wherever it points
        return f"{path} is {what}, not a folder: remove it (rm {path})"
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        return f"{path} cannot be written: check its permissions"
    entries = [path / "limit", *sorted(path.glob("slot-*"))] if path.is_dir() else []
    for entry in entries:
        what = not_a_file(entry)
        if what:
            return f"{entry} is {what}, not a file: remove it (rm -r {entry})"
    return ""


def check_queue(device: str) -> None:
    problem = queue_problem(device)
    if problem:
        raise UserError(f"the {device} queue cannot be used: {problem}")


def queue_problems() -> list[str]:
    """Each queue under the queues root that cannot be used, with its cause (for `coun-lab runs`)."""
    root = queues_root()
    try:
        names = sorted(p.name for p in root.iterdir())
    except OSError:
        return []
    out = []
    for name in names:
        device = name.replace("_", ":")
        if DEVICE_NAME.fullmatch(device):
            problem = queue_problem(device)
            if problem:
                out.append(f"queue {device}: {problem}")
    return out


def get_limit(device: str) -> int:
    from coun_tui.engine.files import open_for_reading

    try:
        with open_for_reading(device_dir(device) / "limit") as fh:
            return max(1, int(fh.read(64).strip()))
    except (OSError, ValueError):
        return 1


def set_limit(device: str, n: int) -> None:
    if n < 1:
        raise UserError(f"a device's limit must be at least 1, not {n}")
    check_queue(device)
    with atomic_write(device_dir(device) / "limit", "w") as fh:
        fh.write(f"{n}\n")


def _locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
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
        os.write(fd, os.fsencode(Path(run_dir).resolve()))
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
            fd = open_file(device_dir(self.device) / f"slot-{i}", os.O_RDWR | os.O_CREAT)
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
