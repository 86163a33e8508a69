"""Run history: every run kept in the runs directory, newest first; open, rename, tag or delete.

Opening replays a run's events.jsonl into a pane (curves, metrics, scatter as they were).
Deleting asks first. Names and tags live in the run's labels.json (engine.runs.write_labels).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from coun_tui.engine import paths
from coun_tui.engine.records import RunRecord
from coun_tui.engine.runlog import describe_spec
from coun_tui.tui.widgets.columns import fit
from coun_tui.tui.widgets.run_pane import clipped, short_path

STATUS_COLOUR = {"done": "green", "failed": "red", "cancelled": "yellow", "damaged": "bold red"}
NAME_CHARS, TAGS_CHARS, STATE_CHARS = 40, 24, 48  # long names and notes are cut, so State stays on screen


# (header, priority): at 80 columns What, then Tags give way first; Name is shortened to fit.
COLUMNS = [("", 0), ("Name", 0), ("Tags", 3), ("What", 2), ("State", 0), ("Avg.Gap", 0), ("When", 1)]
MIN_NAME = 16


def run_row(run: Path) -> list[Text]:
    """A run as a row of the history; a damaged record shows as "damaged: FILE ..." in State."""
    from coun_tui.engine.runs import spec_to_dict

    rec = RunRecord.read(run)
    name = rec.labels["name"]
    gap = rec.metrics.avg_gap if rec.metrics else None
    try:
        when = time.strftime("%m-%d %H:%M", time.localtime(run.stat().st_mtime))
    except OSError:
        when = "?"
    state = rec.state_text
    return [Text(clipped(name or run.name, NAME_CHARS), style="bold" if name else ""),
            Text(clipped(" ".join(f"#{t}" for t in rec.labels["tags"]), TAGS_CHARS), style="magenta"),
            Text(describe_spec(spec_to_dict(rec.spec)) if rec.spec else "?"),
            Text(clipped(state, STATE_CHARS),
                 style=STATUS_COLOUR["damaged"] if rec.damage else STATUS_COLOUR.get(state, "yellow")),
            Text(f"{gap:.2f}" if gap is not None else "–"),
            Text(when, style="dim")]


class HistoryScreen(ModalScreen[list[str] | None]):
    """Returns the run directories to open (enter: the highlighted one; space marks several)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close"),
                Binding("space", "mark", "Mark"),
                Binding("a", "open_marked", "Open marked"),
                Binding("n", "rename", "Rename"),
                Binding("g", "tag", "Tag"),
                Binding("delete,x", "delete", "Delete")]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.marked: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="picker history"):
            yield Static(f"Runs in {short_path(self.runs_dir)}", classes="picker-title")
            yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
            yield Input(placeholder="or a run directory's path, then enter", id="path")
            yield Static("enter: open · space: mark, a: open marked · n: rename · g: tag · x/del: delete · "
                         "esc: close", classes="picker-hint")

    def on_mount(self) -> None:
        self.reload()
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        self.reload()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        runs = paths.saved_runs(self.runs_dir)
        rows = [[Text("●" if str(run) in self.marked else " ", style="bold cyan"), *run_row(run)] for run in runs]
        if not rows:
            rows = [[Text(""), Text(f"no saved runs in {short_path(self.runs_dir)}", style="dim"),
                     *(Text("") for _ in COLUMNS[2:])]]
        pad = 2 * table.cell_padding
        widths = [max([len(h), *(r[i].cell_len for r in rows)]) + pad for i, (h, _) in enumerate(COLUMNS)]
        if not any(r[2].plain for r in rows):
            widths[2] = 10 ** 6  # no tags at all: the column is the first to go
        available = (table.size.width or self.app.size.width) - 1
        kept = fit([p for _, p in COLUMNS], [min(w, MIN_NAME + pad) if i == 1 else w for i, w in enumerate(widths)],
                   available)
        name_room = max(MIN_NAME, available - sum(widths[i] for i in kept if i != 1) - pad)
        table.clear(columns=True)
        for i in kept:
            table.add_column(COLUMNS[i][0], key=COLUMNS[i][0] or "mark")
        shown: list[Path | None] = list(runs) if runs else [None]  # no runs: one row says so
        for r, run in zip(rows, shown):
            r[1].truncate(name_room, overflow="ellipsis")
            table.add_row(*(r[i] for i in kept), key=str(run) if run else None)
        table.move_cursor(row=min(row, table.row_count - 1))

    def _current(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        return key if key and Path(key).is_dir() else None

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        if (run := self._current()) is not None:
            self.dismiss(self.marked or [run])

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss([str(Path(event.value.strip()).expanduser())])

    def action_mark(self) -> None:
        if (run := self._current()) is None:
            return
        if run in self.marked:
            self.marked.remove(run)
        else:
            self.marked.append(run)
        self.reload()

    def action_open_marked(self) -> None:
        if self.marked:
            self.dismiss(list(self.marked))

    def action_rename(self) -> None:
        if (run := self._current()) is not None:
            self.app.rename_run(Path(run), then=self.reload)  # type: ignore[attr-defined]

    def action_tag(self) -> None:
        if (run := self._current()) is not None:
            self.app.tag_run(Path(run), then=self.reload)  # type: ignore[attr-defined]

    def action_delete(self) -> None:
        if (run := self._current()) is not None:
            def after() -> None:
                if run in self.marked:
                    self.marked.remove(run)
                self.reload()

            self.app.delete_run(Path(run), then=after)  # type: ignore[attr-defined]
