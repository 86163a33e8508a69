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
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from coun_tui.engine import paths
from coun_tui.engine.runs import read_labels
from coun_tui.tui.runlog import describe_spec, read_metrics
from coun_tui.tui.widgets.run_pane import short_path

STATUS_COLOUR = {"done": "green", "failed": "red", "cancelled": "yellow"}


def run_row(run: Path) -> list[Text]:
    import tomllib

    status = paths.run_status(run)
    labels = read_labels(run)
    m = read_metrics(run) or {}
    try:
        spec = tomllib.loads((run / "run.toml").read_text())
    except (OSError, ValueError):
        spec = {}
    gap = m.get("avg_gap")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.stat().st_mtime))
    return [Text(labels["name"] or run.name, style="bold" if labels["name"] else ""),
            Text(" ".join(f"#{t}" for t in labels["tags"]), style="magenta"),
            Text(describe_spec(spec) if spec else "?"),
            Text(status, style=STATUS_COLOUR.get(status, "yellow")),
            Text(f"{gap:.2f}" if isinstance(gap, (int, float)) else "–"),
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
        table = self.query_one(DataTable)
        for label in ("", "Name", "Tags", "What", "State", "Avg.Gap", "When"):
            table.add_column(label, key=label or "mark")
        self.reload()
        table.focus()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for run in paths.saved_runs(self.runs_dir):
            mark = Text("●" if str(run) in self.marked else " ", style="bold cyan")
            table.add_row(mark, *run_row(run), key=str(run))
        if not table.row_count:
            table.add_row("", Text(f"no saved runs in {short_path(self.runs_dir)}", style="dim"), "", "", "", "", "")
        table.move_cursor(row=min(row, table.row_count - 1))

    def _current(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
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
