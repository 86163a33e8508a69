"""Saved runs in the lab: reopen, rename, tag and delete them, and the session (the setup and the
panes as they were last time)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from textual.css.query import NoMatches

from coun_tui.engine import UserError
from coun_tui.engine.records import find_reference, read_labels, read_metrics
from coun_tui.engine.runlog import describe_spec, read_run
from coun_tui.engine.runs import write_json, write_labels
from coun_tui.engine.schema import RecordError, parse_json
from coun_tui.tui.widgets.compare import SORTABLE
from coun_tui.tui.widgets.dialogs import ConfirmScreen, PromptScreen
from coun_tui.tui.widgets.history import HistoryScreen
from coun_tui.tui.widgets.run_pane import RunPane, short_path

SESSION_FILE = ".coun-lab-session.json"  # the setup and panes when the app last changed them (session=True)
SETUP_SAVE_SECONDS = 0.5  # typing in the setup panel saves the session at most this often


class Session(BaseModel):
    """The session file: which runs were open, the comparison's view and sort, the active run, and
    the setup panel as it was (SetupPanel.state; restore() skips what no longer fits)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    open: list[str] = []
    compare: bool = False
    sort: tuple[str | None, bool] = (None, False)
    active: str | None = None
    setup: dict[str, Any] | None = None


def read_session(path: Path) -> Session | None:
    """The session file, checked: None if there is none; RecordError (one line) if it is damaged."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(str(path), f"cannot be read ({exc.strerror})") from None
    return parse_json(Session, text, str(path), "the lab starts with no runs open")


if TYPE_CHECKING:
    from coun_tui.tui.host import LabApp as _App
else:
    _App = object


class SavedRuns(_App):
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
        except (UserError, OSError) as exc:
            self.notify(f"cannot open {path}: {exc}", title="open run", severity="error")
            return None
        if log.damage:
            self.notify(f"{short_path(path)}: {log.damage[0]}", title="damaged run: shown as far as it reads",
                        severity="warning", timeout=8)
        names = None
        setup = self.setup_panel
        model = Path(path) / "model.safetensors"
        if model.is_file():
            with contextlib.suppress(UserError):
                from coun_tui.engine.checkpoint import read_meta

                names = read_meta(model).get("classes")
        if names is None and setup.dataset is not None and log.spec.get("dataset") in (None, setup.dataset.name):
            names = setup.dataset.classes
        if names:
            log.title = describe_spec(log.spec, names) if log.spec else log.title
        if not any(e.gap for e in log.epochs) and log.spec.get("method") != "retrain":
            with contextlib.suppress(UserError):
                from coun_tui.engine.forget import Split

                split = Split.load(Path(path) / "split.npz")
                ref = find_reference(self.runs_dir, log.spec.get("dataset") or "", split)
                if ref is not None:
                    log.reference = read_metrics(ref).scores()
        self._seq += 1
        pane = self._add_pane(f"run-{self._seq}", log, names, live=False)
        if limit is None and log.spec.get("method") == "retrain" and log.status == "done":
            self._share_reference(log.run_dir)  # open runs of its split get their gaps
        if limit is None and log.status in ("queued", "preparing", "running"):
            self.follow_run(pane, log.offset)  # a job still going: live from where its log is
        return pane

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
        from coun_tui.engine.rundir import read_state

        if read_state(run_dir).live:
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
        setup = self.last_setup()  # no model loaded (yet): keep the last one's
        with contextlib.suppress(NoMatches):  # the app is closing
            if self.setup_panel.dataset is not None:
                setup = self.setup_panel.state()
        with contextlib.suppress(OSError):
            write_json(self.runs_dir / SESSION_FILE,
                       {"open": open_dirs, "compare": self.compare_view, "sort": [table.sort_key, table.reverse],
                        "active": str(active.runlog.run_dir) if active and active.runlog.run_dir else None,
                        "setup": setup})

    def last_setup(self) -> dict[str, Any]:
        """The setup the session file holds ({} if none or damaged)."""
        try:
            state = read_session(self.runs_dir / SESSION_FILE)
        except RecordError:
            return {}
        return (state.setup if state else None) or {}

    def on_setup_panel_changed(self) -> None:
        if self.session and self._restored:
            if (timer := getattr(self, "_setup_save", None)) is not None:
                timer.stop()
            self._setup_save = self.set_timer(SETUP_SAVE_SECONDS, self._save_session)

    def _restore_session(self) -> None:
        if not self.session:
            return
        try:
            state = read_session(self.runs_dir / SESSION_FILE)
        except RecordError as exc:
            self.notify(str(exc), title="session not restored", severity="warning", timeout=8)
            return
        if state is None:
            return
        if state.setup and state.setup.get("model") == self.setup_panel.model_path:
            with contextlib.suppress(Exception):  # a setup that no longer fits is simply not restored
                self.setup_panel.restore(state.setup)
        self.session = False  # no writes while reopening
        try:
            opened = {}
            for d in state.open:
                try:
                    if Path(d).is_dir() and (pane := self.open_run(d)) is not None:
                        opened[d] = pane
                except Exception as exc:  # noqa: BLE001 - a run that breaks must never stop the lab from starting
                    self.notify(f"cannot reopen {d}: {type(exc).__name__}: {exc}", title="session",
                                severity="error")
            key, reverse = state.sort
            self.compare_table.sort_key = key if key in SORTABLE else None
            self.compare_table.reverse = reverse
            if state.compare and opened:
                self.set_compare_view(True)
            if (active := opened.get(state.active or "")) is not None:
                self.activate_pane(active.run_id)
        finally:
            self.session = True
        self._compare_dirty = True
