"""Runs in the lab are jobs (engine/jobs.py): launching one starts a worker process that outlives
the app; a timer polls the jobs' event logs (engine.jobs.JobWatcher, plain Python) and feeds each
pane; quitting leaves them running unless asked to cancel, and the next start reattaches to them.
With `coun-lab tui --backend ray` runs are Ray tasks instead (engine/backends.py): their files
come the same way, and they end with the app. The UI thread alone touches widgets; nothing here
blocks it for long (a launch is a fork, or a Ray submit).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from coun_tui.engine import UserError, backends, jobs
from coun_tui.engine.events import Embedding, Failed, Step
from coun_tui.engine.records import method_label, read_metrics
from coun_tui.engine.rundir import JobState
from coun_tui.engine.runlog import RunLog, describe_spec, read_features
from coun_tui.engine.runner import RunSpec
from coun_tui.engine.runs import spec_to_dict
from coun_tui.tui.widgets.run_pane import RunPane, short_path

FOLLOW_SECONDS = 0.25  # how often the event logs of followed jobs are read


if TYPE_CHECKING:
    from coun_tui.tui.host import LabApp as _App
else:
    _App = object


class Training(_App):
    """CounLab's jobs: launch, follow, cancel, reattach, and what quitting does to them."""

    def _start_following(self) -> None:
        self.jobs = jobs.JobWatcher()
        self.backend = backends.current()
        self.set_interval(FOLLOW_SECONDS, self._poll_jobs)

    def start_run(self, spec: RunSpec, class_names: list[str] | None = None) -> RunPane:
        """Open a pane for `spec` and start it as a job (it waits behind the jobs already queued
        on its device, from any process); returns the pane."""
        if self.log_targets and not spec.log:
            spec = replace(spec, log=list(self.log_targets))
        self._seq += 1
        run_id = f"run-{self._seq}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = self.runs_dir / f"{stamp}-{method_label(spec.method, spec.cl).lower()}-{spec.forget.tag()}"
        n = 2
        while out_dir.exists() or any(p.runlog.run_dir == out_dir for p in self.panes()):
            out_dir = out_dir.with_name(f"{out_dir.name.rsplit('~', 1)[0]}~{n}")
            n += 1
        spec_dict = spec_to_dict(spec)
        log = RunLog(title=describe_spec(spec_dict, class_names), run_dir=out_dir, spec=spec_dict)
        pane = self._add_pane(run_id, log, class_names, live=True)
        try:
            self.backend.launch(spec, out_dir, find_reference_in=self.runs_dir)
        except UserError as exc:
            self._apply_events(pane, [Failed(str(exc))])
            return pane
        except Exception as exc:  # noqa: BLE001 - any failure is the run's, never the app's
            self._apply_events(pane, [Failed(f"{type(exc).__name__}: {exc}")])
            return pane
        self.jobs.add(run_id, out_dir)
        return pane

    def follow_run(self, pane: RunPane, offset: int) -> None:
        """Keep a reopened pane of a live job up to date from byte `offset` of its event log."""
        if pane.runlog.run_dir is None:  # nothing to follow
            return
        pane.live = True
        self.jobs.add(pane.run_id, pane.runlog.run_dir, offset)

    def reattach(self) -> None:
        """Open a live pane for every queued or running job of the runs directory."""
        for run_dir in jobs.live_runs(self.runs_dir):
            if self.pane_for(run_dir) is None:
                self.open_run(run_dir)

    def _poll_jobs(self) -> None:
        for update in self.jobs.poll():
            pane = self.pane(update.key)
            if pane is None:
                continue
            if update.events:
                self._apply_events(pane, update.events)
            if update.state is not None:
                self._apply_state(pane, update.state)

    def _apply_events(self, pane: RunPane, events: list) -> None:
        steps = [e for e in events if isinstance(e, Step)]
        if steps:
            pane.apply_steps(steps)
            self._compare_progress = True
        for event in events:
            if isinstance(event, Step):
                continue
            if isinstance(event, Embedding) and event.features is None and pane.runlog.run_dir:
                # The worker keeps the raw features beside the log (for t-SNE), written before the event.
                event.features = read_features(pane.runlog.run_dir, len(event.xy))
            pane.apply(event)
            if event.kind != "embedding":
                self._compare_dirty = True
            if event.kind in ("started", "done", "failed", "cancelled"):
                self._update_tab(pane)
            if isinstance(event, Failed):
                self.notify(event.reason, title=f"{pane.runlog.title}: failed", severity="error", timeout=8)
            if event.kind in ("done", "failed", "cancelled"):
                self._run_ended(pane, event.kind)

    def _apply_state(self, pane: RunPane, state: JobState) -> None:
        was = pane.runlog.status
        pane.set_state(state)
        if pane.runlog.status != was:
            self._update_tab(pane)
            self._compare_dirty = True
            if state.state in ("died", "damaged"):
                self.notify(state.detail, title=f"{pane.runlog.title}: {state.state}", severity="error", timeout=8)
                self._run_ended(pane, state.state)

    def _run_ended(self, pane: RunPane, status: str) -> None:
        self.jobs.remove(pane.run_id)
        pane.flush()
        self._save_session()
        if status == "done":
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
            ref = read_metrics(ref_dir).scores()
        except UserError:
            return
        for pane in self.panes():
            if pane.runlog.run_dir == ref_dir or pane.runlog.reference or pane.runlog.run_dir is None:
                continue
            with contextlib.suppress(UserError):
                if Split.load(pane.runlog.run_dir / "split.npz").same_as(ref_split):
                    pane.set_reference(ref)
        self._compare_dirty = True

    def is_live(self, pane: RunPane) -> bool:
        return pane.run_id in self.jobs

    def live_panes(self) -> list[RunPane]:
        return [p for p in self.panes() if self.is_live(p)]

    def action_cancel(self) -> None:
        pane = self.active_pane
        if pane is None:
            self.notify("no run is shown", severity="warning")
            return
        if not self.is_live(pane) or pane.runlog.run_dir is None or not jobs.cancel(pane.runlog.run_dir):
            self.notify("this run is not running", severity="warning")
            return
        if pane.runlog.status == "queued":
            self.notify("cancelled before it started", title=pane.runlog.title)
        else:
            self.notify("cancelling: the run stops at its next step", title=pane.runlog.title)

    def cancel_live_runs(self) -> None:
        for pane in self.live_panes():
            if pane.runlog.run_dir is not None:
                jobs.cancel(pane.runlog.run_dir)

    def leave_note(self) -> str:
        """What quitting leaves behind, for the quit question."""
        live = self.live_panes()
        where = short_path(self.runs_dir)
        if self.backend.schedules:
            return (f"{len(live)} run(s) are still going on Ray. They belong to this app: closing it "
                    f"cancels them (their runs stay in {where}).")
        return (f"{len(live)} run(s) are still going. Left running, they go on without the app; "
                f"`coun-lab runs {where}` lists them and the next `coun-lab` reattaches to them.")
