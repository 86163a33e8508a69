"""The comparison table of every open run, in the layout of the paper's Table 1.

Rows come from `engine.report.row_of` (the one table builder): a finished run's row is its
metrics.json exactly as `coun-lab compare` reads it; a run still going gets a provisional row from
its latest probe evaluation (dim, never marked best, never exported). Gaps recorded by the run
are used as they are; a run recorded without a reference gets them from a Retrain reference found
later on its split (the same |metric - Retrain| as the engine's).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from coun_tui.engine import UserError, report
from coun_tui.engine.records import METRICS
from coun_tui.engine.runlog import RunLog
from coun_tui.tui.widgets.columns import fit as fit_columns


@dataclass(frozen=True)
class Column:
    """One column of the comparison. When the table is wider than its space it first shows
    numbers with one decimal and `short` headers, then hides columns, the highest `priority`
    number first (0: always shown). A new metric is one more Column with its priority."""

    key: str  # a report.row_of key, or "state" / "run"
    header: str
    short: str
    priority: int


COLUMNS = [Column("method", "Method", "Method", 0), Column("RA", "RA (Δ)", "RA", 1), Column("UA", "UA (Δ)", "UA", 1),
           Column("TA", "TA (Δ)", "TA", 1), Column("MIA", "MIA (Δ)", "MIA", 1),
           Column("avg_gap", "Avg. Gap ↓", "Gap↓", 0), Column("pflops", "PFLOPs ↓", "PFLOPs", 3),
           Column("seconds", "Time (s)", "s", 4), Column("state", "State", "State", 2), Column("run", "Run", "Run", 5),
           *(Column(key, label, label, 6) for key, label in report.DEEPER)]  # filled when Retrain kept its reference
HEADERS = {c.key: c.header for c in COLUMNS}
SORTABLE = [c.key for c in COLUMNS]
STATE_STYLE = {"queued": "magenta", "preparing": "yellow", "running": "cyan", "done": "green",
               "failed": "red", "cancelled": "yellow", "incomplete": "yellow",
               "died": "red", "damaged": "yellow"}
STATUS_GLYPH = {"queued": "◦", "preparing": "…", "running": "▶", "done": "✔", "failed": "✖", "cancelled": "■",
                "incomplete": "?", "died": "✗", "damaged": "?"}
BEST = "*"  # marks the best value of a column (bold green too): not by colour alone
SETTING_NAMES = {"batch_size": "bs", "weight_decay": "wd", "mask_ratio": "mask", "l1_epochs": "l1ep"}


def wanted(cells: dict[str, list[Text]]) -> list[Column]:
    """The columns worth showing: the deeper metrics (priority 6) only when some row has them."""
    return [c for c in COLUMNS if c.priority < 6 or any(t.plain.strip("-") for t in cells[c.key])]


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


def _compact(row: dict, key: str) -> str:
    """A cell in fewer characters: one decimal, the gap in brackets right after it."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "pflops":
        return f"{value:.2g}"
    text = f"{value:.1f}"
    gap = row.get(f"gap_{key}")
    return text + (f"({gap:.1f})" if key in METRICS and gap is not None else "")


def _clean(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def entry_of(run_id: str, log: RunLog) -> Entry:
    m: dict[str, Any] | None = None
    if log.status == "done" and log.run_dir is not None:
        try:
            m = report.load_run(log.run_dir)
        except UserError:  # damaged: the pane says so; the row is what the events show
            m = None
    finished = m is not None
    if m is None:  # provisional: the latest probe evaluation, cost and time so far
        spec = log.spec or {}
        method = str(spec.get("method", "?"))
        last = max(log.epochs, key=lambda e: e.epoch) if log.epochs else None
        latest = last.metrics if last else {}
        m = {"method": method, "cl": bool(spec.get("cl")) and method != "coun",
             "name": log.run_dir.name if log.run_dir else log.title,
             **{k: latest.get(k) for k in METRICS}, "pflops": log.flops / 1e15 if log.started else None,
             "seconds": log.seconds if log.started else None, **((last.extra or {}) if last else {})}
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


def settings_of(e: Entry) -> dict[str, Any]:
    """What a run was made with, as far as the comparison tells runs apart: its hyperparameters
    (all of them once it started), seed and forget set."""
    spec = e.log.spec or {}
    hp = dict(e.log.started.hparams) if e.log.started else dict(spec.get("hparams") or {})
    return {**hp, "seed": spec.get("seed", 0), "forget": json.dumps(spec.get("forget") or {}, sort_keys=True)}


def distinguishing(entries: list[Entry]) -> dict[str, str]:
    """run_id -> the settings that tell it from the other rows of the same method ("lr=0.1"),
    its name, or #N when nothing does; empty for a method shown once."""
    out: dict[str, str] = {}
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(str(e.row.get("method")), []).append(e)
    for group in groups.values():
        if len(group) < 2:
            continue
        settings = {e.run_id: settings_of(e) for e in group}
        keys = sorted({k for st in settings.values() for k in st
                       if len({json.dumps(x.get(k), default=str) for x in settings.values()}) > 1})
        for i, e in enumerate(group, 1):
            shown = [f"{SETTING_NAMES.get(k, k)}={_short(settings[e.run_id].get(k))}" for k in keys if k != "forget"]
            if "forget" in keys:
                shown.append(e.log.title.split(" · forget ", 1)[-1])
            out[e.run_id] = " ".join(shown) or e.log.labels.get("name") or f"#{i}"
    return out


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
        self.hidden: list[str] = []  # headers of the columns left out at this width
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
            for c in COLUMNS:
                self.add_column(c.header, key=c.key)

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

    def _cells(self, shown: list[Entry], compact: bool) -> dict[str, list[Text]]:
        """Every column's cells, row by row (one decimal for the metrics when `compact`)."""
        finished = [e for e in shown if e.finished]
        best = {col: finished[i].run_id for col, i in report.best_per_column([e.row for e in finished]).items()}
        apart = distinguishing(shown)
        cells: dict[str, list[Text]] = {c.key: [] for c in COLUMNS}
        for e in shown:
            style = "" if e.finished else "dim italic"
            for c in COLUMNS:
                if c.key == "state":
                    cell = state_text(e.log)
                elif c.key == "run":
                    name = e.log.labels.get("name") or (e.run_dir.name if e.run_dir else e.log.title)
                    tags = " ".join(f"#{t}" for t in e.log.labels.get("tags") or [])
                    cell = Text.assemble((name, style), ("  " + tags if tags else "", "magenta"))
                elif c.key == "method":
                    glyph = STATUS_GLYPH.get(e.log.status, " ")
                    cell = Text.assemble(f"{glyph} ", (str(e.row.get("method") or "?"), style))
                    if apart.get(e.run_id):
                        cell.append(" " + apart[e.run_id], style="dim" if e.finished else style)
                else:
                    text = _compact(e.row, c.key) if compact else report._fmt(e.row, c.key, False)
                    if best.get(c.key) == e.run_id and text != "-":
                        cell = Text(text + BEST, style="bold green")
                    else:
                        cell = Text(text, style=style)
                cells[c.key].append(cell)
        return cells

    def fit(self, cells: dict[str, list[Text]], width: int, compact: bool) -> list[Column]:
        """The columns that fit `width`, dropping the highest priority number first."""
        candidates = wanted(cells)
        widths = [max([len((c.short if compact else c.header) + " ▲"), *(t.cell_len for t in cells[c.key])])
                  + 2 * self.cell_padding for c in candidates]
        return [candidates[i] for i in fit_columns([c.priority for c in candidates], widths, width)]

    def draw(self, entries: list[Entry]) -> None:
        self.entries = entries
        shown = self.shown()
        parent_width = self.parent.size.width if isinstance(self.parent, Widget) else 0
        width = self.size.width or parent_width or self.app.size.width
        cells, compact = self._cells(shown, False), False
        columns = self.fit(cells, width, compact)
        core = [c for c in wanted(cells) if c.priority < 6]  # the deeper metrics may give way first
        if not all(c in columns for c in core):  # tight: one decimal and short headers first
            cells, compact = self._cells(shown, True), True
            columns = self.fit(cells, width, compact)
        self.hidden = [c.header for c in wanted(cells) if c not in columns]
        keep = self.active_run
        labels = {c.key: Text((c.short if compact else c.header) + ((" ▼" if self.reverse else " ▲")
                                                                     if c.key == self.sort_key else ""),
                              style="bold" if c.key == self.sort_key else "") for c in columns}
        if [drawn.key.value for drawn in self.ordered_columns] == [c.key for c in columns]:
            self.clear()  # the same columns: keep them (and their measured widths)
            for drawn in self.ordered_columns:
                drawn.label = labels[str(drawn.key.value)]
        else:
            self.clear(columns=True)
            for c in columns:
                self.add_column(labels[c.key], key=c.key)
        for i, e in enumerate(shown):
            self.add_row(*(cells[c.key][i] for c in columns), key=e.run_id)
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

    heading = Text()

    def draw(self, entries: list[Entry], heading: Text) -> None:
        self.heading = heading
        self.table.draw(entries)
        if self.table.hidden:
            heading = heading.copy()
            heading.append(f" · not shown at this width: {', '.join(self.table.hidden)} (x exports them)",
                           style="dim")
        self.query_one("#compare-head", Static).update(heading)

    def on_resize(self) -> None:
        if self.table.entries:
            self.draw(self.table.entries, self.heading)
