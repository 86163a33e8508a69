"""coun-lab's Textual app: set up a forget request, run it in the background, watch it, keep it.

Every run is a thread worker that consumes `engine.runs.record` (which also writes the run
directory) and posts its events as messages; a threading.Event per run is the cancel token the
engine checks every step. The UI thread alone touches widgets.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from coun_tui.engine import UserError, paths
from coun_tui.engine.events import Cancelled, Failed, Step
from coun_tui.engine.runner import RunSpec
from coun_tui.tui.commands import LabCommands
from coun_tui.tui.help_screen import HelpScreen
from coun_tui.tui.messages import ModelLoaded, RunEvent, RunFinished, RunPrepared, RunSteps, TsneReady
from coun_tui.tui.runlog import RunLog, describe_spec, find_reference, read_metrics, read_run
from coun_tui.tui.widgets.model_picker import ModelPicker, RunPicker
from coun_tui.tui.widgets.run_pane import RunPane, short_path
from coun_tui.tui.widgets.setup_panel import SetupPanel

STEP_POST_SECONDS = 0.05  # a worker batches steps at most this long before posting them
STATUS_GLYPH = {"preparing": "…", "running": "▶", "done": "✔", "failed": "✖", "cancelled": "■",
                "incomplete": "?"}


def forget_tag(spec: RunSpec) -> str:
    f = spec.forget
    if f.classes:
        return "class" + "+".join(str(c) for c in f.classes)
    if f.fraction is not None:
        return f"frac{f.fraction * 100:g}s{f.seed}"
    return "none"


class CounLab(App):
    """The lab. Constructed like `run_app` (model, dataset, data_root, runs_dir) for Pilot tests."""

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
        Binding("e", "tsne", "t-SNE"),
        Binding("o", "open_run", "Open run"),
        Binding("m", "pick_model", "Model"),
        Binding("s", "toggle_setup", "Setup"),
        Binding("w", "close_pane", "Close pane", show=False),
        Binding("left_square_bracket", "prev_pane", "Prev pane", show=False),
        Binding("right_square_bracket", "next_pane", "Next pane", show=False),
        Binding("d", "toggle_dark", "Light/dark", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("f1", "help", "Help", show=False, priority=True),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, model: str | None = None, dataset: str | None = None, data_root: str | None = None,
                 runs_dir: str | Path | None = None) -> None:
        super().__init__()
        self.model_path = str(model or paths.DEFAULT_MODEL)
        self.dataset_override, self.data_root = dataset, data_root
        self.runs_dir = Path(runs_dir) if runs_dir else paths.default_runs_dir()
        self._cancels: dict[str, threading.Event] = {}
        self._run_workers: dict[str, Worker] = {}
        self._seq = 0

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield SetupPanel(self.runs_dir, id="setup")
            with Vertical(id="runs"):
                yield Static("No runs yet. Set up on the left and press ctrl+r to run, or o to open a saved run.",
                             id="empty")
                yield TabbedContent(id="tabs")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tabs").display = False
        self.load_model(self.model_path, self.dataset_override, self.data_root)

    @property
    def setup_panel(self) -> SetupPanel:
        return self.query_one(SetupPanel)

    def panes(self) -> list[RunPane]:
        return list(self.query(RunPane))

    def pane(self, run_id: str) -> RunPane | None:
        for p in self.query(RunPane):
            if p.run_id == run_id:
                return p
        return None

    @property
    def active_pane(self) -> RunPane | None:
        tabs = self.query_one("#tabs", TabbedContent)
        active = tabs.active_pane
        return active.query_one(RunPane) if active is not None else None

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
            return
        self.model_path = message.path
        self.setup_panel.set_model(message.path, message.meta, message.dataset, self.data_root)
        self.sub_title = Path(message.path).name

    def action_pick_model(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.load_model(path, None, self.data_root)

        self.push_screen(ModelPicker(self.runs_dir), chosen)

    # --- launching ----------------------------------------------------------------------------

    def action_launch(self) -> None:
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
        return self.start_run(spec, setup.dataset.classes if setup.dataset else None)

    def start_run(self, spec: RunSpec, class_names: list[str] | None = None) -> RunPane:
        """Open a pane for `spec` and train it in a background thread; returns the pane."""
        self._seq += 1
        run_id = f"run-{self._seq}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = self.runs_dir / f"{stamp}-{spec.method}{'+cl' if spec.cl else ''}-{forget_tag(spec)}"
        n = 2
        while out_dir.exists() or any(p.runlog.run_dir == out_dir for p in self.panes()):
            out_dir = out_dir.with_name(f"{out_dir.name.rsplit('~', 1)[0]}~{n}")
            n += 1
        from coun_tui.engine.runs import spec_to_dict

        spec_dict = spec_to_dict(spec)
        log = RunLog(title=describe_spec(spec_dict, class_names), run_dir=out_dir, spec=spec_dict)
        pane = self._add_pane(run_id, log, class_names, live=True)
        cancel = threading.Event()
        self._cancels[run_id] = cancel
        self._run_workers[run_id] = self._train(run_id, spec, out_dir, cancel)
        return pane

    def _add_pane(self, run_id: str, log: RunLog, class_names, live: bool) -> RunPane:
        pane = RunPane(run_id, log, class_names, live=live)
        tabs = self.query_one("#tabs", TabbedContent)
        tabs.display = True
        self.query_one("#empty").display = False
        tabs.add_pane(TabPane(self._tab_label(run_id, log), pane, id=f"tab-{run_id}"))
        tabs.active = f"tab-{run_id}"
        if self.screen.has_class("-narrow"):
            self.screen.add_class("-runs-only")
        return pane

    @staticmethod
    def _tab_label(run_id: str, log: RunLog) -> str:
        method = str(log.spec.get("method", "run")) if log.spec else "run"
        if log.spec.get("cl") and method != "coun":
            method += "+cl"
        return f"{STATUS_GLYPH.get(log.status, '')} {run_id.split('-')[-1]} {method}"

    def _update_tab(self, pane: RunPane) -> None:
        with contextlib.suppress(Exception):
            self.query_one("#tabs", TabbedContent).get_tab(f"tab-{pane.run_id}").label = \
                self._tab_label(pane.run_id, pane.runlog)

    @work(thread=True, exit_on_error=False, group="runs")
    def _train(self, run_id: str, spec: RunSpec, out_dir: Path, cancel: threading.Event) -> str:
        from coun_tui.engine.runner import prepare
        from coun_tui.engine.runs import record

        worker = get_current_worker()
        post = self.post_message
        status = "failed"
        try:
            prep = prepare(spec)
        except UserError as exc:
            post(RunEvent(run_id, Failed(str(exc))))
            post(RunFinished(run_id, status))
            return status
        except Exception as exc:  # noqa: BLE001 - any failure is the run's, never the app's
            post(RunEvent(run_id, Failed(f"{type(exc).__name__}: {exc}")))
            post(RunFinished(run_id, status))
            return status
        post(RunPrepared(run_id, {"classes": prep.dataset.classes,
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

    @on(RunSteps)
    def _steps(self, message: RunSteps) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.apply_steps(message.steps)

    @on(RunEvent)
    def _event(self, message: RunEvent) -> None:
        if (pane := self.pane(message.run_id)) is not None:
            pane.apply(message.event)
            if message.event.kind in ("started", "done", "failed", "cancelled"):
                self._update_tab(pane)
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
        if message.status == "done":
            self.notify(f"saved in {short_path(pane.runlog.run_dir)}", title=f"{pane.runlog.title}: done")
            if pane.runlog.spec.get("method") == "retrain":
                self._share_reference(pane.runlog.run_dir)

    def _share_reference(self, ref_dir: Path | None) -> None:
        """A Retrain run finished: it becomes the reference of the panel and of panes on its split."""
        self.setup_panel.refresh_reference()
        if ref_dir is None:
            return
        from coun_tui.engine.forget import Split

        try:
            ref_split = Split.load(ref_dir / "split.npz")
        except UserError:
            return
        m = read_metrics(ref_dir) or {}
        ref = {k: float(m[k]) for k in ("RA", "UA", "TA", "MIA") if k in m}
        for pane in self.panes():
            if pane.runlog.run_dir == ref_dir or pane.runlog.reference or pane.runlog.run_dir is None:
                continue
            with contextlib.suppress(Exception):
                if Split.load(pane.runlog.run_dir / "split.npz").same_as(ref_split) and len(ref) == 4:
                    pane.set_reference(ref)

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
            self.notify("t-SNE needs the raw features of a live run; a replayed run keeps its PCA only",
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

    def action_open_run(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.open_run(path)

        self.push_screen(RunPicker(self.runs_dir), chosen)

    def open_run(self, path: str | Path, limit: int | None = None) -> RunPane | None:
        """Replay a saved run into a pane (`limit`: only its first N events, as if mid-run)."""
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
                    log.reference = {k: float(m[k]) for k in ("RA", "UA", "TA", "MIA")}
        self._seq += 1
        return self._add_pane(f"run-{self._seq}", log, names, live=False)

    def action_close_pane(self) -> None:
        pane = self.active_pane
        if pane is None:
            return
        if (cancel := self._cancels.get(pane.run_id)) is not None:
            cancel.set()
        tabs = self.query_one("#tabs", TabbedContent)
        tabs.remove_pane(f"tab-{pane.run_id}")
        if tabs.tab_count <= 1:
            tabs.display = False
            self.query_one("#empty").display = True

    def action_prev_pane(self) -> None:
        self._cycle(-1)

    def action_next_pane(self) -> None:
        self._cycle(1)

    def _cycle(self, step: int) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        ids = [p.id for p in tabs.query(TabPane)]
        if ids and tabs.active in ids:
            tabs.active = ids[(ids.index(tabs.active) + step) % len(ids)]

    def action_toggle_setup(self) -> None:
        self.screen.toggle_class("-runs-only")

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        await self.stop_runs()
        self.exit()

    async def stop_runs(self) -> None:
        """Set every cancel token and wait for the run workers to return."""
        for cancel in self._cancels.values():
            cancel.set()
        running = [w for w in self.workers if w.group in ("runs", "tsne", "model")
                   and w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if running:
            self.notify(f"stopping {len(running)} background job(s)…", timeout=3)
        for w in running:
            with contextlib.suppress(Exception):
                await w.wait()


def _spec_dict(spec: RunSpec) -> dict:
    from coun_tui.engine.runs import spec_to_dict

    return spec_to_dict(spec)


def run_app(model: str | None = None, dataset: str | None = None, data_root: str | None = None,
            runs_dir: str | None = None) -> None:
    """Open the lab (the entry point behind `coun-lab` and `coun-lab tui`)."""
    CounLab(model=model, dataset=dataset, data_root=data_root, runs_dir=runs_dir).run()


if __name__ == "__main__":
    run_app()
