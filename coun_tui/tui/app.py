"""coun-lab's Textual app: set up a forget request, run it in the background, watch it, keep it,
and compare runs side by side.

The app is the layout, the model, launching and the panes; its other jobs are mixins of their own
modules: `training` (jobs: launch, follow, cancel, reattach), `comparison` (the table and its
exports) and `saved_runs` (history and session).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, HorizontalScroll, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static, Tab, Tabs

from coun_tui.engine import UserError, paths, warm
from coun_tui.engine.records import method_label, read_spec, spec_from_dict
from coun_tui.engine.runlog import RunLog, describe_spec, forget_of
from coun_tui.engine.runner import RunSpec
from coun_tui.engine.runs import spec_to_dict
from coun_tui.tui.commands import LabCommands
from coun_tui.tui.comparison import COMPARE_SECONDS, Comparison
from coun_tui.tui.help_screen import HelpScreen
from coun_tui.tui.keys import bindings
from coun_tui.tui.messages import ModelLoaded, TsneReady
from coun_tui.tui.saved_runs import SavedRuns
from coun_tui.tui.training import Training
from coun_tui.tui.widgets.compare import ComparePanel, ComparisonTable
from coun_tui.tui.widgets.dialogs import LaunchScreen
from coun_tui.tui.widgets.model_picker import ModelPicker, same_file
from coun_tui.tui.widgets.quit_dialog import QuitScreen
from coun_tui.tui.widgets.run_pane import RunPane, clipped, short_path
from coun_tui.tui.widgets.setup_panel import SetupPanel

STATUS_GLYPH = {"queued": "◦", "preparing": "…", "running": "▶", "done": "✔", "failed": "✖", "cancelled": "■",
                "incomplete": "?", "died": "✗", "damaged": "?"}
TAB_NAME_CHARS = 24  # a long run name must not push the other tabs away
EMPTY = ("No runs open. Set up on the left and press ctrl+r to run (t: its Retrain reference), "
         "or o to reopen saved runs.")


class RunTabs(Tabs, can_focus=False):
    """One tab per open run. The app owns which one is active: a click asks for it (Chosen);
    `[` `]`, a click on a pane or a table row do the same."""

    class Chosen(Message):
        def __init__(self, tab_id: str) -> None:
            super().__init__()
            self.tab_id = tab_id

    async def _on_tab_clicked(self, event: Tab.Clicked) -> None:
        event.stop()
        if event.tab.id:
            self.post_message(self.Chosen(event.tab.id))

    def _on_underline_clicked(self, event) -> None:
        event.stop()


class CounLab(Training, Comparison, SavedRuns, App):
    """The lab. Constructed like `run_app` (model, dataset, data_root, runs_dir) for Pilot tests.

    `export_dir`: where exports go (default: RUNS_DIR/exports). `session`: reopen the setup and the
    panes as they were last time in this runs directory, and keep that record up to date
    (`coun-lab` does; tests opt in). A model given here wins over the session's.
    """

    CSS_PATH = "coun_lab.tcss"
    TITLE = "coun-lab"
    SUB_TITLE = "machine unlearning, live"
    COMMANDS = App.COMMANDS | {LabCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = bindings()  # declared in tui/keys.py with the palette, `?` and the README table

    def __init__(self, model: str | None = None, dataset: str | None = None, data_root: str | None = None,
                 runs_dir: str | Path | None = None, export_dir: str | Path | None = None,
                 session: bool = False, log: list[str] | None = None) -> None:
        super().__init__()
        self.log_targets = list(log or [])  # trackers every run it starts logs to (`coun-lab tui --log`)
        self.model_path = str(model or paths.DEFAULT_MODEL)
        self._model_given = model is not None
        self.dataset_override, self.data_root = dataset, data_root
        self.runs_dir = Path(runs_dir) if runs_dir else paths.default_runs_dir()
        self.export_dir = Path(export_dir) if export_dir else self.runs_dir / "exports"
        self.session = session
        self._panes: dict[str, RunPane] = {}  # run_id -> pane, in the order opened
        self._active: str | None = None
        self._seq = 0
        self._compare_dirty = True
        self._compare_progress = False  # steps arrived since the table was drawn
        self._compare_drawn = 0.0
        self._view_chosen = False  # the person toggled the view: stop switching it for them
        self._ref_cache: dict[str, Path | None] = {}
        self._restored = False

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield SetupPanel(self.runs_dir, id="setup")
            with Vertical(id="runs"):
                yield Static(EMPTY, id="empty")
                yield RunTabs(id="run-tabs")
                yield HorizontalScroll(id="panes", can_focus=False)
                yield ComparePanel(id="compare")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#run-tabs").display = False
        self.query_one("#panes").display = False
        self.set_interval(COMPARE_SECONDS, self._refresh_compare)
        self._start_following()
        warm.start_if_absent()  # so that the first launch already finds torch imported
        if self.session and not self._model_given:  # the model the last session had set up
            last = self.last_setup().get("model")
            if isinstance(last, str) and Path(last).is_file():
                self.model_path = last
        self.load_model(self.model_path, self.dataset_override, self.data_root)

    @property
    def base_screen(self) -> Screen:
        """The lab's own screen (below any modal)."""
        return self.screen_stack[0]

    @property
    def setup_panel(self) -> SetupPanel:
        return self.query_one(SetupPanel)

    @property
    def compare_table(self) -> ComparisonTable:
        return self.base_screen.query_one(ComparisonTable)

    @property
    def compare_view(self) -> bool:
        return self.base_screen.has_class("-compare")

    def panes(self) -> list[RunPane]:
        return list(self._panes.values())

    def pane(self, run_id: str) -> RunPane | None:
        return self._panes.get(run_id)

    @property
    def active_pane(self) -> RunPane | None:
        return self._panes.get(self._active) if self._active else None

    def pane_for(self, run_dir: str | Path) -> RunPane | None:
        """The open pane of a run directory, if any."""
        run_dir = Path(run_dir).resolve()
        for p in self._panes.values():
            if p.runlog.run_dir is not None and p.runlog.run_dir.resolve() == run_dir:
                return p
        return None

    # --- the model ----------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="model", exclusive=True)
    def load_model(self, path: str, dataset: str | None = None, data_root: str | None = None) -> None:
        from coun_tui.engine import checkpoint, data

        try:
            if not Path(path).is_file():
                raise UserError(f"{short_path(path)} not found: press m to choose a model, or make the "
                                "default with `coun-lab train --dataset digits`")
            meta = checkpoint.read_meta(path)
            name = dataset or meta.get("dataset")
            if not name:
                raise UserError(f"{Path(path).name} does not say its dataset: start with --dataset NAME")
            ds = data.load(name, data_root, meta.get("subset"), meta.get("subset_seed") or 0)
        except UserError as exc:
            self.post_message(ModelLoaded(path, None, error=str(exc)))
            return
        except Exception as exc:  # a foreign or damaged file: say so, keep going
            self.post_message(ModelLoaded(path, None, error=f"cannot load {Path(path).name}: "
                                                            f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(ModelLoaded(path, meta, ds))

    @on(ModelLoaded)
    def _model_loaded(self, message: ModelLoaded) -> None:
        if message.error:
            self.notify(message.error, title="model not loaded", severity="error", timeout=8)
            if self.setup_panel.model_path is None:
                self.query_one("#model-facts", Static).update(message.error)
        else:
            self.model_path = message.path
            dropped = self.setup_panel.set_model(message.path, message.meta or {}, message.dataset, self.data_root)
            self.sub_title = Path(message.path).name
            if dropped:
                self.notify(f"forget set: unticked {', '.join(dropped)}, which {Path(message.path).name} "
                            "has no class of that name", title="forget set changed", timeout=8)
        if not self._restored:
            self._restored = True
            self._restore_session()
            self.reattach()

    def action_pick_model(self) -> None:
        def chosen(path: str | None) -> None:
            loaded = self.setup_panel.model_path
            if path and not (loaded and same_file(path, loaded)):  # the model already loaded: nothing changes
                self.load_model(path, None, self.data_root)

        self.push_screen(ModelPicker(self.runs_dir, self.setup_panel.model_path), chosen)

    # --- launching ----------------------------------------------------------------------------

    def action_launch(self) -> None:
        self._launch(None)

    def action_retrain(self) -> None:
        self._launch("retrain")

    @on(Button.Pressed, "#launch")
    def _run_pressed(self) -> None:
        self._launch(None)

    @on(Button.Pressed, "#retrain")
    def _retrain_pressed(self) -> None:
        self._launch("retrain")

    @on(Button.Pressed, "#pick-model")
    def _pick_model_pressed(self) -> None:
        self.action_pick_model()

    def _launch(self, method: str | None) -> None:
        """Ask once (LaunchScreen) and start the run set up in the panel, or `method` on its split."""
        if self.screen is not self.base_screen:  # a dialog is open: its keys are its own
            return
        setup = self.setup_panel
        try:
            spec = setup.build_spec(method)
        except UserError as exc:
            self.notify(str(exc), title="cannot run", severity="error", timeout=8)
            return
        names = setup.dataset.classes if setup.dataset else None
        no_reference = None
        if (spec.method != "retrain" and not spec.reference and setup.split is not None and len(setup.split.forget)
                and not self._pending_retrain(forget_of(spec_to_dict(spec)))):
            no_reference = spec.forget.describe(names) if names else "this forget set"

        def chosen(choice: str | None) -> None:
            if choice == "retrain_first":
                self.start_run(setup.build_spec("retrain"), names)
            if choice in ("run", "retrain_first"):
                pane = self.start_run(spec, names)
                self.call_after_refresh(pane.focus)  # the run's keys (c, e, o...) are not typed into a field

        self.push_screen(LaunchScreen(self._launch_summary(spec, names), no_reference,
                                      self._identical_run(spec)), chosen)

    def _launch_summary(self, spec: RunSpec, names: list[str] | None) -> Text:
        setup = self.setup_panel
        hp = setup.effective_hparams(spec)
        shown = [k for k in ("epochs", "lr", "batch_size", "lambda", "tau", "alpha", "gamma", "mask_ratio")
                 if k in hp and (k not in ("lambda", "tau") or spec.cl or spec.method == "coun")]
        split = setup.split
        counts = f" (forget {len(split.forget):,} · retain {len(split.retain):,})" if split is not None else ""
        text = Text.assemble((describe_spec(spec_to_dict(spec), names), "bold"), counts, "\n")
        text.append(" · ".join(f"{k} {hp[k]}{'*' if k in spec.hparams else ''}" for k in shown))
        text.append(f"\ndevice {spec.device} · model {Path(spec.model or '').name}")
        if spec.hparams:
            text.append("\n* changed from the default", style="dim")
        return text

    def _identical_run(self, spec: RunSpec) -> str | None:
        """An open run (queued, running or done) or a finished saved run made with exactly this
        spec: the same model, forget set, method, +CL, seed and hyperparameters."""
        want = self._identity(spec)
        for p in self._panes.values():
            log = p.runlog
            with contextlib.suppress(UserError):  # a damaged record is no duplicate
                if log.spec and log.status not in ("failed", "cancelled") and self._identity(log.spec) == want:
                    name = log.labels.get("name") or (log.run_dir.name if log.run_dir else log.title)
                    return f"{name} ({log.status})"
        for run in paths.saved_runs(self.runs_dir):
            if not (run / "metrics.json").is_file() or self.pane_for(run) is not None:
                continue
            with contextlib.suppress(UserError):
                if self._identity(read_spec(run)) == want:
                    return f"{run.name} (done, in {short_path(self.runs_dir)})"
        return None

    def _identity(self, spec: RunSpec | dict) -> str:
        spec = spec_from_dict(spec) if isinstance(spec, dict) else spec
        return json.dumps({"method": spec.method.lower(), "cl": bool(spec.cl), "seed": spec.seed,
                           "precision": spec.precision, "forget": spec.forget.to_dict(),
                           "model": str(Path(spec.model).resolve()) if spec.model else None,
                           "hparams": self.setup_panel.effective_hparams(spec)}, sort_keys=True, default=str)

    def _pending_retrain(self, key: str) -> RunPane | None:
        for p in self._panes.values():
            log = p.runlog
            if (log.spec.get("method") == "retrain" and log.status in ("queued", "preparing", "running")
                    and forget_of(log.spec) == key):
                return p
        return None

    def _add_pane(self, run_id: str, log: RunLog, class_names, live: bool) -> RunPane:
        pane = RunPane(run_id, log, class_names, live=live)
        self._panes[run_id] = pane
        self.query_one("#empty").display = False
        tabs = self.query_one("#run-tabs", RunTabs)
        tabs.display = True
        self.query_one("#panes").display = True
        self.query_one("#panes").mount(pane)
        tabs.add_tab(Tab(self._tab_label(run_id, log), id=f"tab-{run_id}"))
        self.activate_pane(run_id)
        if self.base_screen.has_class("-narrow"):
            self.base_screen.add_class("-runs-only")
        if len(self._panes) == 2 and not self._view_chosen:
            self.set_compare_view(True)
        self._compare_dirty = True
        self._save_session()
        return pane

    def activate_pane(self, run_id: str) -> None:
        """Show (tabs, narrow) or highlight (side by side) the pane of `run_id`."""
        if run_id not in self._panes:
            return
        self._active = run_id
        for rid, p in self._panes.items():
            p.set_class(rid == run_id, "-active")
        with contextlib.suppress(NoMatches):
            self.compare_table.show_active(run_id)
        self._sync_tab(run_id)

    def _sync_tab(self, run_id: str, attempt: int = 0) -> None:
        """Point the tab strip at the active pane once its tab is mounted (adding one is async)."""
        if run_id != self._active:
            return
        try:
            tabs = self.base_screen.query_one("#run-tabs", RunTabs)
            tabs.query_one(f"#tab-{run_id}", Tab)
        except NoMatches:
            if attempt < 20:
                self.call_after_refresh(self._sync_tab, run_id, attempt + 1)
            return
        if tabs.active != f"tab-{run_id}":
            tabs.active = f"tab-{run_id}"
        with contextlib.suppress(Exception):
            self.query_one("#panes", HorizontalScroll).scroll_to_widget(self._panes[run_id], animate=False)

    @on(Tabs.TabActivated, "#run-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        # The strip moved by itself (its first tab activates once mounted, a removed tab's
        # neighbour): the app's choice stands.
        if self._active and (event.tab is None or event.tab.id != f"tab-{self._active}"):
            self._sync_tab(self._active)

    @on(RunTabs.Chosen)
    def _tab_chosen(self, message: RunTabs.Chosen) -> None:
        self.activate_pane(message.tab_id.removeprefix("tab-"))

    @staticmethod
    def _tab_label(run_id: str, log: RunLog) -> str:
        method = method_label(str(log.spec.get("method", "run")), bool(log.spec.get("cl"))
                              and log.spec.get("method") != "coun") if log.spec else "run"
        name = clipped(log.labels.get("name") or method, TAB_NAME_CHARS)
        glyph = "⚠" if log.damage else STATUS_GLYPH.get(log.status, "")
        return f"{glyph} {run_id.split('-')[-1]} {name}"

    def _update_tab(self, pane: RunPane) -> None:
        with contextlib.suppress(Exception):
            self.query_one("#run-tabs", Tabs).query_one(f"#tab-{pane.run_id}", Tab).label = \
                self._tab_label(pane.run_id, pane.runlog)

    @on(TsneReady)
    def _tsne_ready(self, message: TsneReady) -> None:
        pane = self.pane(message.run_id)
        if pane is None:
            return
        if message.error:
            self.notify(message.error, title="t-SNE", severity="error")
            return
        pane.show_tsne(message.epoch, message.xy)
        pane.flush()

    # --- actions ------------------------------------------------------------------------------

    def action_tsne(self) -> None:
        pane = self.active_pane
        if pane is None:
            return
        if pane.tsne is not None:
            pane.show_tsne(None, None)
            pane.flush()
            return
        emb = pane.runlog.embedding
        if emb is None:
            self.notify("no embedding yet: it comes with the first evaluation", severity="warning")
            return
        if emb.features is None:
            self.notify("this run kept no raw features (embedding.npy): t-SNE is not available; PCA stays",
                        severity="warning")
            return
        self.notify(f"computing t-SNE of epoch {emb.epoch}…")
        self._tsne(pane.run_id, emb.epoch, emb.features)

    @work(thread=True, exit_on_error=False, group="tsne")
    def _tsne(self, run_id: str, epoch: int, features) -> None:
        try:
            from sklearn.manifold import TSNE

            n = len(features)
            xy = TSNE(n_components=2, init="pca", random_state=0,
                      perplexity=min(30.0, max(2.0, (n - 1) / 3))).fit_transform(features)
            self.post_message(TsneReady(run_id, epoch, xy.tolist()))
        except Exception as exc:  # noqa: BLE001
            self.post_message(TsneReady(run_id, epoch, None, error=f"{type(exc).__name__}: {exc}"))

    def action_close_pane(self) -> None:
        if (pane := self.active_pane) is not None:
            self.close_pane(pane.run_id)

    def close_pane(self, run_id: str) -> None:
        """Close a pane (a running or queued job goes on; o reopens it, live)."""
        pane = self._panes.pop(run_id, None)
        if pane is None:
            return
        if self.is_live(pane):
            self.jobs.remove(run_id)
            self.notify("the run goes on: o reopens it, live; `coun-lab runs cancel` stops it",
                        title=pane.runlog.title)
        ids = [run_id, *self._panes]
        pane.remove()
        with contextlib.suppress(Exception):
            self.query_one("#run-tabs", Tabs).remove_tab(f"tab-{run_id}")
        if self._active == run_id:
            self._active = None
            if self._panes:
                self.activate_pane(list(self._panes)[-1] if ids.index(run_id) >= len(self._panes) else
                                   list(self._panes)[max(0, ids.index(run_id) - 1)])
        if not self._panes:
            self.query_one("#run-tabs").display = False
            self.query_one("#panes").display = False
            self.query_one("#empty").display = True
        self._compare_dirty = True
        self._save_session()

    def action_prev_pane(self) -> None:
        self._cycle(-1)

    def action_next_pane(self) -> None:
        self._cycle(1)

    def _cycle(self, step: int) -> None:
        ids = list(self._panes)
        if ids and self._active in ids:
            self.activate_pane(ids[(ids.index(self._active) + step) % len(ids)])

    def action_toggle_setup(self) -> None:
        self.base_screen.toggle_class("-runs-only")

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Quit; with runs going, ask whether to leave them running (the default) or cancel them."""
        if not self.live_panes():
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "cancel":
                self.cancel_live_runs()
            if choice in ("leave", "cancel"):
                self.exit()

        self.push_screen(QuitScreen(self.leave_note()), chosen)


def run_app(model: str | None = None, dataset: str | None = None, data_root: str | None = None,
            runs_dir: str | None = None, log: list[str] | None = None) -> None:
    """Open the lab (the entry point behind `coun-lab` and `coun-lab tui`); it reopens the runs
    that were open when it last closed on this runs directory. `log`: trackers for its runs."""
    CounLab(model=model, dataset=dataset, data_root=data_root, runs_dir=runs_dir, session=True, log=log).run()


if __name__ == "__main__":
    run_app()
