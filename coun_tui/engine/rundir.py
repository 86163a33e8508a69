"""A run directory as its writer and its readers see it: which files belong to a run, the writer's
lock, where a run may be written, and the run's state read from the directory alone.

Nothing here imports torch: `coun-lab runs` and the app's polling stay cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coun_tui.engine import UserError
from coun_tui.engine.files import not_a_file, open_file, open_for_reading

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
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{run_dir} cannot be made ({exc.strerror or type(exc).__name__}); "
                            "choose another --out") from None
        fd = open_file(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT)  # never through a planted link
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
    try:  # non-blocking: a pipe planted as .lock must not hang a reader
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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
    role = f" ({as_text(info['role'])})" if info.get("role") else ""
    return f"pid {as_text(info.get('pid', '?'))} on {as_text(info.get('host', '?'))}{role}"


# --- where a run may be written ---------------------------------------------------------------


def check_name(out: str | Path) -> None:
    """Refuse an --out the file system cannot hold: a name part too long, or one that is not valid
    in the file system's encoding (it could not be written into a ticket or a log line)."""
    text = str(out)
    try:
        encoded = text.encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        raise UserError(f"--out {ascii(text)} is not valid {sys.getfilesystemencoding()}; "
                        "give a name in plain letters, digits, - and _") from None
    parent = Path(text).parent
    while not os.path.isdir(parent) and parent != parent.parent:  # (never raises on a long name)
        parent = parent.parent
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > name_max or len(encoded) > 4000:
        raise UserError(f"--out {text[:40]}… holds a name of {longest} bytes, more than the file system "
                        f"allows ({name_max}); give a shorter name")


def check_entries(path: Path) -> None:
    """Refuse a run folder where an entry that belongs to a run is not a regular file (a link, a
    folder, a pipe): the launcher would write through it or fail halfway through clearing."""
    for name in sorted(RUN_FILES):
        if name == TENSORBOARD_DIR and (path / name).is_dir() and not (path / name).is_symlink():
            continue  # a folder by design (an earlier attempt's TensorBoard logs)
        what = not_a_file(path / name)
        if what:
            raise UserError(f"{path / name} is {what}, not a file; nothing was changed: remove it "
                            f"(rm -r {path / name}) or choose another --out")


def check_out_dir(out: str | Path, source: str | Path | None = None) -> Path:
    """Refuse, before anything is written, an --out that would mix a run with other files, or that
    holds a run's whole model: the folder is judged whole before anything in it is deleted."""
    if not str(out).strip():
        raise UserError("--out is empty; give a new directory for the run, e.g. --out runs/coun-3")
    check_name(out)
    try:
        return _check_out_dir(Path(out), source)
    except OSError as exc:
        raise UserError(f"--out {out} cannot be read ({exc.strerror or type(exc).__name__}); "
                        "choose another --out") from None


def _check_out_dir(path: Path, source: str | Path | None) -> Path:
    out = str(path)
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
        check_entries(path)
        if (path / "metrics.json").exists():
            raise UserError(f"{out} already holds a finished run; choose another --out or delete it")
        if model_is_whole(path / "model.safetensors"):
            raise UserError(f"{out} holds a whole model (model.safetensors) but no metrics.json; keep it "
                            f"(choose another --out; `coun-lab eval --model {path / 'model.safetensors'}` "
                            "measures it) or delete the folder")
    return path


def clear_for_writing(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Called under the lock: remove a dead writer's temporary files and an unfinished run's files,
    so the new run starts clean (labels a person gave stay, and the files named in `keep`).

    All or nothing: an entry that is not a regular file is refused first, then every file to go is
    moved into one hidden folder (a rename, undone if any fails: an immutable file, a read-only
    folder) and only then deleted, so a refused relaunch loses nothing."""
    check_entries(run_dir)
    doomed = [p for p in run_dir.iterdir()
              if is_temporary(p.name) or (p.name in RUN_FILES and p.name not in (LOCK_FILE, "labels.json", *keep))]
    if not doomed:
        return
    try:
        trash = Path(tempfile.mkdtemp(dir=run_dir, prefix=".cleared.", suffix=".tmp"))
    except OSError as exc:
        raise _cannot_remove(exc, run_dir) from None
    moved: list[Path] = []
    try:
        for p in doomed:
            os.rename(p, trash / p.name)
            moved.append(p)
    except OSError as exc:
        for p in reversed(moved):
            with contextlib.suppress(OSError):
                os.rename(trash / p.name, p)
        with contextlib.suppress(OSError):
            trash.rmdir()
        raise _cannot_remove(exc, run_dir) from None
    shutil.rmtree(trash, ignore_errors=True)


def _cannot_remove(exc: OSError, run_dir: Path) -> UserError:
    return UserError(f"{exc.filename or run_dir} cannot be removed ({exc.strerror or type(exc).__name__}); nothing "
                     "was changed: check its permissions and attributes (lsattr, chattr -i) or choose another --out")


# --- status.json ------------------------------------------------------------------------------


def read_status(run_dir: Path) -> tuple[dict[str, Any], str]:
    """status.json as a dict, and what is wrong with it ("" when it is fine or absent)."""
    try:
        with open_for_reading(run_dir / STATUS_FILE) as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        return {}, ""
    except (OSError, ValueError, RecursionError) as exc:
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


# How far back the tail is searched for the last step: far beyond any real run's lines after its
# last step (an epoch's metrics and embedding), and a bound on what a hostile file costs a reader.
TAIL_LIMIT = 64 << 20
# A line of valid JSON with fields of the wrong type is damage too, never an exception.
_BAD_FIELDS = (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError)


def scan_events(run_dir: Path, window: int = 65536) -> dict[str, Any]:
    """The facts a state needs from events.jsonl: total steps (started, in its head), the last step
    and the final event. The tail is read backwards in growing windows until a step is found (or
    the file's start), so long lines before it (embeddings, a long reason) never hide it; how
    many of the lines read are damaged."""
    out: dict[str, Any] = {"total": 0, "step": 0, "final": None, "damaged": 0}
    try:
        with open_for_reading(run_dir / EVENTS_FILE) as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(window)
            _scan_head(head[: head.rfind(b"\n") + 1], out)  # a line being written is not read
            end = size
            while end > 0 and not out["step"] and size - end + window <= TAIL_LIMIT:
                start = max(0, end - window)
                fh.seek(start)
                data = fh.read(end - start)
                if end == size:
                    data = data[: data.rfind(b"\n") + 1]
                cut = data.find(b"\n") + 1 if start > 0 else 0  # the first line may be cut: read it next time
                if start > 0 and cut == 0:  # one line longer than the window: widen it
                    window *= 2
                    continue
                _scan_tail(data[cut:], out)
                end = start + cut
                window *= 2
    except OSError:
        return out
    return out


def _scan_head(head: bytes, out: dict[str, Any]) -> None:
    for line in _lines(head)[:4]:
        with contextlib.suppress(*_BAD_FIELDS):
            first = json.loads(line)
            if first.get("kind") == "started":
                out["total"] = int(first["epochs"]) * int(first["steps_per_epoch"])


def _scan_tail(data: bytes, out: dict[str, Any]) -> None:
    """Lines from last to first until a step: the final event counts only after the last step."""
    for line in reversed(_lines(data)):
        try:
            event = json.loads(line)
            kind = event["kind"]
            step = int(event.get("step", 0)) if kind in ("step", "cancelled") else 0
        except _BAD_FIELDS:
            out["damaged"] += 1
            continue
        if kind in ("done", "failed", "cancelled") and out["final"] is None:
            out["final"] = event
        if kind in ("step", "cancelled"):
            out["step"] = step
            if step:
                return


def model_is_whole(path: Path) -> bool:
    """A safetensors file whose header and data are complete (nothing torch-related is loaded)."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):  # a pipe or a folder: nothing to open (a pipe would block)
        return False
    try:
        with safe_open(str(path), "np"):
            return True
    except (OSError, SafetensorError, ValueError):
        return False


def metrics_are_whole(path: Path) -> bool:
    try:
        with open_for_reading(path) as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and all(k in data for k in ("RA", "UA", "TA", "MIA"))


def as_text(value: Any, limit: int = 300) -> str:
    """Any JSON value as one short line (a damaged file may put a list where a reason belongs)."""
    text = value if isinstance(value, str) else "" if value is None else json.dumps(value)[:limit]
    return " ".join(text.split())[:limit]


def as_number(value: Any) -> float | None:
    """A finite number, or None for anything else (text, a list, NaN, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None and abs(number) < 2**62 else None


def _exit_words(status: dict[str, Any]) -> str:
    if status.get("signal"):
        return f"killed by {as_text(status['signal'])}"
    if as_int(status.get("exit_code")) is not None:
        return f"exit code {as_int(status['exit_code'])}"
    return as_text(status.get("reason")) or "its worker is gone"


def _heartbeat(status: dict[str, Any]) -> tuple[bool, str]:
    """Whether another host's worker is alive by its heartbeat, and a note when the heartbeat is
    not to be trusted (not a number, or ahead of this machine's clock)."""
    if status.get("host") in (None, host()) or status.get("state") not in LIVE:
        return False, ""
    beat = as_number(status.get("heartbeat"))
    if beat is None:
        return False, "its heartbeat is not a number"
    age = time.time() - beat
    if age < -HEARTBEAT_SECONDS:
        return False, f"its heartbeat is {-age:.0f} s ahead of this machine's clock (not trusted)"
    return age < 3 * HEARTBEAT_SECONDS, ""


def _modified(run_dir: Path) -> float:
    times = []
    for name in (EVENTS_FILE, STATUS_FILE):
        with contextlib.suppress(OSError):
            times.append(os.stat(run_dir / name).st_mtime)
    return max(times, default=0.0)


def read_state(run_dir: str | Path) -> JobState:
    """The run's state from its files and its lock, never an exception: a damaged file is a state
    (or a note in `detail`), not a crash, whatever type any of its values has."""
    run_dir = Path(run_dir)
    status, status_problem = read_status(run_dir)
    ev = scan_events(run_dir)
    total, step = ev["total"], ev["step"]
    state_word = as_text(status.get("state"))
    base = dict(step=step, total=total, pid=as_int(status.get("pid")), host=as_text(status.get("host")),
                device=as_text(status.get("device")), updated=_modified(run_dir))
    holder = read_holder(run_dir)
    remote_alive, beat_note = _heartbeat(status)
    verdict = state_word in ("done", "failed", "cancelled") and (
        ev["final"] is not None or (run_dir / "metrics.json").exists())
    if (holder is not None or remote_alive) and not verdict:  # (a verdict is final before the lock goes)
        state = state_word if state_word in LIVE else "running"
        if state == "queued" and ev["total"]:
            state = "running"
        detail = as_text(status.get("note")) if state == "queued" else ""
        return JobState(state, detail or status_problem, **base)
    note = "; ".join(filter(None, [status_problem, beat_note, f"{ev['damaged']} damaged line(s) in events.jsonl"
                                   if ev["damaged"] else ""]))
    metrics = run_dir / "metrics.json"
    model = run_dir / "model.safetensors"
    if metrics.exists():
        if not metrics_are_whole(metrics):
            return JobState("damaged", "metrics.json is damaged", **base)
        if model.exists() and not model_is_whole(model):
            return JobState("damaged", "model.safetensors is incomplete", **base)
        return JobState("done", "" if model.exists() else "model not kept", **base)
    final = ev["final"] if isinstance(ev["final"], dict) else {}
    kind = as_text(final.get("kind")) or state_word
    if kind == "failed":
        reason = as_text(final.get("reason")) or as_text(status.get("reason")) or "no reason recorded"
        return JobState("failed", reason, **base)
    if kind == "cancelled":
        at = as_int(final["step"] if "step" in final else status.get("step", step)) or 0
        why = as_text(status.get("reason"))
        detail = "before it started" if not at and not total else f"at step {at}"
        return JobState("cancelled", detail + (f" ({why})" if why else ""), **base)
    if kind == "done":  # a done without its files is never trusted
        if model_is_whole(model):
            return JobState("damaged", "metrics.json is missing; the model is whole (coun-lab eval --model "
                            f"{model} measures it)", **base)
        return JobState("damaged", "the run says done but metrics.json is missing", **base)
    if not status and not ev["total"] and not (run_dir / "run.toml").exists():
        return JobState("damaged", "not a run directory (no run.toml)", **base)
    words = _exit_words(status) + (f" at step {step}" if step else " before its first step")
    return JobState("died", "; ".join(filter(None, [words, note])), **base)
