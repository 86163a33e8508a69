"""One run in a pane: header and verdict, progress, loss curves, metrics table, embedding scatter.

A pane draws from a RunLog, so a live run (events from a worker) and a saved run (events.jsonl
replayed) look the same. Redraws are throttled: events mark parts dirty, a timer redraws them.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, ProgressBar, Static

from coun_tui.engine.events import Event, Step
from coun_tui.tui.runlog import METRICS, RunLog
from coun_tui.tui.widgets.plots import EmbeddingPlot, LossPlot

REDRAW_SECONDS = 0.5  # at most 2 chart redraws a second per pane (a plotext build costs tens of ms)
STATUS_STYLE = {"queued": "magenta", "preparing": "yellow", "running": "bold cyan", "done": "bold green",
                "failed": "bold red", "cancelled": "bold yellow", "incomplete": "yellow"}


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


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


class MetricsTable(DataTable):
    """RA, UA, TA, MIA per epoch (probe subsets) and final (full sets), with gaps to Retrain.

    A gap is coloured green when it shrank since the row above and red when it grew.
    """

    COLUMNS = ("epoch", "RA", "UA", "TA", "MIA", "Avg.Gap")

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
                if gap is not None:
                    cell.append(" ")
                    cell.append(f"({gap[key]:.1f})", style=self._style(gap[key], prev and prev.get(key)))
                cells.append(cell)
            if gap is not None:
                cells.append(Text(f"{gap['avg']:.2f}", style=self._style(gap["avg"], prev and prev.get("avg"))))
            else:
                cells.append(Text("–", style="dim"))
            self.add_row(*cells, key=label)
            prev = gap
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    @staticmethod
    def _style(value: float, before: float | None) -> str:
        if before is None or abs(value - before) < 0.05:
            return "dim"
        return "green" if value < before else "red"


class RunPane(Vertical):
    """Everything about one run. `run_id` names it in messages; `log` holds its events."""

    can_focus = True

    def __init__(self, run_id: str, log: RunLog, class_names: list[str] | None = None, live: bool = True,
                 **kwargs) -> None:
        super().__init__(id=run_id, **kwargs)
        self.run_id, self.runlog, self.class_names, self.live = run_id, log, class_names, live
        self.tsne: tuple[int, list] | None = None  # (epoch, xy) when t-SNE is shown
        self._dirty: set[str] = {"all"}

    def compose(self) -> ComposeResult:
        with Horizontal(classes="run-head"):
            yield Static(id="title", classes="run-title")
            yield Static(id="status", classes="run-status")
        yield Static(id="where", classes="run-where")
        with Horizontal(classes="run-progress"):
            yield ProgressBar(id="bar", show_eta=False, show_percentage=True)
            yield Static(id="stats", classes="run-stats")
        yield Static(id="error", classes="run-error")
        with VerticalScroll(classes="run-body"):
            with Horizontal(classes="run-row"):
                yield LossPlot(id="loss", classes="chart")
                yield EmbeddingPlot(id="embedding", classes="chart")
            with Horizontal(classes="run-row2"):
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

    def set_reference(self, reference: dict[str, float] | None) -> None:
        self.runlog.reference = reference
        self._dirty.add("epochs")

    def set_labels(self, labels: dict) -> None:
        self.runlog.labels = labels
        self._dirty.add("all")

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
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        everything = "all" in dirty
        self._draw_head()
        if everything or "steps" in dirty:
            self.query_one(LossPlot).draw(self.runlog)
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
            title = Text.assemble((log.labels["name"], "bold"), ("  " + (log.title or ""), "dim"))
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
        error.display = log.status == "failed"
        if log.status == "failed":
            error.update(Text(f"✖ run failed: {log.reason}", style="bold"))

    def _draw_details(self) -> None:
        log = self.runlog
        lines = Text()
        if log.started:
            st = log.started
            lines.append(f"{st.method} on {st.device}\n", style="bold")
            lines.append(f"retain {st.n_retain:,} · forget {st.n_forget:,}\n")
            lines.append(f"{st.epochs} epoch(s) × {st.steps_per_epoch} steps\n")
            hp = st.hparams
            keys = [k for k in ("lr", "batch_size", "lambda", "tau", "alpha", "gamma", "mask_ratio",
                                "schedule") if k in hp]
            lines.append(" ".join(f"{k}={hp[k]}" for k in keys) + "\n", style="dim")
        if log.reference:
            lines.append("gaps vs Retrain: " + " ".join(f"{k} {log.reference[k]:.1f}" for k in METRICS) + "\n",
                         style="dim")
        elif log.epochs and log.epochs[-1].gap is None:
            lines.append("no Retrain reference for this split: gaps stay empty (t launches one)\n", style="dim")
        if log.done:
            m = log.done.metrics
            lines.append("final (full sets): ", style="bold")
            lines.append(" ".join(f"{k} {_num(m.get(k))}" for k in METRICS))
            gap = log.final_gap()
            if gap:
                lines.append(f" · Avg.Gap {gap['avg']:.2f}", style="bold")
            lines.append(f"\n{log.done.flops / 1e15:.4f} PFLOPs in {fmt_duration(log.done.seconds)}")
        self.query_one("#details", Static).update(lines)
