"""Runs as Ray tasks (`--backend ray`): each run is one Ray task calling worker.run_job, the same
code as a local job's trainer, on the node Ray places it.

This process is the driver (a sweep, `coun-lab unlearn`, the app). It holds each run's lock from
launch to verdict, so a Ray run reads like a local job (queued, running, then its verdict) and a
second writer is refused; a pump thread here writes what comes back from the tasks and turns a
cancel file (`c` in the app, `coun-lab runs cancel RUN`) into ray.cancel. A Ray run belongs to
its driver: it ends when the driver ends.

Storage:
- shared: every node sees the runs directory (at the same path); a task writes its run directory.
- driver: no shared storage. A task works in a temporary directory on its node, relays its event
  lines, status, split and embedding through a ray.util.queue.Queue while it trains, and returns
  the model and metrics; the pump writes them all into the run directory here.

A method's task takes its Retrain task's result as an argument, so Ray starts it once the
Retrain has finished (in driver mode that result carries the reference's files too). A task
whose worker process or node dies is retried from scratch (Ray's max_retries), its directory
cleared first. Ray is imported only here, and only when this backend is chosen.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Required, TypedDict

from coun_tui.engine import UserError
from coun_tui.engine.backends import threads_for
from coun_tui.engine.events import Cancelled, Failed
from coun_tui.engine.files import atomic_write, open_append
from coun_tui.engine.reference import REFERENCE_FILE
from coun_tui.engine.rundir import (
    CANCEL_FILE,
    EVENTS_FILE,
    STATUS_FILE,
    RunLock,
    check_out_dir,
    clear_for_writing,
    host,
    read_status,
    scan_events,
    write_status,
)

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.exceptions import RayError
    from ray.util.queue import Queue

    from coun_tui.engine.runner import RunSpec

MAX_RETRIES = 2  # attempts after the first when a task's worker process or node dies
PUMP_SECONDS = 0.1  # how often the driver writes what came back
RELAY_SECONDS = 0.25  # how often a task relays its new event lines (driver storage)
KEPT_ON_RETRY = ("run.toml", STATUS_FILE, CANCEL_FILE)  # the launch's own files
RELAYED_FILES = ("split.npz", "embedding.npy", STATUS_FILE)  # sent whenever they change
# What a finished task returns beside its model (driver storage), and what a method's task gets of
# its Retrain: enough to measure gaps (metrics.json, split.npz) and agreement/CKA (reference.npz).
RESULT_FILES = ("metrics.json", "split.npz", "embedding.npy", REFERENCE_FILE)
REFERENCE_FILES = ("metrics.json", "split.npz", REFERENCE_FILE)
RELAYED_STATUS = ("pid", "host", "device", "step", "started", "load_seconds")
FINAL_KINDS = ("done", "failed", "cancelled")
TEMP_PREFIX = "coun-lab-ray-"  # a task's working folder on its node (driver storage)

Files = dict[str, bytes]  # file name -> its bytes
Relayed = tuple[str, str, Any]  # (run key, "start" | "events" | "file", its payload) on the relay queue


class Summary(TypedDict, total=False):
    """What a task returns as its verdict (and what a method's task gets of its Retrain)."""

    state: Required[str]
    reason: str
    status: dict[str, Any]  # its status.json
    files: Files  # driver storage: RESULT_FILES (a reference: REFERENCE_FILES)


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address`, or start a local Ray (this machine's CPUs and GPUs)."""
    import ray

    if ray.is_initialized():
        return
    # log_to_driver off: workers never print over the app
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        token = " and that this machine has the head's token (RAY_AUTH_TOKEN or ~/.ray/auth_token)" if address else ""
        raise UserError(f"cannot start or reach {where}: {detail}; check --address (the head node's "
                        f"`ray status` shows it){token}, or leave it out to start a local Ray") from None


def cluster_resources() -> dict[str, float]:
    """The cluster's total resources by name ("CPU", "GPU", ...)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
    return resources


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else path


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.splitlines(keepends=True) if line.strip()]


def _is_final(line: bytes) -> bool:
    try:
        return json.loads(line).get("kind") in FINAL_KINDS
    except (ValueError, AttributeError):
        return False


def _append(run_dir: Path, lines: list[bytes]) -> None:
    if lines:
        with open_append(run_dir / EVENTS_FILE) as log:  # never through a planted link
            log.write(b"".join(lines))  # whole lines, one write


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclass
class _Run:
    """A run this driver launched and has not written the verdict of yet."""

    run_dir: Path
    lock: RunLock
    refs: list[ObjectRef[Any]]  # [summary, outputs] of its task
    attempts: int = 0  # driver storage: attempts that started on a node
    held: list[bytes] = field(default_factory=list)  # its final event line, written after its files
    cancel_asked: float | None = None
    forced: bool = False


class RayBackend:
    """Jobs as Ray tasks; see the module's doc. `gpus_per_run` may be a fraction (0.25: four runs
    share a GPU); `cpus_per_run` (default 1) is reserved in Ray and sets torch's threads."""

    name = "ray"
    schedules = True

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: float | None = None, storage: str = "shared", max_retries: int = MAX_RETRIES):
        import ray

        connect(address)
        self.address, self.storage = address, storage
        self.gpus = float(gpus_per_run or 0)
        self.cpus = float(cpus_per_run if cpus_per_run is not None else 1)
        self.threads = threads_for(self.cpus)
        self._task = ray.remote(run_task).options(num_cpus=self.cpus, num_gpus=self.gpus, num_returns=2,
                                                  max_retries=max_retries, retry_exceptions=False)
        self._relay: Queue | None = None
        if storage == "driver":
            from ray.util.queue import Queue

            self._relay = Queue(actor_options={"num_cpus": 0})
        self._runs: dict[str, _Run] = {}  # by the run directory's resolved path
        self._sources: dict[tuple[str, int], ObjectRef[bytes]] = {}  # a checkpoint's bytes in Ray's object store
        self._guard = threading.RLock()
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None
        atexit.register(self.close)

    def describe(self) -> str:
        res = cluster_resources()
        share = f"{self.gpus:g} GPU" if self.gpus else f"{self.cpus:g} CPU"
        line = (f"Ray at {self.address or 'a local Ray'} ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; "
                f"{share} per run; {self.storage} storage)")
        if self.gpus and not res.get("GPU"):  # an autoscaling cluster may still add one: say it, do not refuse
            line += ("; no GPU in the cluster yet: the runs wait for a GPU node (without --gpus-per-run "
                     "they train on CPUs)")
        return line

    # --- launching ------------------------------------------------------------------------------

    def _placed(self, spec: RunSpec) -> RunSpec:
        """Ray chooses each run's device: a GPU share with --gpus-per-run, else the CPU."""
        want = "cuda" if self.gpus else "cpu"
        if spec.device not in ("auto", want):
            raise UserError(f"--device {spec.device} with --backend ray: Ray places each run; ask for a GPU "
                            "share with --gpus-per-run (0.25: four runs a GPU), or none for the CPU")
        return replace(spec, device=want)

    def check(self, spec: RunSpec) -> str:
        from coun_tui.engine.runner import check

        placed = self._placed(spec)
        check(replace(placed, device="cpu"))  # the driver may have no GPU: the device is the node's
        return placed.device

    def launch(self, spec: RunSpec, out: str | Path, find_reference_in: str | Path | None = None,
               after: Path | None = None, checked: str | None = None) -> Path:
        """Submit `spec` as a Ray task writing `out` (after `after`'s task, a Retrain this backend
        launched, has finished); returns the run directory. `checked`: an earlier check(spec)
        passed (made without the reference when that Retrain had not finished)."""
        import tomli_w

        from coun_tui.engine.jobs import stored_reference
        from coun_tui.engine.runs import spec_to_dict

        if checked is None:
            self.check(spec)
        spec = self._placed(spec)
        spec = replace(spec, model=_absolute(spec.model), data_root=_absolute(spec.data_root),
                       reference=_absolute(spec.reference))
        run_dir = check_out_dir(out, spec.model)
        with self._guard:
            chained = self._runs.get(str(Path(after).resolve())) if after is not None else None
        reference: ObjectRef[Any] | Summary | None = chained.refs[0] if chained else None
        if reference is None and spec.reference and self.storage == "driver":
            reference = _reference_files(Path(spec.reference))
        source = self._source(spec.model) if spec.model and self.storage == "driver" else None
        lock = RunLock.acquire(run_dir)
        try:
            clear_for_writing(run_dir)
            text = tomli_w.dumps(spec_to_dict(replace(spec, reference=stored_reference(spec.reference, run_dir))))
            with atomic_write(run_dir / "run.toml") as fh:
                fh.write(text.encode())
            fields = dict(state="queued", pid=None, host=host(), device=spec.device, launched=time.time(),
                          backend="ray", storage=self.storage, attempt=0, threads=self.threads,
                          launch=secrets.token_hex(8),
                          note="waiting for its Retrain" if chained else "waiting for a Ray worker")
            if find_reference_in and self.storage == "shared":
                fields["find_reference_in"] = str(Path(find_reference_in).resolve())
            write_status(run_dir, **fields)
            key = str(run_dir.resolve())
            # Ray's stubs know neither num_returns (two refs come back, not one) nor that a ref may stand
            # for a wider type (their ObjectRef is invariant: ObjectRef[bytes] for `bytes | None`).
            refs: list[ObjectRef[Any]] = self._task.remote(  # type: ignore[assignment]  # num_returns=2
                key, text, fields, self.storage, source, reference, self._relay)  # type: ignore[arg-type]  # source
        except BaseException:
            lock.release()
            raise
        with self._guard:
            self._runs[key] = _Run(run_dir, lock, list(refs))
        self._start_pump()
        return run_dir

    def _source(self, model: str) -> ObjectRef[bytes]:
        import ray

        key = (model, Path(model).stat().st_mtime_ns)
        if key not in self._sources:
            self._sources[key] = ray.put(Path(model).read_bytes())
        return self._sources[key]

    # --- the pump: what comes back from the tasks ------------------------------------------------

    def _start_pump(self) -> None:
        with self._guard:
            if self._pump is None:
                self._stop.clear()
                self._pump = threading.Thread(target=self._pump_loop, name="coun-lab-ray-pump", daemon=True)
                self._pump.start()

    def _pump_loop(self) -> None:
        """Runs while this driver has runs going (started again by the next launch)."""
        while not self._stop.is_set():
            try:
                self.pump()
            except Exception as exc:  # noqa: BLE001 - e.g. Ray shutting down: say so, keep the app alive
                logging.getLogger(__name__).warning("ray backend: %s", _one_line(exc))
            with self._guard:
                if not self._runs:
                    self._pump = None
                    return
            self._stop.wait(PUMP_SECONDS)

    def pump(self) -> None:
        """Write relayed events and files, the verdicts of finished tasks, and pass cancels on."""
        import ray

        with self._guard:
            self._drain()
            runs = list(self._runs.values())
            if not runs:
                return
            ready, _ = ray.wait([r.refs[0] for r in runs], num_returns=len(runs), timeout=0)
            done = set(ready)
            for run in runs:
                if run.refs[0] in done:
                    self._finish(run)
                else:
                    self._pass_cancel(run)

    def _drain(self) -> None:
        if self._relay is None:
            return
        n = self._relay.qsize()
        if not n:
            return
        for key, kind, payload in self._relay.get_nowait_batch(n):
            run = self._runs.get(key)
            if run is None:
                continue
            if kind == "start":
                run.attempts += 1
                if run.attempts > 1:  # a retry starts from scratch
                    clear_for_writing(run.run_dir, keep=KEPT_ON_RETRY)
                    run.held.clear()
                write_status(run.run_dir, state="running", attempt=run.attempts, note="", **payload)
            elif kind == "events":
                lines = _lines(payload)
                run.held += [line for line in lines if _is_final(line)]
                _append(run.run_dir, [line for line in lines if not _is_final(line)])
            elif kind == "file":
                name, data = payload
                if name == STATUS_FILE:
                    status = json.loads(data or b"{}")
                    write_status(run.run_dir, **{k: status[k] for k in RELAYED_STATUS if k in status})
                else:
                    with atomic_write(run.run_dir / name) as fh:
                        fh.write(data)

    def _pass_cancel(self, run: _Run) -> None:
        """A cancel file (from any client) cancels the task; one that has not stopped after the
        grace period is killed."""
        import ray

        from coun_tui.engine.jobs import CANCEL_GRACE_SECONDS

        if run.cancel_asked is None and (run.run_dir / CANCEL_FILE).exists():
            run.cancel_asked = time.monotonic()
            ray.cancel(run.refs[0])  # the task's SIGINT handler sets its cancel token
        elif run.cancel_asked is not None and not run.forced and \
                time.monotonic() - run.cancel_asked > CANCEL_GRACE_SECONDS:
            run.forced = True
            ray.cancel(run.refs[0], force=True)

    def _finish(self, run: _Run) -> None:
        import ray
        from ray.exceptions import RayError, TaskCancelledError

        summary: Summary | None = None
        outputs: Files | None = None
        error: RayError | None = None
        try:
            summary = ray.get(run.refs[0])
            outputs = ray.get(run.refs[1])
        except TaskCancelledError:
            summary = {"state": "cancelled", "reason": "stopped by force: it did not stop within the grace "
                                                       "period" if run.forced else ""}
        except RayError as exc:
            error = exc
        self._drain()  # every line the task relayed, before its verdict
        try:
            self._write_verdict(run, summary, outputs, error)
        finally:
            run.lock.release()
            self._runs.pop(str(run.run_dir.resolve()), None)

    def _write_verdict(self, run: _Run, summary: Summary | None, outputs: Files | None,
                       error: RayError | None) -> None:
        from coun_tui.engine.worker import _append_event

        run_dir = run.run_dir
        files = summary.get("files", {}) if summary else {}
        for name, data in {**files, **(outputs or {})}.items():
            if name != "metrics.json":
                with atomic_write(run_dir / name) as fh:
                    fh.write(data)
        if "metrics.json" in files:  # last: it marks the run finished
            with atomic_write(run_dir / "metrics.json") as fh:
                fh.write(files["metrics.json"])
        _append(run_dir, run.held)
        ev = scan_events(run_dir)
        written = (ev["final"] or {}).get("kind")
        if error is not None:
            started = read_status(run_dir)[0].get("state") != "queued"
            if started:  # its worker or node died on every attempt
                write_status(run_dir, state="died", step=ev["step"], ended=time.time(),
                             reason=f"its Ray worker died ({_one_line(error)})")
                return
            summary = {"state": "failed", "reason": f"it never started: {_one_line(error)}"}
        assert summary is not None  # _finish has one unless Ray raised
        state, reason = summary["state"], summary.get("reason", "")
        if not written:  # the task could not write its own verdict (or was cancelled before it started)
            _append_event(run_dir, Failed(reason) if state == "failed" else Cancelled(ev["step"]))
        relayed = {k: v for k, v in (summary.get("status") or {}).items() if k in RELAYED_STATUS}
        write_status(run_dir, **{**relayed, "state": state, "step": ev["step"], "ended": time.time(),
                                 "reason": reason or (summary.get("status") or {}).get("reason", "")})

    # --- leaving ----------------------------------------------------------------------------------

    def live(self) -> list[Path]:
        with self._guard:
            return [r.run_dir for r in self._runs.values()]

    def close(self, timeout: float | None = None) -> None:
        """Cancel this driver's runs that are still going (they could not outlive it) and write
        their verdicts; then stop the pump."""
        from coun_tui.engine import jobs

        live = self.live()
        for run_dir in live:
            jobs.cancel(run_dir)
        deadline = time.monotonic() + (timeout if timeout is not None else jobs.CANCEL_GRACE_SECONDS + 15)
        while self.live() and time.monotonic() < deadline and self._pump is not None:
            time.sleep(PUMP_SECONDS)
        self._stop.set()
        pump = self._pump
        if pump is not None:
            pump.join(timeout=5)


def _reference_files(path: Path) -> Summary:
    """A finished Retrain on this machine, as the files a task on another node needs."""
    if path.is_dir():
        files = {name: (path / name).read_bytes() for name in REFERENCE_FILES if (path / name).is_file()}
    else:
        files = {"reference.safetensors": path.read_bytes()}
    return {"state": "done", "files": files}


# --- in the Ray worker ------------------------------------------------------------------------


class _Forwarder:
    """Driver storage: relays a run's new event lines and changed files to the driver while it
    trains (a thread of the task; the last flush happens after the run ends)."""

    def __init__(self, key: str, work: Path, relay: Queue):
        self.key, self.work, self.relay = key, work, relay
        self.offset = 0
        self.seen: dict[str, tuple[int, int, int]] = {}  # a relayed file's (mtime, size, inode)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(RELAY_SECONDS):
            with contextlib.suppress(Exception):  # a relay hiccup never stops training; the last flush retries
                self.flush()

    def flush(self) -> None:
        with self._lock:
            items: list[Relayed] = []
            data = b""
            try:  # events first: a file an event refers to is written before it, so it is caught below
                with open(self.work / EVENTS_FILE, "rb") as fh:
                    fh.seek(self.offset)
                    data = fh.read()
            except OSError:
                pass
            data = data[: data.rfind(b"\n") + 1]
            for name in RELAYED_FILES:
                try:
                    st = (self.work / name).stat()
                    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                    if self.seen.get(name) != stamp:
                        items.append((self.key, "file", (name, (self.work / name).read_bytes())))
                        self.seen[name] = stamp
                except OSError:
                    continue
            if data:
                items.append((self.key, "events", data))
            if items:
                self.relay.put_nowait_batch(items)
                self.offset += len(data)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()


def run_task(key: str, spec_text: str, fields: dict[str, Any], storage: str, source: bytes | None,
             reference: Summary | None, relay: Queue | None) -> tuple[Summary, Files | None]:
    """One run in a Ray worker: set up its directory (the run directory itself, or a temporary
    one on this node), run worker.run_job, and return (summary, outputs): the verdict, and in
    driver storage the files the driver writes (the model in `outputs`, apart, so a method's task
    that waits on its Retrain's summary never fetches a model)."""
    import signal

    from coun_tui.engine import worker

    worker.TRAINER_STARTED = time.monotonic()  # status.json's load_seconds: this task's own load time
    run_dir = Path(key)
    tmp = None
    previous = signal.getsignal(signal.SIGINT)
    try:
        if storage == "shared":
            status, _ = read_status(run_dir)
            if status.get("launch") != fields["launch"]:
                return {"state": "failed", "reason": f"the run directory {run_dir} is not visible on {host()}: put "
                        "the runs directory on storage every node sees, or use --storage driver"}, None
            work = run_dir
            clear_for_writing(work, keep=KEPT_ON_RETRY)  # an earlier attempt's files go: retried from scratch
            write_status(work, attempt=int(status.get("attempt", 0)) + 1, note="")
        else:
            # Named by the launch, so a retry on this node removes what a killed attempt left.
            tmp = Path(tempfile.gettempdir()) / f"{TEMP_PREFIX}{fields['launch']}"
            shutil.rmtree(tmp, ignore_errors=True)
            work = tmp / "run"
            work.mkdir(parents=True)
            _write_inputs(tmp, work, spec_text, fields, source, reference)
            assert relay is not None  # driver storage always has its relay
            relay.put((key, "start", {"pid": os.getpid(), "host": host()}))
        if reference is not None and reference.get("state") != "done":
            why = f" ({reference['reason']})" if reference.get("reason") else ""
            return {"state": "failed", "reason": f"its Retrain ended {reference.get('state')}{why}: no reference "
                    "to measure gaps against"}, None
        token = worker.CancelToken(work)
        signal.signal(signal.SIGINT, lambda *_: token.set())  # ray.cancel interrupts the main thread
        forwarder = _Forwarder(key, work, relay) if relay is not None else None
        try:
            final = worker.run_job(work, token)
        finally:
            if forwarder is not None:
                forwarder.stop()
        summary: Summary = {"state": final, "status": read_status(work)[0]}
        if storage == "shared":
            return summary, None
        summary["files"] = {name: (work / name).read_bytes() for name in RESULT_FILES if (work / name).is_file()}
        model = work / "model.safetensors"
        return summary, ({"model.safetensors": model.read_bytes()} if model.is_file() else None)
    finally:
        signal.signal(signal.SIGINT, previous)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_inputs(tmp: Path, work: Path, spec_text: str, fields: dict[str, Any], source: bytes | None,
                  reference: Summary | None) -> None:
    """Driver storage: the run's spec, its source checkpoint and its reference, on this node."""
    import tomllib

    import tomli_w

    spec = tomllib.loads(spec_text)
    if source is not None:
        (tmp / "source.safetensors").write_bytes(source)
        spec["model"] = str(tmp / "source.safetensors")
    spec.pop("reference", None)
    files = reference.get("files", {}) if reference else {}
    if "metrics.json" in files:
        (tmp / "reference").mkdir()
        for name, data in files.items():
            (tmp / "reference" / name).write_bytes(data)
        spec["reference"] = str(tmp / "reference")
    elif "reference.safetensors" in files:
        (tmp / "reference.safetensors").write_bytes(files["reference.safetensors"])
        spec["reference"] = str(tmp / "reference.safetensors")
    (work / "run.toml").write_text(tomli_w.dumps(spec))
    write_status(work, **{**fields, "note": ""})
