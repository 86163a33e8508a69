"""A run directory as its writer and its readers see it: which files belong to a run, the writer's
lock, where a run may be written, and the run's state read from the directory alone.

Nothing here imports torch: `coun-lab runs` and the app's polling stay cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coun_tui.engine import UserError

LOCK_FILE = ".lock"  # flock'ed by the run's writer for its whole life
CANCEL_FILE = "cancel"  # its presence asks the worker to stop (checked every training step)
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "worker.log"  # the worker's stdout and stderr
TENSORBOARD_DIR = "tensorboard"  # the run's TensorBoard logs (--log tensorboard), a folder
RUN_FILES = {"run.toml", "split.npz", EVENTS_FILE, STATUS_FILE, "metrics.json", "model.safetensors",
             "embedding.npy", "reference.npz", "labels.json", LOG_FILE, LOCK_FILE, CANCEL_FILE, TENSORBOARD_DIR}
LIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "died", "damaged")
HEARTBEAT_SECONDS = 5.0  # a worker rewrites status.json at least this often while it trains
LOCK_WAIT_SECONDS = 2.0  # readers probe the lock for microseconds: a writer retries this long


def host() -> str:
    return socket.gethostname()


def is_temporary(name: str) -> bool:
    """A half-written file of engine.files.atomic_write (`.NAME.XXXX.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


# --- the writer's lock ------------------------------------------------------------------------


class RunLock:
    """An exclusive flock on RUN/.lock. The kernel drops it when the last process holding the open
    file exits, however it exits, so a dead writer never leaves a stale lock. A launcher takes it
    and hands the descriptor to the worker (pass_fds), so the run is locked without a gap."""

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def acquire(cls, run_dir: Path, wait: float = LOCK_WAIT_SECONDS) -> RunLock:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise UserError(f"{run_dir} is in use by {describe_holder(read_holder(run_dir))}; wait for "
                                    f"it, cancel it (coun-lab runs cancel {run_dir}) or choose another --out") from None
                time.sleep(0.05)
        lock = cls(fd)
        lock.set_holder()
        return lock

    def set_holder(self, **extra: Any) -> None:
        """Say who holds the lock (read by a refused second writer)."""
        data = json.dumps({"pid": os.getpid(), "host": host(), "since": time.time(), **extra}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's lock ({"pid", "host", ...}), or None when nobody does."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(info: dict[str, Any] | None) -> str:
    info = info or {}
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"


# --- where a run may be written ---------------------------------------------------------------


def check_out_dir(out: str | Path, source: str | Path | None = None) -> Path:
    """Refuse, before anything is written, an --out that would mix a run with other files."""
    if not str(out).strip():
        raise UserError("--out is empty; give a new directory for the run, e.g. --out runs/coun-3")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the run")
    if source:
        src = Path(source).resolve()
        where = path.resolve()
        if where == src or where in src.parents:
            raise UserError(f"--out {out} holds the source checkpoint {source}; give a new directory, "
                            "so the original is never overwritten")
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in RUN_FILES and not is_temporary(p.name))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(f"--out {out} holds files that are not a run's ({shown}); give a new directory")
        if (path / "metrics.json").exists():
            raise UserError(f"{out} already holds a finished run; choose another --out or delete it")
    return path


def clear_for_writing(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Called under the lock: remove a dead writer's temporary files and an unfinished run's files,
    so the new run starts clean (labels a person gave stay, and the files named in `keep`)."""
    for p in run_dir.iterdir():
        if is_temporary(p.name) or (p.name in RUN_FILES and p.name not in (LOCK_FILE, "labels.json", *keep)):
            if p.is_dir() and not p.is_symlink():  # an earlier attempt's TensorBoard logs
                shutil.rmtree(p, ignore_errors=True)
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


# --- status.json ------------------------------------------------------------------------------


def read_status(run_dir: Path) -> tuple[dict[str, Any], str]:
    """status.json as a dict, and what is wrong with it ("" when it is fine or absent)."""
    try:
        data = json.loads((run_dir / STATUS_FILE).read_text())
    except FileNotFoundError:
        return {}, ""
    except (OSError, ValueError) as exc:
        return {}, f"status.json is damaged ({type(exc).__name__})"
    if not isinstance(data, dict):
        return {}, "status.json is damaged (not an object)"
    if "state" not in data and "status" in data:  # written before runs were jobs
        data["state"] = data["status"]
    return data, ""


def write_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json (atomically) with a fresh heartbeat; returns the record."""
    from coun_tui.engine.files import atomic_write

    data, _ = read_status(run_dir)
    data.update(fields, heartbeat=time.time())
    with atomic_write(run_dir / STATUS_FILE, "w") as fh:
        json.dump(data, fh, indent=1)
    return data


# --- the state, from the directory alone ------------------------------------------------------


@dataclass
class JobState:
    state: str  # queued | running | done | failed | cancelled | died | damaged
    detail: str = ""  # one line: why it failed, how it died, where it waits, what is damaged
    step: int = 0  # the last step in events.jsonl
    total: int = 0  # steps the run will take (0 before it starts)
    pid: int | None = None
    host: str = ""
    device: str = ""
    updated: float = 0.0  # last change of the directory (events or status)

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def describe(self) -> str:
        return self.state + (f" · {self.detail}" if self.detail else "")


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.strip()]


def scan_events(run_dir: Path, window: int = 65536) -> dict[str, Any]:
    """The facts a state needs from events.jsonl, reading only its head and tail: total steps
    (started), the last step, the final event, and how many lines are damaged."""
    out: dict[str, Any] = {"total": 0, "step": 0, "final": None, "damaged": 0}
    path = run_dir / EVENTS_FILE
    try:
        with open(path, "rb") as fh:
            head = fh.read(window)
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - window))
            tail = fh.read()
    except OSError:
        return out
    if size > window:  # the tail's first line may be cut: drop it
        tail = tail.split(b"\n", 1)[1] if b"\n" in tail else b""
    def complete(data: bytes) -> bytes:  # a line being written is not read
        return data[: data.rfind(b"\n") + 1]

    # A line of valid JSON with fields of the wrong type is damage too, never an exception.
    bad_fields = (ValueError, KeyError, TypeError, AttributeError, OverflowError)
    for line in _lines(complete(head))[:4]:
        with contextlib.suppress(*bad_fields):
            first = json.loads(line)
            if first.get("kind") == "started":
                out["total"] = int(first["epochs"]) * int(first["steps_per_epoch"])
    for line in reversed(_lines(complete(tail))):
        try:
            event = json.loads(line)
            kind = event["kind"]
            step = int(event.get("step", 0)) if kind in ("step", "cancelled") else 0
        except bad_fields:
            out["damaged"] += 1
            continue
        if kind in ("done", "failed", "cancelled") and out["final"] is None and not out["step"]:
            out["final"] = event
        if kind in ("step", "cancelled") and not out["step"]:
            out["step"] = step
    return out


def model_is_whole(path: Path) -> bool:
    """A safetensors file whose header and data are complete (nothing torch-related is loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np"):
            return True
    except (OSError, SafetensorError, ValueError):
        return False


def metrics_are_whole(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in ("RA", "UA", "TA", "MIA"))


def _exit_words(status: dict[str, Any]) -> str:
    if status.get("signal"):
        return f"killed by {status['signal']}"
    if status.get("exit_code") is not None:
        return f"exit code {status['exit_code']}"
    return status.get("reason") or "its worker is gone"


def read_state(run_dir: str | Path) -> JobState:
    """The run's state from its files and its lock, never an exception: a damaged file is a state
    (or a note in `detail`), not a crash."""
    run_dir = Path(run_dir)
    status, status_problem = read_status(run_dir)
    ev = scan_events(run_dir)
    total, step = ev["total"], ev["step"]
    updated = max([p.stat().st_mtime for p in (run_dir / EVENTS_FILE, run_dir / STATUS_FILE) if p.exists()],
                  default=0.0)
    base = dict(step=step, total=total, pid=status.get("pid"), host=status.get("host", ""),
                device=status.get("device", ""), updated=updated)
    holder = read_holder(run_dir)
    remote_alive = (status.get("host") not in (None, host()) and status.get("state") in LIVE
                    and time.time() - float(status.get("heartbeat", 0)) < 3 * HEARTBEAT_SECONDS)
    verdict = status.get("state") in ("done", "failed", "cancelled") and (
        ev["final"] is not None or (run_dir / "metrics.json").exists())
    if (holder is not None or remote_alive) and not verdict:  # (a verdict is final before the lock goes)
        state = str(status["state"]) if status.get("state") in LIVE else "running"
        if state == "queued" and ev["total"]:
            state = "running"
        detail = status.get("note", "") if state == "queued" else ""
        return JobState(state, detail or status_problem, **base)
    note = "; ".join(filter(None, [status_problem, f"{ev['damaged']} damaged line(s) in events.jsonl"
                                   if ev["damaged"] else ""]))
    metrics = run_dir / "metrics.json"
    model = run_dir / "model.safetensors"
    if metrics.exists():
        if not metrics_are_whole(metrics):
            return JobState("damaged", "metrics.json is damaged", **base)
        if model.exists() and not model_is_whole(model):
            return JobState("damaged", "model.safetensors is incomplete", **base)
        return JobState("done", "" if model.exists() else "model not kept", **base)
    final = ev["final"] or {}
    kind = final.get("kind") or status.get("state")
    if kind == "failed":
        return JobState("failed", str(final.get("reason") or status.get("reason") or "no reason recorded"), **base)
    if kind == "cancelled":
        at = final.get("step", status.get("step", step)) or 0
        why = status.get("reason", "")
        detail = "before it started" if not at and not total else f"at step {at}"
        return JobState("cancelled", detail + (f" ({why})" if why else ""), **base)
    if kind == "done":  # a done without its files is never trusted
        return JobState("damaged", "the run says done but metrics.json is missing", **base)
    if not status and not ev["total"] and not (run_dir / "run.toml").exists():
        return JobState("damaged", "not a run directory (no run.toml)", **base)
    words = _exit_words(status) + (f" at step {step}" if step else " before its first step")
    return JobState("died", "; ".join(filter(None, [words, note])), **base)
