"""coun-lab's Textual app: set up a forget request, run it in the background, watch it, keep it,
and compare runs side by side.

Every run is a thread worker that consumes `engine.runs.record` (which also writes the run
directory) and posts its events as messages; a threading.Event per run is the cancel token the
engine checks every step. Runs on the same device wait their turn in a FIFO queue; runs on
different devices train at once. The UI thread alone touches widgets.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, Tab, Tabs
from textual.worker import Worker, WorkerState, get_current_worker

from coun_tui.engine import UserError, paths, report
from coun_tui.engine.events import Cancelled, Embedding, Failed, Step
from coun_tui.engine.files import atomic_write
from coun_tui.engine.runner import RunSpec
from coun_tui.engine.runs import read_labels, write_json, write_labels
from coun_tui.tui.commands import LabCommands
from coun_tui.tui.help_screen import HelpScreen
from coun_tui.tui.messages import (
    ModelLoaded,
    RunEvent,
    RunFinished,
    RunPrepared,
    RunStatus,
    RunSteps,
    TsneReady,
)
from coun_tui.tui.runlog import (
    METRICS,
    RunLog,
    describe_spec,
    find_reference,
    read_metrics,
    read_run,
    write_features,
)
from coun_tui.tui.widgets.compare import ComparePanel, ComparisonTable, Entry, entry_of
from coun_tui.tui.widgets.dialogs import (
    ConfirmScreen,
    ExportScreen,
    NoReferenceScreen,
    PromptScreen,
)
from coun_tui.tui.widgets.history import HistoryScreen
from coun_tui.tui.widgets.model_picker import ModelPicker
from coun_tui.tui.widgets.run_pane import RunPane, short_path
from coun_tui.tui.widgets.setup_panel import SetupPanel

STEP_POST_SECONDS = 0.25  # a worker batches steps at most this long before posting them
COMPARE_SECONDS = 0.5  # the comparison table is rebuilt at most this often (new epochs, verdicts)
PROGRESS_SECONDS = 2.0  # ... and this often for training progress alone
STATUS_GLYPH = {"queued": "◦", "preparing": "…", "running": "▶", "done": "✔", "failed": "✖", "cancelled": "■",
                "incomplete": "?"}
SESSION_FILE = ".coun-lab-session.json"  # the panes open when the app last changed them (with session=True)
EMPTY = ("No runs open. Set up on the left and press ctrl+r to run (t: its Retrain reference), "
         "or o to reopen saved runs.")
EXPORT_SUFFIX = {"md": ".md", "csv": ".csv", "json": ".json"}


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


def device_key(name: str) -> str:
    """The queue a run waits in: one per physical device (auto resolves as the engine does)."""
    if name == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if name == "cuda" else name


def forget_of(spec: dict) -> str:
    """What a run forgets and from which model, as a comparable key."""
    return json.dumps({"model": Path(str(spec.get("model") or "")).name, "forget": spec.get("forget") or {}},
                      sort_keys=True)


def forget_tag(spec: RunSpec) -> str:
    f = spec.forget
    if f.classes:
        return "class" + "+".join(str(c) for c in f.classes)
    if f.fraction is not None:
        return f"frac{f.fraction * 100:g}s{f.seed}"
    return "none"


class CounLab(App):
    """The lab. Constructed like `run_app` (model, dataset, data_root, runs_dir) for Pilot tests.

    `export_dir`: where exports go (default: the working directory). `session`: reopen the panes
    that were open last time in this runs directory, and keep that list up to date (`coun-lab`
    does; tests opt in).
    """

    CSS_PATH = "coun_lab.tcss"
    TITLE = "coun-lab"
    SUB_TITLE = "machine unlearning, live"
    COMMANDS = App.COMMANDS | {LabCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("ctrl+r", "launch", "Run", priority=True),
        Binding("r", "launch", "Run", show=False),
        Binding("t", "retrain", "Retrain ref"),
        Binding("c", "cancel", "Cancel"),
        Binding("v", "compare_view", "Compare"),
        Binding("o", "open_run", "Runs"),
        Binding("x", "export", "Export"),
        Binding("e", "tsne", "t-SNE"),
        Binding("m", "pick_model", "Model"),
        Binding("s", "toggle_setup", "Setup"),
        Binding("n", "rename", "Rename", show=False),
        Binding("g", "tag", "Tag", show=False),
        Binding("delete", "delete_run", "Delete run", show=False),
        Binding("k", "sort", "Sort", show=False),
        Binding("K", "sort_reverse", "Reverse sort", show=False),
        Binding("w", "close_pane", "Close pane", show=False),
        Binding("left_square_bracket", "prev_pane", "Prev pane", show=False),
        Binding("right_square_bracket", "next_pane", "Next pane", show=False),
        Binding("d", "toggle_dark", "Light/dark", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("f1", "help", "Help", show=False, priority=True),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, model: str | None = None, dataset: str | None = None, data_root: str | None = None,
                 runs_dir: str | Path | None = None, export_dir: str | Path | None = None,
                 session: bool = False) -> None:
        super().__init__()
        self.model_path = str(model or paths.DEFAULT_MODEL)
        self.dataset_override, self.data_root = dataset, data_root
        self.runs_dir = Path(runs_dir) if runs_dir else paths.default_runs_dir()
        self.export_dir = Path(export_dir) if export_dir else Path.cwd()
        self.session = session
        self._cancels: dict[str, threading.Event] = {}
        self._run_workers: dict[str, Worker] = {}
        self._panes: dict[str, RunPane] = {}  # run_id -> pane, in the order opened
        self._active: str | None = None
        self._seq = 0
        self._queue = threading.Condition()
        self._queues: dict[str, list[str]] = {}  # device -> run ids, the one training first
        self._compare_dirty = True
        self._compare_progress = False  # steps arrived since the table was drawn
        self._compare_drawn = 0.0
        self._view_chosen = False  # the person toggled the view: stop switching it for them
        self._run_anyway: set[str] = set()  # splits for which "run without a reference" was chosen
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
                yield HorizontalScroll(id="panes")
                yield ComparePanel(id="compare")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#run-tabs").display = False
        self.query_one("#panes").display = False
        self.set_interval(COMPARE_SECONDS, self._refresh_compare)
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
            self.setup_panel.set_model(message.path, message.meta, message.dataset, self.data_root)
            self.sub_title = Path(message.path).name
        if not self._restored:
            self._restored = True
            self._restore_session()

    def action_pick_model(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.load_model(path, None, self.data_root)

        self.push_screen(ModelPicker(self.runs_dir), chosen)

    # --- launching ----------------------------------------------------------------------------

    def action_launch(self) -> None:
        if self.screen is self.base_screen:
            self._launch(None)

    def action_retrain(self) -> None:
        self._launch("retrain")

    def _launch(self, method: str | None) -> RunPane | None:
        setup = self.setup_panel
        try:
            spec = setup.build_spec(method)
        except UserError as exc:
            self.notify(str(exc), title="cannot run", severity="error", timeout=6)
            return None
        names = setup.dataset.classes if setup.dataset else None
        key = forget_of(_spec_dict(spec))
        if (spec.method != "retrain" and not spec.reference and setup.split is not None
                and len(setup.split.forget) and key not in self._run_anyway and not self._pending_retrain(key)):
            what = spec.forget.describe(names) if names else "this forget set"

            def chosen(choice: str | None) -> None:
                if choice == "retrain_first":
                    self.start_run(setup.build_spec("retrain"), names)
                    self.start_run(spec, names)
                elif choice == "run":
                    self._run_anyway.add(key)
                    self.start_run(spec, names)

            self.push_screen(NoReferenceScreen(what, spec.method), chosen)
            return None
        return self.start_run(spec, names)

    def _pending_retrain(self, key: str) -> RunPane | None:
        for p in self._panes.values():
            log = p.runlog
            if (log.spec.get("method") == "retrain" and log.status in ("queued", "preparing", "running")
                    and forget_of(log.spec) == key):
                return p
        return None

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
        spec_dict = _spec_dict(spec)
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
        method = str(log.spec.get("method", "run")) if log.spec else "run"
        if log.spec.get("cl") and method != "coun":
            method += "+cl"
        name = log.labels.get("name") or method
        return f"{STATUS_GLYPH.get(log.status, '')} {run_id.split('-')[-1]} {name}"

    def _update_tab(self, pane: RunPane) -> None:
        with contextlib.suppress(Exception):
            self.query_one("#run-tabs", Tabs).query_one(f"#tab-{pane.run_id}", Tab).label = \
                self._tab_label(pane.run_id, pane.runlog)

    # --- training (a worker thread per run) ---------------------------------------------------

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
        post(RunPrepared(run_id, {"classes": prep.dataset.classes, "spec": _spec_dict(prep.spec),
                                  "title": describe_spec(_spec_dict(spec), prep.dataset.classes)}))
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

    # --- events from workers ------------------------------------------------------------------

    @on(RunStatus)
    def _status(self, message: RunStatus) -> None:
        if (pane := self.pane(message.run_id)) is not None and not pane.runlog.finished:
            pane.runlog.status, pane.runlog.queue_note = message.status, message.note
            pane._dirty.add("all")
            self._update_tab(pane)
            self._compare_dirty = True

    @on(RunSteps)
    def _steps(self, message: RunSteps) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.apply_steps(message.steps)
            self._compare_progress = True

    @on(RunEvent)
    def _event(self, message: RunEvent) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.apply(message.event)
            if message.event.kind in ("started", "done", "failed", "cancelled"):
                self._update_tab(pane)
            if message.event.kind != "embedding":
                self._compare_dirty = True
            if isinstance(message.event, Failed):
                self.notify(message.event.reason, title=f"{pane.runlog.title}: failed", severity="error", timeout=8)

    @on(RunPrepared)
    def _prepared(self, message: RunPrepared) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.set_facts(message.facts)

    @on(RunFinished)
    def _finished(self, message: RunFinished) -> None:
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

    # --- the comparison -----------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        return [entry_of(rid, p.runlog) for rid, p in self._panes.items()]

    def _refresh_compare(self, force: bool = False) -> None:
        """Rebuild the table when a run changed state or reported an epoch (at most every
        COMPARE_SECONDS), for progress alone every PROGRESS_SECONDS, and only while it is shown."""
        if not force:
            shown = self.compare_view
            progress = self._compare_progress and time.monotonic() - self._compare_drawn >= PROGRESS_SECONDS
            if not shown or not (self._compare_dirty or progress):
                return
        self._compare_dirty = self._compare_progress = False
        self._compare_drawn = time.monotonic()
        entries = self.entries()
        with contextlib.suppress(NoMatches):  # the app is closing
            self.base_screen.query_one(ComparePanel).draw(entries, self._compare_heading(entries))

    def _reference_for(self, log: RunLog) -> Path | None:
        """The saved Retrain run on `log`'s split, if any (cached until a Retrain ends or a run is deleted)."""
        key = forget_of(log.spec)
        if key not in self._ref_cache:
            found = None
            with contextlib.suppress(Exception):
                from coun_tui.engine.forget import Split

                split = Split.load(log.run_dir / "split.npz")
                found = find_reference(self.runs_dir, log.spec.get("dataset") or self.setup_panel.dataset_name
                                       or "", split)
            if found is None and log.spec.get("reference"):
                found = Path(log.spec["reference"]) if (Path(log.spec["reference"]) / "metrics.json").is_file() else None
            self._ref_cache[key] = found
        return self._ref_cache[key]

    def _compare_heading(self, entries: list[Entry]) -> Text:
        head = Text("Comparison", style="bold")
        if not entries:
            return head.append("  no runs open", style="dim")
        head.append(f" · {len(entries)} runs" if len(entries) > 1 else " · 1 run", style="dim")
        splits = {forget_of(e.log.spec) for e in entries if e.log.spec}
        if len(splits) > 1:
            head.append(f" · {len(splits)} different forget sets: each row's gaps are to its own split's Retrain",
                        style="yellow")
        else:
            log = entries[0].log
            what = log.title.split(" · forget ", 1)[-1] if " · forget " in log.title else "?"
            head.append(f" · forget {what}")
            if log.started:
                head.append(f" ({log.started.n_forget:,})", style="dim")
            ref_pane = next((e for e in entries if e.log.spec.get("method") == "retrain"), None)
            ref = self._reference_for(log) if log.run_dir is not None else None
            if ref is not None:
                head.append(" · reference ", style="dim")
                labels = read_labels(ref)
                head.append(labels["name"] or ref.name, style="green")
            elif ref_pane is not None and not ref_pane.log.finished:
                head.append(" · Retrain on its way: gaps fill in when it finishes", style="yellow")
            else:
                head.append(" · no Retrain reference for this split: t runs it; gaps fill in when it ends",
                            style="bold yellow")
        table = self.compare_table
        order = f"sorted by {dict(_column_names())[table.sort_key]} {'▼' if table.reverse else '▲'}" \
            if table.sort_key else "in opening order"
        head.append(f"\n{order} · k/K or click a header: sort · ", style="dim")
        head.append("bold green", style="bold green")
        head.append(": best · x: export", style="dim")
        return head

    @on(ComparisonTable.RunChosen)
    def _run_chosen(self, message: ComparisonTable.RunChosen) -> None:
        self.activate_pane(message.run_id)

    @on(ComparisonTable.SortChanged)
    def _sort_changed(self) -> None:
        self._refresh_compare(force=True)
        self._save_session()

    def action_compare_view(self) -> None:
        self._view_chosen = True
        self.set_compare_view(not self.compare_view)

    def set_compare_view(self, on_: bool) -> None:
        screen = self.base_screen
        screen.set_class(on_, "-compare")
        if on_:
            screen.add_class("-runs-only")
            self._refresh_compare(force=True)
        self._save_session()

    def action_sort(self) -> None:
        self.compare_table.cycle_sort()

    def action_sort_reverse(self) -> None:
        table = self.compare_table
        table.set_sort(table.sort_key or "avg_gap", not table.reverse if table.sort_key else False)

    def action_export(self) -> None:
        self._refresh_compare(force=True)
        n = sum(e.finished for e in self.compare_table.shown())

        def chosen(choice: str | None) -> None:
            if not choice:
                return
            try:
                if choice == "svg":
                    written = [self.export_svg()]
                else:
                    written = [self.export_comparison(f) for f in (("md", "csv", "json") if choice == "all"
                                                                   else (choice,))]
            except (UserError, OSError) as exc:
                self.notify(str(exc), title="export", severity="error")
                return
            self.notify("\n".join(short_path(p) for p in written), title="exported")

        self.push_screen(ExportScreen(short_path(self.export_dir), n), chosen)

    def export_comparison(self, fmt: str, path: str | Path | None = None) -> Path:
        """Write the comparison's finished runs, in the order shown, as `coun-lab compare` prints
        them (md, csv or json); returns the file."""
        if fmt not in EXPORT_SUFFIX:
            raise UserError(f"unknown format {fmt!r}; use md, csv or json")
        self._refresh_compare(force=True)
        rows = [e.row for e in self.compare_table.shown() if e.finished]
        if not rows:
            raise UserError("no finished run in the comparison yet: nothing to export")
        text = report.render(rows, fmt)
        path = Path(path) if path else _fresh(self.export_dir / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"
                                                                f"{EXPORT_SUFFIX[fmt]}")
        with atomic_write(path, "w") as fh:
            fh.write(text)
        return path

    def export_svg(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path else _fresh(self.export_dir / f"coun-lab-{time.strftime('%Y%m%d-%H%M%S')}.svg")
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(self.save_screenshot(path.name, str(path.parent)))

    # --- run history: open, rename, tag, delete -----------------------------------------------

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

    # --- session: the panes open last time ----------------------------------------------------

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

    # --- actions ------------------------------------------------------------------------------

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
        """Close a pane (a running or queued run is cancelled; its directory stays)."""
        pane = self._panes.pop(run_id, None)
        if pane is None:
            return
        if (cancel := self._cancels.get(run_id)) is not None:
            cancel.set()
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
        await self.stop_runs()
        self.exit()

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


def _fresh(path: Path) -> Path:
    """`path`, or path-2, path-3... when it exists (two exports in the same second)."""
    n = 2
    out = path
    while out.exists():
        out = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return out


def _column_names():
    from coun_tui.tui.widgets.compare import COLUMNS

    return COLUMNS


def _spec_dict(spec: RunSpec) -> dict:
    from coun_tui.engine.runs import spec_to_dict

    return spec_to_dict(spec)


def run_app(model: str | None = None, dataset: str | None = None, data_root: str | None = None,
            runs_dir: str | None = None) -> None:
    """Open the lab (the entry point behind `coun-lab` and `coun-lab tui`); it reopens the runs
    that were open when it last closed on this runs directory."""
    CounLab(model=model, dataset=dataset, data_root=data_root, runs_dir=runs_dir, session=True).run()


if __name__ == "__main__":
    run_app()
