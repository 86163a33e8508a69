"""One run in a pane: header and verdict, progress, loss curves, metrics table, embedding scatter.

A pane draws from a RunLog, so a live run (events from a worker) and a saved run (events.jsonl
replayed) look the same. Redraws are throttled: events mark parts dirty, a timer redraws them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, ProgressBar, Static

from coun_tui.engine.events import Event, Step, format_duration
from coun_tui.engine.records import METRICS
from coun_tui.engine.runlog import RunLog
from coun_tui.tui.widgets.plots import EmbeddingPlot, LossPlot

REDRAW_SECONDS = 0.5  # at most 2 chart redraws a second per pane (a plotext build costs tens of ms)
STEPS_REDRAW_SECONDS = 1.0  # new steps alone redraw the loss curve once a second (following costs little)
STATUS_STYLE = {"queued": "magenta", "preparing": "yellow", "running": "bold cyan", "done": "bold green",
                "failed": "bold red", "cancelled": "bold yellow", "died": "bold red", "damaged": "yellow"}


def short_path(path: Path | str | None) -> str:
    """A path as a person would type it: relative to the working directory or ~ when possible."""
    if path is None:
        return ""
    p = Path(path).absolute()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(p.relative_to(base))
        except ValueError:
            continue
    return str(p)


def clipped(text: str, limit: int) -> str:
    """`text` on one line and at most `limit` characters (a name of thousands must not push the
    rest of a row or a tab strip off screen)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


fmt_duration = format_duration  # the CLI's progress bar writes durations the same way


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def shown_hparams(method: str, hp: dict) -> list[str]:
    """The settings that shape a run of `method` ("ft+cl" included): the method's own, the lr and
    batch, and lambda and tau only when the contrastive term is on (every method carries them)."""
    from coun_tui.engine.methods import all_methods

    base = method.removesuffix("+cl")
    own = set(all_methods()[base].params) if base in all_methods() else set(hp)
    cl = method.endswith("+cl") or base == "coun"
    order = ("lr", "batch_size", "lambda", "tau", "alpha", "gamma", "l1_epochs", "mask_ratio", "schedule")
    return [k for k in order if k in hp and (k in own or k in ("lr", "batch_size", "schedule"))
            and (cl or k not in ("lambda", "tau"))]


PROBE_NOTE = "epochs: probe estimates, MIA ± its spread over draws · final: full sets"


class MetricsTable(DataTable):
    """RA, UA, TA, MIA per epoch (probe subsets) and final (full sets), with gaps to Retrain.

    A gap is marked ↓ (and green) when it shrank since the row above and ↑ (red) when it grew. A live MIA
    shows ± its spread over balanced draws of the attack (engine: metrics.mia_spread) when that
    is at least half a point: a number that a redraw could change.
    """

    COLUMNS = ("epoch", *METRICS, "Avg.Gap")

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._ensure_columns()

    def _ensure_columns(self) -> None:
        # The pane may draw before this table's own Mount is handled: columns first, always.
        if not self.columns:
            for name in self.COLUMNS:
                self.add_column(name, key=name)

    def draw(self, log: RunLog) -> None:
        self._ensure_columns()
        self.clear()
        prev: dict[str, float] | None = None
        rows = [(str(e.epoch), e.metrics, log.gap(e.metrics, e.gap)) for e in sorted(log.epochs, key=lambda e: e.epoch)]
        if log.done:
            rows.append(("final", log.done.metrics, log.final_gap()))
        for label, metrics, gap in rows:
            cells: list[Text | str] = [Text(label, style="bold" if label == "final" else "")]
            for key in METRICS:
                cell = Text(_num(metrics.get(key), 1))
                spread = metrics.get("MIA_sd") if key == "MIA" else None
                if spread is not None and math.isfinite(spread) and spread >= 0.5:
                    cell.append(f" ±{spread:.0f}", style="bold")
                if gap is not None:
                    before = prev.get(key) if prev else None
                    cell.append(" ")
                    cell.append(f"({gap[key]:.1f}{self._trend(gap[key], before)})",
                                style=self._style(gap[key], before))
                cells.append(cell)
            if gap is not None:
                before = prev.get("avg") if prev else None
                cells.append(Text(f"{gap['avg']:.2f}{self._trend(gap['avg'], before)}",
                                  style=self._style(gap["avg"], before)))
            else:
                cells.append(Text("–", style="dim"))
            self.add_row(*cells, key=label)
            prev = gap
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    @staticmethod
    def _trend(value: float, before: float | None) -> str:
        """↓ when the gap shrank since the row above, ↑ when it grew: the colour's meaning in a glyph."""
        if before is None or abs(value - before) < 0.05:
            return ""
        return "↓" if value < before else "↑"

    @staticmethod
    def _style(value: float, before: float | None) -> str:
        if before is None or abs(value - before) < 0.05:
            return "dim"
        return "green" if value < before else "red"


class RunPane(Vertical):
    """Everything about one run. `run_id` names it in messages; `log` holds its events.

    Focused, the arrow and page keys scroll its body (charts, metrics), which is taller than an
    80x24 screen."""

    can_focus = True
    BINDINGS = [Binding("up", "scroll_body('up')", show=False), Binding("down", "scroll_body('down')", show=False),
                Binding("pageup", "scroll_body('page_up')", show=False),
                Binding("pagedown", "scroll_body('page_down')", show=False)]

    def __init__(self, run_id: str, log: RunLog, class_names: list[str] | None = None, live: bool = True,
                 **kwargs) -> None:
        super().__init__(id=run_id, **kwargs)
        self.run_id, self.runlog, self.class_names, self.live = run_id, log, class_names, live
        self.tsne: tuple[int, list] | None = None  # (epoch, xy) when t-SNE is shown
        self._dirty: set[str] = {"all"}
        self._steps_drawn = 0.0

    def compose(self) -> ComposeResult:
        with Horizontal(classes="run-head"):
            yield Static(id="title", classes="run-title")
            yield Static(id="status", classes="run-status")
        yield Static(id="where", classes="run-where")
        with Horizontal(classes="run-progress"):
            yield ProgressBar(id="bar", show_eta=False, show_percentage=True)
            yield Static(id="stats", classes="run-stats")
        yield Static(id="error", classes="run-error")
        with VerticalScroll(classes="run-body", can_focus=False):
            with Horizontal(classes="run-row"):
                yield LossPlot(id="loss", classes="chart")
                yield EmbeddingPlot(id="embedding", classes="chart")
            with Horizontal(classes="run-row2"):
                with Vertical(classes="metrics-box"):
                    yield Static(PROBE_NOTE, classes="metrics-note")
                    yield MetricsTable(id="metrics")
                yield Static(id="details", classes="run-details")

    def on_mount(self) -> None:
        self.query_one("#error").display = False
        self.set_interval(REDRAW_SECONDS, self.flush)
        self.flush()

    # --- feeding ------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        self.runlog.apply(event)
        self._dirty.add({"step": "steps", "epoch": "epochs", "embedding": "embedding"}.get(event.kind, "all"))

    def apply_steps(self, steps: list[Step]) -> None:
        for s in steps:
            self.runlog.apply(s)
        self._dirty.add("steps")

    def set_facts(self, facts: dict) -> None:
        self.runlog.title = facts.get("title", self.runlog.title)
        self.runlog.spec = facts.get("spec", self.runlog.spec)
        self.class_names = facts.get("classes", self.class_names)
        self._dirty.add("all")

    def set_state(self, state) -> None:
        """The job's state read from its directory (queued behind others, died, damaged...)."""
        self.runlog.apply_state(state)
        self._dirty.add("all")

    def set_reference(self, reference: dict[str, float] | None) -> None:
        self.runlog.reference = reference
        self._dirty.add("epochs")

    def set_labels(self, labels: dict) -> None:
        self.runlog.labels = labels
        self._dirty.add("all")

    def action_scroll_body(self, where: str) -> None:
        getattr(self.query_one(".run-body", VerticalScroll), f"scroll_{where}")()

    def on_click(self) -> None:
        self.app.activate_pane(self.run_id)  # type: ignore[attr-defined]

    def show_tsne(self, epoch: int | None, xy) -> None:
        self.tsne = None if epoch is None else (epoch, xy)
        self._dirty.add("embedding")

    # --- drawing ------------------------------------------------------------------------------

    def flush(self) -> None:
        # A hidden pane (another tab is shown) keeps its dirt until it is shown again.
        if not self.is_mounted or not self.display:
            return
        if self._dirty == {"steps"} and time.monotonic() - self._steps_drawn < STEPS_REDRAW_SECONDS:
            return
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        everything = "all" in dirty
        self._draw_head()
        if everything or "steps" in dirty:
            self.query_one(LossPlot).draw(self.runlog)
            self._steps_drawn = time.monotonic()
        if everything or "epochs" in dirty:
            self.query_one(MetricsTable).draw(self.runlog)
        if everything or "embedding" in dirty:
            self.query_one(EmbeddingPlot).draw(self.runlog, self.class_names, self.tsne)
        if everything or "epochs" in dirty:
            self._draw_details()

    def _draw_head(self) -> None:
        log = self.runlog
        title = Text(log.title or self.run_id, style="bold")
        if log.labels.get("name"):
            title = Text.assemble((clipped(log.labels["name"], 60), "bold"), ("  " + (log.title or ""), "dim"))
        for tag in log.labels.get("tags") or []:
            title.append(f" #{tag}", style="magenta")
        self.query_one("#title", Static).update(title)
        status = log.status
        if status == "queued":
            status = f"queued{' · ' + log.queue_note if log.queue_note else ''}"
        elif status == "cancelled" and log.cancelled_at == 0 and not log.started:
            status = "cancelled before it started"
        elif status == "cancelled":
            status = f"cancelled at step {log.cancelled_at}"
        elif status == "running" and not self.live:
            status = "running (replay)"
        elif status in ("died", "damaged"):
            status = f"{status} · {log.reason}"
        self.query_one("#status", Static).update(Text.from_markup(f"[{STATUS_STYLE.get(log.status, '')}]"
                                                                   f"● {status}[/]"))
        where = f"saved in {short_path(log.run_dir)}" if log.run_dir else ""
        if log.done and log.run_dir:
            kept = [n for n in ("model.safetensors", "metrics.json", "events.jsonl") if (log.run_dir / n).is_file()]
            where += f"  ({', '.join(kept)})" if kept else ""
        self.query_one("#where", Static).update(Text(where, style="dim"))
        bar = self.query_one("#bar", ProgressBar)
        # Indeterminate (animated) only while loading; a queued or failed run shows an empty bar.
        bar.update(total=log.total_steps or (None if log.status == "preparing" else 1), progress=log.step)
        parts = []
        if log.started:
            s = log.last_step
            parts.append(f"epoch {s.epoch if s else 0}/{log.started.epochs}")
            parts.append(f"step {log.step}/{log.total_steps}")
            parts.append(f"{log.images_per_second:,.0f} img/s")
            parts.append(f"{log.flops / 1e15:.4f} PFLOPs")
            if log.finished:
                parts.append(f"took {fmt_duration(log.seconds)}")
            else:
                parts.append(f"ETA {fmt_duration(log.eta_seconds)}")
            parts.append(log.started.device)
        elif log.status == "preparing":
            parts.append("loading the model and data…")
        elif log.status == "queued":
            parts.append("waits for its device: starts when the run before it ends (c cancels)")
        self.query_one("#stats", Static).update(" · ".join(parts))
        error = self.query_one("#error", Static)
        failed = log.status in ("failed", "died", "damaged")
        error.display = failed or bool(log.damage)
        what = {"failed": "run failed", "died": "the worker died", "damaged": "damaged run"}.get(log.status)
        lines = [f"✖ {what}: {log.reason}"] if failed else []
        if log.damage:
            more = f" (and {len(log.damage) - 1} more)" if len(log.damage) > 1 else ""
            lines.append(f"⚠ damaged: {clipped(log.damage[0], 160)}{more}; shown as far as it could be read")
        error.update(Text("\n".join(lines), style="bold"))

    def _draw_details(self) -> None:
        log = self.runlog
        lines = Text()
        if log.started:
            st = log.started
            lines.append(f"{st.method} on {st.device}\n", style="bold")
            lines.append(f"retain {st.n_retain:,} · forget {st.n_forget:,}\n")
            lines.append(f"{st.epochs} epoch(s) × {st.steps_per_epoch} steps\n")
            hp = st.hparams
            lines.append(" ".join(f"{k}={hp[k]}" for k in shown_hparams(st.method, hp)) + "\n", style="dim")
        if log.spec.get("method") == "retrain" or (log.started and log.started.method == "retrain"):
            lines.append("this run is the Retrain reference: the others' gaps are measured to it\n", style="dim")
        elif log.reference:
            lines.append("gaps vs Retrain: " + " ".join(f"{k} {log.reference[k]:.1f}" for k in METRICS) + "\n",
                         style="dim")
        elif log.epochs and log.epochs[-1].gap is None:
            lines.append("no Retrain reference for this split: gaps stay empty (t launches one)\n", style="dim")
        deeper = log.done.metrics if log.done else (log.epochs[-1].extra or {}) if log.epochs else {}
        if deeper.get("cka_forget") is not None:
            lines.append(f"vs Retrain on D_u: agree {_num(deeper.get('agree_forget'), 1)}% · CKA "
                         f"{_num(deeper.get('cka_forget'), 3)} (test {_num(deeper.get('cka_test'), 3)})\n")
        if deeper.get("knn_forget") is not None:
            retrain = deeper.get("knn_forget_retrain")
            lines.append(f"kNN probe on D_u {_num(deeper.get('knn_forget'), 1)}%"
                         + (f" (Retrain {_num(retrain, 1)}%)" if retrain is not None else "")
                         + " · MIA entropy/m-entropy/loss " + "/".join(_num(deeper.get(k), 1) for k in
                                                                      ("mia_entropy", "mia_m_entropy", "mia_loss"))
                         + "\n", style="dim")
        if log.done:
            m = log.done.metrics
            lines.append("final (full sets): ", style="bold")
            lines.append(" ".join(f"{k} {_num(m.get(k))}" for k in METRICS))
            gap = log.final_gap()
            if gap:
                lines.append(f" · Avg.Gap {gap['avg']:.2f}", style="bold")
            lines.append(f"\n{log.done.flops / 1e15:.4f} PFLOPs in {fmt_duration(log.done.seconds)}")
        self.query_one("#details", Static).update(lines)
