"""Runs are jobs. A worker process (engine/worker.py) owns one run directory from launch to end;
the app, the CLI and the sweep are clients that launch, follow, cancel and list jobs through
the functions here, which read nothing but the run directory.

    launch(spec, out)  check --out, lock it, write run.toml and status.json, take a queue ticket,
                       start the worker detached (its own session; output in worker.log)
    Follower(run)      the new complete lines of events.jsonl since the last read
    stream(run)        events as the worker appends them, until the run ends
    cancel(run)        ask the worker to stop (within a step; killed after a grace period)
    JobWatcher         the jobs one client follows, polled from its own loop (the app's timer)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coun_tui.engine import UserError, warm
from coun_tui.engine.events import Event
from coun_tui.engine.records import read_event
from coun_tui.engine.rundir import (
    CANCEL_FILE,
    EVENTS_FILE,
    LOG_FILE,
    JobState,
    RunLock,
    check_out_dir,
    clear_for_writing,
    host,
    read_state,
    write_status,
)

if TYPE_CHECKING:
    from coun_tui.engine.runner import RunSpec

# A worker that has not stopped this long after a cancel is killed (the engine checks every step).
CANCEL_GRACE_SECONDS = float(os.environ.get("COUN_LAB_CANCEL_GRACE", 10.0))
_children: list[subprocess.Popen[bytes]] = []  # workers this process started (reaped, never waited for)


def stored_reference(reference: str | None, run_dir: Path) -> str | None:
    """How run.toml keeps a reference: relative to the run directory when it is near (a sweep's
    Retrain, a run beside it in a runs directory), so a moved or copied folder still finds it."""
    if not reference:
        return reference
    rel = os.path.relpath(Path(reference).resolve(), Path(run_dir).resolve())
    return rel if rel.split(os.sep).count("..") <= 2 and not Path(rel).is_absolute() else str(Path(reference).resolve())


def resolved_reference(reference: str | None, run_dir: Path) -> str | None:
    """The reference's path from run.toml: relative ones are relative to the run directory."""
    if not reference or Path(reference).is_absolute():
        return reference
    return str((Path(run_dir) / reference).resolve())


def launch(spec: RunSpec, out: str | Path, device: str, find_reference_in: str | Path | None = None,
           threads: int | None = None) -> Path:
    """Start `spec` as a job writing `out`; returns the run directory once the worker is started.

    Raises UserError (one line) before anything is written if `out` is not a place for a run, or
    if another writer holds it. `device` is the queue it waits in (e.g. "cpu", "cuda:0");
    `find_reference_in`: a runs directory whose matching Retrain the worker uses if it has none;
    `threads`: torch's threads in the worker (None: torch's default).
    """
    import tomli_w

    from coun_tui.engine.devqueue import Ticket, check_queue
    from coun_tui.engine.files import atomic_write, open_append
    from coun_tui.engine.runs import spec_to_dict

    run_dir = check_out_dir(out, spec.model)
    check_queue(device)  # a queue that cannot be used is said now, not as a job that dies
    lock = RunLock.acquire(run_dir)
    ticket = None
    try:
        clear_for_writing(run_dir)
        stored = replace(spec, reference=stored_reference(spec.reference, run_dir))
        with atomic_write(run_dir / "run.toml") as fh:
            fh.write(tomli_w.dumps(spec_to_dict(stored)).encode())
        write_status(run_dir, state="queued", pid=None, host=host(), device=device, launched=time.time(),
                     find_reference_in=str(Path(find_reference_in).resolve()) if find_reference_in else None,
                     threads=threads)
        ticket = Ticket.take(device, run_dir)
        _reap()
        args = [str(run_dir), "--lock-fd", str(lock.fd), "--ticket", str(ticket.path), "--ticket-fd",
                str(ticket.fd), "--device", device]
        if warm.spawn_worker(args, [lock.fd, ticket.fd], run_dir / LOG_FILE) is None:  # no warm server
            with open_append(run_dir / LOG_FILE) as log:
                _children.append(subprocess.Popen(
                    [sys.executable, "-m", "coun_tui.engine.worker", *args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    pass_fds=(lock.fd, ticket.fd)))
    except BaseException as exc:
        if ticket is not None:
            ticket.release()
        if isinstance(exc, OSError):  # the worker could not start: say so in the run directory, and here
            with contextlib.suppress(OSError):
                write_status(run_dir, state="failed", reason=f"the worker did not start: {exc}")
            raise UserError(f"the run in {run_dir} could not start ({exc.strerror or exc}); check the folder "
                            "(space, permissions) or choose another --out") from None
        raise
    finally:
        if ticket is not None and ticket.fd >= 0:  # the worker holds its own copies now
            os.close(ticket.fd)
        lock.release()
    return run_dir


def _reap() -> None:
    _children[:] = [p for p in _children if p.poll() is None]


def cancel(run_dir: str | Path) -> bool:
    """Ask a queued or running job to stop; False if it is not live. The worker stops within one
    step; its supervisor kills it if it has not stopped after CANCEL_GRACE_SECONDS."""
    from coun_tui.engine.files import atomic_write

    run_dir = Path(run_dir)
    if not read_state(run_dir).live:
        return False
    with atomic_write(run_dir / CANCEL_FILE, "w") as fh:  # replaces a planted link, never writes through it
        fh.write(f"{os.getpid()} {host()} {time.time()}\n")
    return True


def wait(run_dir: str | Path, timeout: float | None = None, poll: float = 0.2) -> JobState:
    """Block until the job is no longer live (or `timeout` passes); returns its state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = read_state(run_dir)
        if not state.live or (deadline is not None and time.monotonic() > deadline):
            return state
        time.sleep(poll)


class Follower:
    """Reads a run's events.jsonl from a byte offset: only complete lines, a damaged line is
    noted in `damage` and skipped, a file replaced by a new run starts over."""

    def __init__(self, run_dir: str | Path, offset: int = 0):
        self.path = Path(run_dir) / EVENTS_FILE
        self.offset = offset
        self.damage: list[str] = []  # "events.jsonl line N: what is wrong"
        self._lines = 0  # complete lines read (numbered from the offset the follower started at)
        self._ino: int | None = None

    @property
    def damaged(self) -> int:
        return len(self.damage)

    def read(self, limit: int = 1 << 22) -> list[Event]:
        from coun_tui.engine.schema import RecordError

        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset):
            self.offset, self._lines = 0, 0  # a new run replaced the file
        self._ino = st.st_ino
        if st.st_size <= self.offset:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(min(limit, st.st_size - self.offset))
        except OSError as exc:  # a folder or an unreadable file where the log belongs
            if not self.damage:
                self.damage.append(f"{EVENTS_FILE}: cannot be read ({exc.strerror or type(exc).__name__})")
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for line in data[:end].split(b"\n")[:-1]:
            self._lines += 1
            if not line.strip():
                continue
            try:
                events.append(read_event(line))
            except RecordError as exc:
                self.damage.append(f"{EVENTS_FILE} line {self._lines}: {exc.detail}")
        return events


def stream(run_dir: str | Path, offset: int = 0, poll: float = 0.2,
           on_state: Callable[[JobState], None] | None = None) -> Iterator[Event]:
    """The run's events as its worker writes them, from `offset`, until the run is over."""
    follower = Follower(run_dir, offset)
    checked, last = 0.0, None
    while True:
        events = follower.read()
        yield from events
        if any(e.kind in ("done", "failed", "cancelled") for e in events):
            return
        if time.monotonic() - checked > 1.0:
            checked = time.monotonic()
            state = read_state(run_dir)
            if on_state and (last is None or (state.state, state.detail) != (last.state, last.detail)):
                on_state(state)
            last = state
            if not state.live:
                yield from follower.read()
                return
        if not events:
            time.sleep(poll)


@dataclass
class Update:
    key: str
    events: list[Event] = field(default_factory=list)
    state: JobState | None = None  # set when the state changed since the last poll


class JobWatcher:
    """The jobs one client follows (the app: one per live pane). Plain Python, no threads:
    the owner calls poll() from its own loop; each call reads only what is new."""

    STATE_SECONDS = 1.0  # how often a job's state (lock, status) is re-read

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[Path, Follower]] = {}
        self._states: dict[str, JobState] = {}
        self._checked: dict[str, float] = {}

    def add(self, key: str, run_dir: str | Path, offset: int = 0) -> None:
        self._jobs[key] = (Path(run_dir), Follower(run_dir, offset))
        self._checked[key] = 0.0

    def remove(self, key: str) -> None:
        self._jobs.pop(key, None)
        self._states.pop(key, None)
        self._checked.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._jobs

    def keys(self) -> list[str]:
        return list(self._jobs)

    def state(self, key: str) -> JobState | None:
        return self._states.get(key)

    def poll(self) -> list[Update]:
        _reap()
        updates = []
        now = time.monotonic()
        for key, (run_dir, follower) in list(self._jobs.items()):
            update = Update(key, follower.read())
            ended = any(e.kind in ("done", "failed", "cancelled") for e in update.events)
            if ended or now - self._checked[key] >= self.STATE_SECONDS:
                self._checked[key] = now
                state = read_state(run_dir)
                old = self._states.get(key)
                if old is None or (old.state, old.detail) != (state.state, state.detail):
                    self._states[key] = update.state = state
                if not state.live:
                    update.events += follower.read()
                    self.remove(key)
            if update.events or update.state:
                updates.append(update)
        return updates


def find_runs(root: str | Path, depth: int = 4) -> list[Path]:
    """Run directories at or under `root` (a runs directory, a sweep, or one run), sorted."""
    root = Path(root)
    if (root / "run.toml").is_file() or (root / EVENTS_FILE).is_file():
        return [root]
    found: list[Path] = []
    if depth and root.is_dir():
        try:
            children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:  # a folder that cannot be listed holds no runs we can show
            return found
        for child in children:
            found += find_runs(child, depth - 1)
    return found


def live_runs(runs_dir: str | Path) -> list[Path]:
    """The queued and running jobs under a runs directory, oldest first."""
    runs = [p for p in find_runs(runs_dir, depth=1) if read_state(p).live]
    return sorted(runs, key=lambda p: (p / "run.toml").stat().st_mtime if (p / "run.toml").exists() else 0)


def read_spec_dict(run_dir: Path) -> dict[str, Any]:
    """run.toml as a dict ({} when missing or damaged)."""
    import tomllib

    from coun_tui.engine.files import open_for_reading

    try:
        with open_for_reading(Path(run_dir) / "run.toml") as fh:
            return tomllib.loads(fh.read().decode())
    except (OSError, ValueError):
        return {}
