"""The lab's comparison view: the table of the open runs (the paper's Table 1), its heading, sorting
and exports."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.css.query import NoMatches

from coun_tui.engine import UserError, report
from coun_tui.engine.files import atomic_write
from coun_tui.engine.records import find_reference, read_labels
from coun_tui.engine.runlog import RunLog, forget_of
from coun_tui.tui.widgets.compare import BEST, HEADERS, ComparePanel, ComparisonTable, Entry, entry_of
from coun_tui.tui.widgets.dialogs import ExportScreen
from coun_tui.tui.widgets.run_pane import short_path

COMPARE_SECONDS = 0.5  # the comparison table is rebuilt at most this often (new epochs, verdicts)
PROGRESS_SECONDS = 2.0  # ... and this often for training progress alone
EXPORT_SUFFIX = {"md": ".md", "csv": ".csv", "json": ".json"}


if TYPE_CHECKING:
    from coun_tui.tui.host import LabApp as _App
else:
    _App = object


class Comparison(_App):
    """CounLab's comparison of its open runs."""

    def entries(self) -> list[Entry]:
        return [entry_of(rid, p.runlog) for rid, p in self._panes.items()]

    def _refresh_compare(self, force: bool = False) -> None:
        """Rebuild the table when a run changed state or reported an epoch (at most every
        COMPARE_SECONDS), for progress alone every PROGRESS_SECONDS, and only while it is shown."""
        if not self.screen_stack:  # the app is closing: its screens are gone
            return
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
            with contextlib.suppress(UserError):
                from coun_tui.engine.forget import Split

                if log.run_dir is None:
                    raise UserError("not saved yet")
                split = Split.load(log.run_dir / "split.npz")
                found = find_reference(self.runs_dir, log.spec.get("dataset") or self.setup_panel.dataset_name
                                       or "", split)
            if found is None and log.spec.get("reference"):
                given = Path(log.spec["reference"])
                found = given if (given / "metrics.json").is_file() else None
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
        order = f"sorted by {HEADERS[table.sort_key]} {'▼' if table.reverse else '▲'}" \
            if table.sort_key else "in opening order"
        which = " · Avg. Gap: each run to its split's Retrain" if self.size.width >= 120 else ""  # 80x24: a line less
        head.append(f"\n{order}{which} · k/K or a header: sort · ", style="dim")
        head.append(BEST, style="bold green")
        head.append(" best · x: export", style="dim")
        return head

    def on_comparison_table_run_chosen(self, message: ComparisonTable.RunChosen) -> None:
        self.activate_pane(message.run_id)

    def on_comparison_table_sort_changed(self, message: ComparisonTable.SortChanged) -> None:
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
            stamp = time.strftime("%Y%m%d-%H%M%S")  # one name for the files of one export
            try:
                if choice == "svg":
                    written = [self.export_svg(stamp=stamp)]
                else:
                    written = [self.export_comparison(f, stamp=stamp)
                               for f in (("md", "csv", "json") if choice == "all" else (choice,))]
            except (UserError, OSError) as exc:
                self.notify(str(exc), title="export", severity="error")
                return
            self.notify("\n".join(short_path(p) for p in written), title="exported")

        self.push_screen(ExportScreen(short_path(self.export_dir), n), chosen)

    def export_comparison(self, fmt: str, path: str | Path | None = None, stamp: str | None = None) -> Path:
        """Write the comparison's finished runs, in the order shown, as `coun-lab compare` prints
        them (md, csv or json), to `path` or export_dir/comparison-STAMP.FMT; returns the file."""
        if fmt not in EXPORT_SUFFIX:
            raise UserError(f"unknown format {fmt!r}; use md, csv or json")
        self._refresh_compare(force=True)
        rows = [e.row for e in self.compare_table.shown() if e.finished]
        if not rows:
            raise UserError("no finished run in the comparison yet: nothing to export")
        text = report.render(rows, fmt)
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        path = Path(path) if path else _fresh(self.export_dir / f"comparison-{stamp}{EXPORT_SUFFIX[fmt]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            fh.write(text)
        return path

    def export_svg(self, path: str | Path | None = None, stamp: str | None = None) -> Path:
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        path = Path(path) if path else _fresh(self.export_dir / f"coun-lab-{stamp}.svg")
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(self.save_screenshot(path.name, str(path.parent)))


def _fresh(path: Path) -> Path:
    """`path`, or path-2, path-3... when it exists (two exports in the same second)."""
    n = 2
    out = path
    while out.exists():
        out = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return out
