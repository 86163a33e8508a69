"""Training for the lab: every run is a thread worker that consumes `engine.runs.record` (which
also writes the run directory) and posts its events as messages; a threading.Event per run is the
cancel token the engine checks every step. Runs on the same device wait their turn in a FIFO
queue; runs on different devices train at once. The UI thread alone touches widgets.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from textual import work
from textual.worker import WorkerState, get_current_worker

from coun_tui.engine import UserError
from coun_tui.engine.events import Cancelled, Embedding, Failed, Step
from coun_tui.engine.runner import RunSpec
from coun_tui.engine.runs import spec_to_dict
from coun_tui.tui.messages import RunEvent, RunFinished, RunPrepared, RunStatus, RunSteps
from coun_tui.tui.runlog import METRICS, RunLog, describe_spec, find_reference, read_metrics, write_features
from coun_tui.tui.widgets.run_pane import RunPane, short_path

STEP_POST_SECONDS = 0.25  # a worker batches steps at most this long before posting them


def device_key(name: str) -> str:
    """The queue a run waits in: one per physical device (auto resolves as the engine does)."""
    if name == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if name == "cuda" else name


def forget_tag(spec: RunSpec) -> str:
    f = spec.forget
    if f.classes:
        return "class" + "+".join(str(c) for c in f.classes)
    if f.fraction is not None:
        return f"frac{f.fraction * 100:g}s{f.seed}"
    return "none"


class Training:
    """CounLab's runs: start, queue, train, follow their events, cancel, stop on quit."""

    def start_run(self, spec: RunSpec, class_names: list[str] | None = None) -> RunPane:
        """Open a pane for `spec` and train it in a background thread (after the runs already
        waiting for its device); returns the pane."""
        self._seq += 1
        run_id = f"run-{self._seq}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = self.runs_dir / f"{stamp}-{spec.method}{'+cl' if spec.cl else ''}-{forget_tag(spec)}"
        n = 2
        while out_dir.exists() or any(p.runlog.run_dir == out_dir for p in self.panes()):
            out_dir = out_dir.with_name(f"{out_dir.name.rsplit('~', 1)[0]}~{n}")
            n += 1
        spec_dict = spec_to_dict(spec)
        log = RunLog(title=describe_spec(spec_dict, class_names), run_dir=out_dir, spec=spec_dict)
        device = device_key(spec.device)
        with self._queue:
            queue = self._queues.setdefault(device, [])
            if queue:
                log.status, log.queue_note = "queued", f"{len(queue)} ahead on {device}"
            queue.append(run_id)
        pane = self._add_pane(run_id, log, class_names, live=True)
        cancel = threading.Event()
        self._cancels[run_id] = cancel
        self._run_workers[run_id] = self._train(run_id, spec, out_dir, cancel, device)
        return pane

    def _wait_turn(self, run_id: str, device: str, cancel: threading.Event) -> bool:
        """Block until `run_id` is first in its device's queue (True) or is cancelled (False)."""
        worker = get_current_worker()
        last = None
        with self._queue:
            queue = self._queues.setdefault(device, [])
            while queue and queue[0] != run_id:
                if cancel.is_set() or worker.is_cancelled:
                    self._leave(run_id, device)
                    return False
                ahead = queue.index(run_id)
                if ahead != last:
                    note = f"{ahead} ahead on {device}"
                    self.post_message(RunStatus(run_id, "queued", note))
                    last = ahead
                self._queue.wait(0.2)
        if last is not None:
            self.post_message(RunStatus(run_id, "preparing"))
        return True

    def _leave(self, run_id: str, device: str) -> None:
        with self._queue:
            queue = self._queues.get(device, [])
            if run_id in queue:
                queue.remove(run_id)
            self._queue.notify_all()

    @work(thread=True, exit_on_error=False, group="runs")
    def _train(self, run_id: str, spec: RunSpec, out_dir: Path, cancel: threading.Event, device: str) -> str:
        if not self._wait_turn(run_id, device, cancel):
            self.post_message(RunEvent(run_id, Cancelled(0)))
            self.post_message(RunFinished(run_id, "cancelled"))
            return "cancelled"
        try:
            return self._train_now(run_id, spec, out_dir, cancel)
        finally:
            self._leave(run_id, device)

    def _train_now(self, run_id: str, spec: RunSpec, out_dir: Path, cancel: threading.Event) -> str:
        from coun_tui.engine.runner import prepare
        from coun_tui.engine.runs import load_reference, record

        worker = get_current_worker()
        post = self.post_message
        status = "failed"
        try:
            prep = prepare(spec)
            if prep.reference is None and spec.method != "retrain" and len(prep.split.forget):
                # A Retrain on this split may have finished while this run waited in the queue.
                ref = find_reference(self.runs_dir, prep.dataset.name, prep.split)
                if ref is not None:
                    prep.reference, prep.spec.reference = load_reference(ref, prep.split), str(ref)
        except UserError as exc:
            post(RunEvent(run_id, Failed(str(exc))))
            post(RunFinished(run_id, status))
            return status
        except Exception as exc:  # noqa: BLE001 - any failure is the run's, never the app's
            post(RunEvent(run_id, Failed(f"{type(exc).__name__}: {exc}")))
            post(RunFinished(run_id, status))
            return status
        post(RunPrepared(run_id, {"classes": prep.dataset.classes, "spec": spec_to_dict(prep.spec),
                                  "title": describe_spec(spec_to_dict(spec), prep.dataset.classes)}))
        buffer: list[Step] = []
        last_post = 0.0
        try:
            for event in record(prep, out_dir, cancel):
                if worker.is_cancelled:
                    cancel.set()
                if isinstance(event, Step):
                    buffer.append(event)
                    if time.monotonic() - last_post >= STEP_POST_SECONDS:
                        post(RunSteps(run_id, buffer))
                        buffer, last_post = [], time.monotonic()
                    continue
                if buffer:
                    post(RunSteps(run_id, buffer))
                    buffer = []
                if isinstance(event, Embedding) and event.features is not None:
                    with contextlib.suppress(Exception):  # only t-SNE of a reopened run needs it
                        write_features(out_dir, event.features)
                post(RunEvent(run_id, event))
                status = event.kind if event.kind in ("done", "failed", "cancelled") else status
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk while saving
            if buffer:
                post(RunSteps(run_id, buffer))
                buffer = []
            post(RunEvent(run_id, Failed(f"{type(exc).__name__}: {exc}")))
            status = "failed"
        if buffer:
            post(RunSteps(run_id, buffer))
        post(RunFinished(run_id, status))
        return status

    def on_run_status(self, message: RunStatus) -> None:
        if (pane := self.pane(message.run_id)) is not None and not pane.runlog.finished:
            pane.runlog.status, pane.runlog.queue_note = message.status, message.note
            pane._dirty.add("all")
            self._update_tab(pane)
            self._compare_dirty = True

    def on_run_steps(self, message: RunSteps) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.apply_steps(message.steps)
            self._compare_progress = True

    def on_run_event(self, message: RunEvent) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.apply(message.event)
            if message.event.kind in ("started", "done", "failed", "cancelled"):
                self._update_tab(pane)
            if message.event.kind != "embedding":
                self._compare_dirty = True
            if isinstance(message.event, Failed):
                self.notify(message.event.reason, title=f"{pane.runlog.title}: failed", severity="error", timeout=8)

    def on_run_prepared(self, message: RunPrepared) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.set_facts(message.facts)

    def on_run_finished(self, message: RunFinished) -> None:
        self._cancels.pop(message.run_id, None)
        self._run_workers.pop(message.run_id, None)
        pane = self.pane(message.run_id)
        if pane is None:
            return
        pane.flush()
        self._update_tab(pane)
        self._compare_dirty = True
        self._save_session()
        if message.status == "done":
            self.notify(f"saved in {short_path(pane.runlog.run_dir)}", title=f"{pane.runlog.title}: done")
            if pane.runlog.spec.get("method") == "retrain":
                self._share_reference(pane.runlog.run_dir)

    def _share_reference(self, ref_dir: Path | None) -> None:
        """A Retrain run finished: it becomes the reference of the panel and of panes on its split."""
        self._ref_cache.clear()
        self.setup_panel.refresh_reference()
        if ref_dir is None:
            return
        from coun_tui.engine.forget import Split

        try:
            ref_split = Split.load(ref_dir / "split.npz")
        except UserError:
            return
        m = read_metrics(ref_dir) or {}
        ref = {k: float(m[k]) for k in METRICS if k in m}
        for pane in self.panes():
            if pane.runlog.run_dir == ref_dir or pane.runlog.reference or pane.runlog.run_dir is None:
                continue
            with contextlib.suppress(Exception):
                if Split.load(pane.runlog.run_dir / "split.npz").same_as(ref_split) and len(ref) == 4:
                    pane.set_reference(ref)
        self._compare_dirty = True

    def action_cancel(self) -> None:
        pane = self.active_pane
        if pane is None:
            self.notify("no run is shown", severity="warning")
            return
        cancel = self._cancels.get(pane.run_id)
        if cancel is None:
            self.notify("this run is not running", severity="warning")
            return
        cancel.set()
        if pane.runlog.status == "queued":
            self.notify("cancelled before it started", title=pane.runlog.title)
        else:
            self.notify("cancelling: the run stops at its next step", title=pane.runlog.title)

    async def stop_runs(self) -> None:
        """Set every cancel token (queued runs leave their queue) and wait for the workers to return."""
        for cancel in self._cancels.values():
            cancel.set()
        running = [w for w in self.workers if w.group in ("runs", "tsne", "model")
                   and w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if running:
            self.notify(f"stopping {len(running)} background job(s)…", timeout=3)
        for w in running:
            with contextlib.suppress(Exception):
                await w.wait()
