"""The comparison table of every open run, in the layout of the paper's Table 1.

Rows come from `engine.report.row_of` (the one table builder): a finished run's row is its
metrics.json exactly as `coun-lab compare` reads it; a run still going gets a provisional row from
its latest probe evaluation (dim, never marked best, never exported). Gaps recorded by the run
are used as they are; a run recorded without a reference gets them from a Retrain reference found
later on its split (the same |metric - Retrain| as the engine's).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from coun_tui.engine import UserError, report
from coun_tui.tui.runlog import METRICS, RunLog

# (key, header): keys are report.row_of keys, plus "state".
COLUMNS = [("method", "Method"), ("RA", "RA (Δ)"), ("UA", "UA (Δ)"), ("TA", "TA (Δ)"), ("MIA", "MIA (Δ)"),
           ("avg_gap", "Avg. Gap ↓"), ("pflops", "PFLOPs ↓"), ("seconds", "Time (s)"), ("state", "State"),
           ("run", "Run")]
SORTABLE = [k for k, _ in COLUMNS]
STATE_STYLE = {"queued": "magenta", "preparing": "yellow", "running": "cyan", "done": "green",
               "failed": "red", "cancelled": "yellow", "incomplete": "yellow"}


@dataclass
class Entry:
    """One open run as a table row."""

    run_id: str
    log: RunLog
    row: dict[str, Any]  # report.row_of(...)
    finished: bool  # a metrics.json row: marked best when it is, exported

    @property
    def run_dir(self) -> Path | None:
        return self.log.run_dir


def _clean(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def entry_of(run_id: str, log: RunLog) -> Entry:
    m: dict[str, Any] | None = None
    if log.status == "done" and log.run_dir is not None:
        try:
            m = report.load_run(log.run_dir)
        except (UserError, OSError, ValueError):
            m = None
    finished = m is not None
    if m is None:  # provisional: the latest probe evaluation, cost and time so far
        spec = log.spec or {}
        method = (log.started.method if log.started else str(spec.get("method", "?"))).removesuffix("+cl")
        latest = max(log.epochs, key=lambda e: e.epoch).metrics if log.epochs else {}
        m = {"method": method, "cl": bool(spec.get("cl")) and method != "coun",
             "name": log.run_dir.name if log.run_dir else log.title,
             **{k: latest.get(k) for k in METRICS}, "pflops": log.flops / 1e15 if log.started else None,
             "seconds": log.seconds if log.started else None}
        epoch_gap = max(log.epochs, key=lambda e: e.epoch).gap if log.epochs else None
        if epoch_gap:
            m["gap"], m["avg_gap"] = {k: epoch_gap[k] for k in METRICS}, epoch_gap["avg"]
    if not m.get("gap") and m.get("method") != "retrain" and all(_clean(m.get(k)) for k in METRICS):
        gap = log.gap({k: m[k] for k in METRICS}, None)  # from a reference found later
        if gap:
            m = {**m, "gap": {k: gap[k] for k in METRICS}, "avg_gap": gap["avg"]}
    return Entry(run_id, log, report.row_of(m), finished)


def sort_entries(entries: list[Entry], key: str | None, reverse: bool = False) -> list[Entry]:
    """Missing values last either way, like `coun-lab compare --sort` (stable)."""
    if not key:
        return list(entries)

    def value(e: Entry):
        if key == "state":
            return e.log.status
        if key in METRICS and any(_clean(x.row.get(f"gap_{key}")) for x in entries):
            return e.row.get(f"gap_{key}")  # Table 1 ranks RA..MIA by their gap to Retrain
        return e.row.get(key)

    present = [e for e in entries if _clean(value(e))]
    missing = [e for e in entries if not _clean(value(e))]
    return sorted(present, key=value, reverse=reverse) + missing


def state_text(log: RunLog) -> Text:
    s = log.status
    if s == "queued":
        label = f"queued{' · ' + log.queue_note if log.queue_note else ''}"
    elif s == "running" and log.total_steps:
        label = f"running {100 * log.step / log.total_steps:.0f}%"
    elif s == "done" and log.spec.get("method") == "retrain":
        label = "done · reference"
    else:
        label = s
    return Text(label, style=STATE_STYLE.get(s, ""))


class ComparisonTable(DataTable):
    """Click a header to sort by it (again: reverse); enter on a row shows that run's pane."""

    class RunChosen(Message):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    class SortChanged(Message):
        pass

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, cursor_foreground_priority="renderable", **kwargs)
        self.entries: list[Entry] = []
        self.sort_key: str | None = None
        self.reverse = False
        self.active_run: str | None = None  # the run whose pane is shown: the cursor's row

    def show_active(self, run_id: str | None) -> None:
        self.active_run = run_id
        if run_id is not None and any(e.run_id == run_id for e in self.entries):
            with contextlib.suppress(Exception):
                self.move_cursor(row=self.get_row_index(run_id), animate=False)

    def on_mount(self) -> None:
        self._ensure_columns()

    def _ensure_columns(self) -> None:
        if not self.columns:  # the app may draw before this table's own Mount is handled
            for key, label in COLUMNS:
                self.add_column(label, key=key)

    def set_sort(self, key: str | None, reverse: bool = False) -> None:
        self.sort_key, self.reverse = key, reverse
        self.draw(self.entries)
        self.post_message(self.SortChanged())

    def cycle_sort(self, step: int = 1) -> None:
        order = [None, *SORTABLE]
        self.set_sort(order[(order.index(self.sort_key) + step) % len(order)], False)

    def shown(self) -> list[Entry]:
        """The entries in the order they are shown."""
        return sort_entries(self.entries, self.sort_key, self.reverse)

    def draw(self, entries: list[Entry]) -> None:
        self._ensure_columns()
        self.entries = entries
        shown = self.shown()
        finished = [e for e in shown if e.finished]
        best = {col: finished[i].run_id for col, i in report.best_per_column([e.row for e in finished]).items()}
        keep = self.active_run
        self.clear()
        for label_key, _ in COLUMNS:
            col = self.columns.get(label_key)  # type: ignore[call-overload]
            if col is not None:
                base = dict(COLUMNS)[label_key]
                mark = (" ▼" if self.reverse else " ▲") if label_key == self.sort_key else ""
                col.label = Text(base + mark, style="bold" if mark else "")
        for e in shown:
            cells: list[Text] = []
            style = "" if e.finished else "dim italic"
            for key, _ in COLUMNS:
                if key == "state":
                    cells.append(state_text(e.log))
                    continue
                if key == "run":
                    name = e.log.labels.get("name") or (e.run_dir.name if e.run_dir else e.log.title)
                    tags = " ".join(f"#{t}" for t in e.log.labels.get("tags") or [])
                    cells.append(Text.assemble((name, style), ("  " + tags if tags else "", "magenta")))
                    continue
                text = str(e.row.get(key) or "?") if key == "method" else report._fmt(e.row, key, False)
                if best.get(key) == e.run_id and text != "-":
                    cells.append(Text(text, style="bold green"))
                else:
                    cells.append(Text(text, style=style))
            self.add_row(*cells, key=e.run_id)
        if keep is not None and any(e.run_id == keep for e in shown):
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        self.refresh(layout=True)

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        self.set_sort(key, not self.reverse if key == self.sort_key else False)

    @on(DataTable.RowSelected)
    def _row(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(self.RunChosen(event.row_key.value))


class ComparePanel(Vertical):
    """The heading (forget set, the shared Retrain reference or the offer to run it) and the table."""

    def compose(self) -> ComposeResult:
        yield Static(id="compare-head")
        yield ComparisonTable(id="compare-table")

    @property
    def table(self) -> ComparisonTable:
        return self.query_one(ComparisonTable)

    def draw(self, entries: list[Entry], heading: Text) -> None:
        self.query_one("#compare-head", Static).update(heading)
        self.table.draw(entries)
