"""The worker of one job: `python -m coun_tui.engine.worker RUN_DIR ...`, started by jobs.launch.

Two processes, so that a death is always recorded:
- the supervisor (this module's main; torch is not imported in it, or, when the warm server forked
  it, imported but never run) waits for the job's turn in
  its device queue, starts the trainer, enforces a cancel's grace period, and when the trainer is
  gone without a verdict writes how it died (exit code or signal) into status.json;
- the trainer (`--trainer`) calls run_job(), the one function that runs a job, here as in any
  other backend (a Ray task calls the same function).
Both inherit the run's lock and the queue ticket, so the directory stays locked and the device
slot taken while either lives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from coun_tui.engine import UserError
from coun_tui.engine.events import Cancelled, Event, Failed, to_json
from coun_tui.engine.rundir import (
    CANCEL_FILE,
    EVENTS_FILE,
    HEARTBEAT_SECONDS,
    RunLock,
    host,
    read_status,
    scan_events,
    write_status,
)

if TYPE_CHECKING:
    from coun_tui.engine.runner import CancelFlag

TRAINER_STARTED = time.monotonic()


class CancelToken:
    """The engine's cancel token for a job: set by the run directory's cancel file (any client,
    any host that sees the directory) or by SIGTERM/SIGINT to this process."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CANCEL_FILE
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        if not self._set and self.path.exists():  # one stat per training step
            self._set = True
        return self._set


def run_job(run_dir: str | Path, cancel: CancelFlag | None = None) -> str:
    """Run the job in run_dir (its run.toml) to the end; returns the final state
    (done, failed or cancelled), which events.jsonl and status.json also hold."""
    from coun_tui.engine.events import Step
    from coun_tui.engine.jobs import resolved_reference
    from coun_tui.engine.records import find_reference, read_spec
    from coun_tui.engine.reference import load_view
    from coun_tui.engine.runner import prepare
    from coun_tui.engine.runs import load_reference, record

    run_dir = Path(run_dir)
    cancel = cancel if cancel is not None else CancelToken(run_dir)
    status, _ = read_status(run_dir)
    write_status(run_dir, state="running", pid=os.getpid(), host=host(), started=time.time())
    try:
        set_threads(status.get("threads"))
        spec = read_spec(run_dir)
        spec.reference = resolved_reference(spec.reference, run_dir)
        prep = prepare(spec)
        search = status.get("find_reference_in")
        if search and prep.reference is None and spec.method != "retrain" and len(prep.split.forget):
            # A Retrain on this split may have finished while this job waited for its turn.
            ref = find_reference(Path(search), prep.dataset.name, prep.split)
            if ref is not None:
                prep.reference, prep.spec.reference = load_reference(ref, prep.split), str(ref)
                prep.reference_view = load_view(ref, prep.split.forget, len(prep.dataset.test_y))
    except Exception as exc:  # noqa: BLE001 - bad input or a broken file: the job's verdict, one line
        reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        (run_dir / EVENTS_FILE).unlink(missing_ok=True)
        _append_event(run_dir, Failed(reason))
        write_status(run_dir, state="failed", reason=reason)
        return "failed"
    write_status(run_dir, device=str(prep.device), load_seconds=round(time.monotonic() - TRAINER_STARTED, 3))
    final, reason, beat, step = "failed", "", time.monotonic(), 0
    try:
        for event in record(prep, run_dir, cancel):
            if isinstance(event, Step):
                step = event.step
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    write_status(run_dir, step=step)
                    beat = time.monotonic()
            elif event.kind in ("done", "failed", "cancelled"):
                final = event.kind
                reason = getattr(event, "reason", "")
        write_status(run_dir, state=final, step=step, reason=reason if final == "failed" else "", ended=time.time())
    except Exception as exc:  # noqa: BLE001 - e.g. the disk filled up under the event log
        reason = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            write_status(run_dir, state="failed", step=step, reason=reason)
        final = "failed"
    return final


def set_threads(threads: int | None) -> None:
    """torch's threads as the launcher asked (--cpus-per-run), the same for every backend: CPU
    results depend on the thread count, so equal settings give equal numbers anywhere."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _trainer(run_dir: Path) -> int:
    token = CancelToken(run_dir)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: token.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    run_job(run_dir, token)
    return 0  # the verdict is in the run directory


def _supervise(run_dir: Path, args: argparse.Namespace) -> int:
    from coun_tui.engine.devqueue import Ticket
    from coun_tui.engine.jobs import CANCEL_GRACE_SECONDS

    cancel_file = run_dir / CANCEL_FILE
    for sig in (signal.SIGTERM, signal.SIGINT):  # `kill PID` cancels cleanly
        signal.signal(sig, lambda *_: _ask_cancel(cancel_file))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    write_status(run_dir, supervisor=os.getpid(), pid=os.getpid(), host=host())
    lock = RunLock(args.lock_fd)
    with contextlib.suppress(OSError):  # the launcher that took the lock has usually exited by now
        lock.set_holder(role="worker")
    ticket = Ticket.adopt(args.ticket, args.ticket_fd, args.device)
    try:
        queued = lambda ahead: write_status(run_dir, note=ticket.waiting_note(ahead))  # noqa: E731
        try:
            turn = ticket.wait_turn(cancel_file.exists, queued)
        except (OSError, UserError) as exc:  # a queue slot or limit that is no file: the cause, not a death
            reason = f"the {args.device} queue cannot be used: {exc}"
            _append_event(run_dir, Failed(reason))
            write_status(run_dir, state="failed", reason=reason, note="")
            return 0
        if not turn:
            _append_event(run_dir, Cancelled(0))
            write_status(run_dir, state="cancelled", note="", reason="")
            return 0
        write_status(run_dir, note="")
        child = _start_trainer(run_dir, (args.lock_fd, ticket.fd, ticket.slot_fd))
        write_status(run_dir, pid=child.pid)
        with contextlib.suppress(OSError):
            lock.set_holder(role="worker", trainer=child.pid)
        asked = None
        while child.poll() is None:
            if asked is None and cancel_file.exists():
                asked = time.monotonic()
            if asked is not None and time.monotonic() - asked > CANCEL_GRACE_SECONDS:
                child.kill()
                child.wait()
                break
            time.sleep(0.2)
        _record_exit(run_dir, child.wait(), asked is not None)
        return 0
    finally:
        ticket.release()
        os.close(args.lock_fd)


class ForkedTrainer:
    """The trainer as a fork of a warm supervisor (see engine/warm.py), with subprocess.Popen's
    poll/kill/wait, so the supervisor treats it as it treats a fresh process."""

    def __init__(self, run_dir: Path):
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                global TRAINER_STARTED
                TRAINER_STARTED = time.monotonic()
                code = _trainer(run_dir)
            except BaseException:  # noqa: BLE001 - never return into the supervisor's loop
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def _start_trainer(run_dir: Path, fds: tuple[int, ...]) -> ForkedTrainer | subprocess.Popen[bytes]:
    """The trainer: forked where torch is already imported (a warm worker, in which no torch
    operation has run, so no torch thread exists yet), else a fresh interpreter."""
    if "torch" in sys.modules:
        return ForkedTrainer(run_dir)
    return subprocess.Popen([sys.executable, "-m", "coun_tui.engine.worker", str(run_dir), "--trainer"],
                            pass_fds=fds, stdin=subprocess.DEVNULL)


def _ask_cancel(cancel_file: Path) -> None:
    from coun_tui.engine.files import atomic_write

    with contextlib.suppress(OSError, UserError), atomic_write(cancel_file, "w") as fh:
        fh.write(f"{os.getpid()} signal\n")


def _append_event(run_dir: Path, event: Event) -> None:
    from coun_tui.engine.files import append_line, open_append

    with open_append(run_dir / EVENTS_FILE) as log:
        append_line(log, to_json(event))


def _record_exit(run_dir: Path, code: int, cancel_asked: bool) -> None:
    """The trainer is gone: if it left no verdict, write one (cancelled, or died with its exit)."""
    ev = scan_events(run_dir)
    final = (ev["final"] or {}).get("kind")
    if final:
        if read_status(run_dir)[0].get("state") != final:  # it died between its last two writes
            write_status(run_dir, state=final)
        return
    if cancel_asked:
        _append_event(run_dir, Cancelled(ev["step"]))
        write_status(run_dir, state="cancelled", step=ev["step"],
                     reason="stopped by force: it did not stop within the grace period")
        return
    if code < 0:
        write_status(run_dir, state="died", step=ev["step"], signal=signal.Signals(-code).name, exit_code=None)
    else:
        write_status(run_dir, state="died", step=ev["step"], exit_code=code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coun_tui.engine.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--trainer", action="store_true")
    parser.add_argument("--lock-fd", type=int)
    parser.add_argument("--ticket")
    parser.add_argument("--ticket-fd", type=int)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.trainer:
        return _trainer(args.run_dir)
    return _supervise(args.run_dir, args)


if __name__ == "__main__":
    sys.exit(main())
