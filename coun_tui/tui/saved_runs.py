"""Saved runs in the lab: reopen, rename, tag and delete them, and the session (the panes open
last time)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from coun_tui.engine.runs import read_labels, write_json, write_labels
from coun_tui.tui.runlog import METRICS, describe_spec, find_reference, read_metrics, read_run
from coun_tui.tui.widgets.dialogs import ConfirmScreen, PromptScreen
from coun_tui.tui.widgets.history import HistoryScreen
from coun_tui.tui.widgets.run_pane import RunPane, short_path

SESSION_FILE = ".coun-lab-session.json"  # the panes open when the app last changed them (with session=True)


class SavedRuns:
    """CounLab's run history and session."""

    def action_open_run(self) -> None:
        def chosen(runs: list[str] | None) -> None:
            for path in runs or []:
                self.open_run(path)

        self.push_screen(HistoryScreen(self.runs_dir), chosen)

    def open_run(self, path: str | Path, limit: int | None = None) -> RunPane | None:
        """Replay a saved run into a pane (`limit`: only its first N events, as if mid-run).
        A run already open is shown instead of opened twice."""
        if limit is None and (open_pane := self.pane_for(Path(path))) is not None:
            self.activate_pane(open_pane.run_id)
            return open_pane
        try:
            log = read_run(path, limit)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.notify(f"cannot open {path}: {exc}", title="open run", severity="error")
            return None
        names = None
        setup = self.setup_panel
        model = Path(path) / "model.safetensors"
        if model.is_file():
            with contextlib.suppress(Exception):
                from coun_tui.engine.checkpoint import read_meta

                names = read_meta(model).get("classes")
        if names is None and setup.dataset is not None and log.spec.get("dataset") in (None, setup.dataset.name):
            names = setup.dataset.classes
        if names:
            log.title = describe_spec(log.spec, names) if log.spec else log.title
        if not any(e.gap for e in log.epochs) and log.spec.get("method") != "retrain":
            with contextlib.suppress(Exception):
                from coun_tui.engine.forget import Split

                split = Split.load(Path(path) / "split.npz")
                ref = find_reference(self.runs_dir, log.spec.get("dataset") or "", split)
                m = read_metrics(ref) if ref else None
                if m:
                    log.reference = {k: float(m[k]) for k in METRICS}
        self._seq += 1
        return self._add_pane(f"run-{self._seq}", log, names, live=False)

    def _active_run_dir(self) -> Path | None:
        pane = self.active_pane
        if pane is None or pane.runlog.run_dir is None or not pane.runlog.run_dir.is_dir():
            self.notify("no saved run is shown (a run is kept once it starts)", severity="warning")
            return None
        return pane.runlog.run_dir

    def action_rename(self) -> None:
        if (run_dir := self._active_run_dir()) is not None:
            self.rename_run(run_dir)

    def action_tag(self) -> None:
        if (run_dir := self._active_run_dir()) is not None:
            self.tag_run(run_dir)

    def action_delete_run(self) -> None:
        if (run_dir := self._active_run_dir()) is not None:
            self.delete_run(run_dir)

    def rename_run(self, run_dir: Path, then=None) -> None:
        labels = read_labels(run_dir)

        def chosen(value: str | None) -> None:
            if value is not None:
                self._labels_changed(run_dir, write_labels(run_dir, name=value))
                if then:
                    then()

        self.push_screen(PromptScreen(f"Name for {run_dir.name} (empty: no name)", labels["name"] or "",
                                      "e.g. coun lr 0.05"), chosen)

    def tag_run(self, run_dir: Path, then=None) -> None:
        labels = read_labels(run_dir)

        def chosen(value: str | None) -> None:
            if value is not None:
                tags = [t.lstrip("#") for t in value.replace(",", " ").split()]
                self._labels_changed(run_dir, write_labels(run_dir, tags=tags))
                if then:
                    then()

        self.push_screen(PromptScreen(f"Tags for {run_dir.name} (space or comma separated)",
                                      " ".join(labels["tags"]), "e.g. paper baseline"), chosen)

    def _labels_changed(self, run_dir: Path, labels: dict) -> None:
        if (pane := self.pane_for(run_dir)) is not None:
            pane.set_labels(labels)
            self._update_tab(pane)
        self._compare_dirty = True

    def delete_run(self, run_dir: Path, then=None) -> None:
        """Delete a saved run directory after a confirm (never one that is training or queued)."""
        run_dir = Path(run_dir)
        pane = self.pane_for(run_dir)
        if pane is not None and pane.run_id in self._cancels:
            self.notify("this run is still going: cancel it first (c)", title="delete", severity="warning")
            return
        if not ((run_dir / "run.toml").is_file() or (run_dir / "events.jsonl").is_file()):
            self.notify(f"{short_path(run_dir)} is not a run directory", title="delete", severity="error")
            return
        name = read_labels(run_dir)["name"] or run_dir.name

        def chosen(yes: bool | None) -> None:
            if not yes:
                return
            if pane is not None:
                self.close_pane(pane.run_id)
            shutil.rmtree(run_dir, ignore_errors=True)
            self._ref_cache.clear()
            self.setup_panel.refresh_reference()
            self._compare_dirty = True
            self.notify(f"deleted {short_path(run_dir)}", title="run deleted")
            if then:
                then()

        self.push_screen(ConfirmScreen(f"Delete the run {name}?\n\n{short_path(run_dir)} and everything in it "
                                       "(checkpoint, events, metrics) will be removed for good."), chosen)

    def _save_session(self) -> None:
        if not self.session:
            return
        open_dirs = [str(p.runlog.run_dir) for p in self._panes.values()
                     if p.runlog.run_dir is not None and p.runlog.run_dir.is_dir()]
        active = self.active_pane
        table = self.compare_table
        with contextlib.suppress(OSError):
            write_json(self.runs_dir / SESSION_FILE,
                       {"open": open_dirs, "compare": self.compare_view, "sort": [table.sort_key, table.reverse],
                        "active": str(active.runlog.run_dir) if active and active.runlog.run_dir else None})

    def _restore_session(self) -> None:
        if not self.session:
            return
        try:
            state = json.loads((self.runs_dir / SESSION_FILE).read_text())
        except (OSError, ValueError):
            return
        self.session = False  # no writes while reopening
        try:
            opened = {}
            for d in state.get("open") or []:
                if Path(d).is_dir() and (pane := self.open_run(d)) is not None:
                    opened[d] = pane
            sort = state.get("sort") or [None, False]
            self.compare_table.sort_key, self.compare_table.reverse = sort[0], bool(sort[1])
            if state.get("compare") and opened:
                self.set_compare_view(True)
            if (active := opened.get(state.get("active") or "")) is not None:
                self.activate_pane(active.run_id)
        finally:
            self.session = True
        self._compare_dirty = True
