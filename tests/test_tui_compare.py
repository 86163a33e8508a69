"""Pilot tests of comparing runs: runs side by side, the comparison table, queueing, history and export.

The three runs compared (FT, CoUn and their Retrain reference on digits class 3) are the recorded
fixtures (scripts/make_tui_fixture.py), copied into a temporary runs directory, so these tests
are fast and deterministic; the queue test trains for real (one short epoch each).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_tui_app import forget_classes, ready, wait_until

from coun_tui.cli import main as cli_main
from coun_tui.engine import report
from coun_tui.engine.records import read_labels
from coun_tui.tui.app import CounLab
from coun_tui.tui.widgets.compare import BEST, COLUMNS, ComparisonTable
from coun_tui.tui.widgets.dialogs import (
    ConfirmScreen,
    ExportScreen,
    LaunchScreen,
    PromptScreen,
)
from coun_tui.tui.widgets.history import HistoryScreen

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
NAMES = ("ft-digits-class3", "coun-digits-class3", "retrain-digits-class3")


@pytest.fixture
def runs(tmp_path) -> Path:
    out = tmp_path / "runs"
    for name in NAMES:
        shutil.copytree(FIXTURE_RUNS / name, out / name)
    return out


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def table_cells(app) -> dict[str, dict[str, str]]:
    """The comparison table as shown: run directory name -> column key -> cell text (the best
    value's `*` left out)."""
    table = app.compare_table
    keys = [c.key.value for c in table.ordered_columns]
    # wide enough for every column (the deeper metrics show only when some run has them: none here)
    assert keys == [c.key for c in COLUMNS if c.priority < 6]
    out = {}
    for entry in table.shown():
        row = table.get_row(entry.run_id)
        out[entry.run_dir.name] = {key: str(cell).removesuffix(BEST) for key, cell in zip(keys, row)}
    return out


def cli_compare(capsys, dirs: list[Path], fmt: str, sort: str | None = None) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # click's standalone mode always exits
        cli_main(["compare", *map(str, dirs), "--format", fmt, *(["--sort", sort] if sort else [])])
    assert exit_.value.code == 0
    return capsys.readouterr().out


async def refreshed(pilot) -> None:
    pilot.app._refresh_compare(force=True)
    await pilot.pause(0.2)


async def test_three_runs_side_by_side_compare_export_restart(runs, tmp_path, capsys, digits_model):
    exports = tmp_path / "exports"
    # What `coun-lab compare` prints for these runs (asked before the app runs: it captures stdout).
    dirs = [runs / n for n in NAMES]
    expected = {fmt: cli_compare(capsys, dirs, fmt) for fmt in ("md", "csv", "json")}
    expected["md sorted"] = cli_compare(capsys, dirs, "md", sort="avg_gap")
    assert expected["md"].startswith("| Method |") and json.loads(expected["json"])[0]["run"] == NAMES[0]
    app = CounLab(runs_dir=runs, export_dir=exports, session=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        # Open the three runs from the run history: mark each (space), open the marked (a).
        await pilot.press("o")
        assert isinstance(app.screen, HistoryScreen)
        history = app.screen.query_one("DataTable")
        listed = [history.coordinate_to_cell_key((i, 0)).row_key.value for i in range(history.row_count)]
        assert sorted(Path(p).name for p in listed) == sorted(NAMES)
        for name in NAMES:
            history.move_cursor(row=listed.index(str(runs / name)))
            await pilot.press("space")
        await pilot.press("a")
        await pilot.pause(0.5)
        panes = app.panes()
        assert [p.runlog.run_dir.name for p in panes] == list(NAMES)

        # Side by side: the compare view opened with the second pane; three panes share the width.
        assert app.compare_view
        regions = [p.region for p in panes]
        assert all(r.width >= 40 for r in regions)
        assert len({r.x for r in regions}) == 3 and len({r.y for r in regions}) == 1
        for p in panes:  # each with its own curves, table and scatter, replayed
            assert p.runlog.status == "done" and p.runlog.steps and p.runlog.embedding is not None

        # The table: one row per run, gaps as |metric - Retrain's| from the metrics.json files.
        await refreshed(pilot)
        ref = metrics(runs / "retrain-digits-class3")
        cells = table_cells(app)
        assert list(cells) == list(NAMES)
        for name in NAMES[:2]:
            m = metrics(runs / name)
            for k in ("RA", "UA", "TA", "MIA"):
                gap = abs(m[k] - ref[k])
                assert m["gap"][k] == pytest.approx(gap)
                assert cells[name][k] == f"{m[k]:.2f} ({gap:.2f})"
            assert cells[name]["avg_gap"] == f"{sum(abs(m[k] - ref[k]) for k in ('RA', 'UA', 'TA', 'MIA')) / 4:.2f}"
            assert cells[name]["pflops"] == f"{m['pflops']:.3g}" and cells[name]["seconds"] == f"{m['seconds']:.1f}"
        assert cells["retrain-digits-class3"]["avg_gap"] == "-"
        assert "done · reference" in cells["retrain-digits-class3"]["state"]
        heading = str(app.query_one("#compare-head").render())
        assert "forget class 3" in heading and "reference retrain-digits-class3" in heading
        # The best Avg. Gap (Retrain aside) is marked.
        best = min(NAMES[:2], key=lambda n: metrics(runs / n)["avg_gap"])
        table = app.compare_table
        best_id = next(e.run_id for e in table.shown() if e.run_dir.name == best)
        assert "bold" in str(table.get_cell(best_id, "avg_gap").style)

        # Export in the order shown: byte-identical to `coun-lab compare` on the same directories.
        for fmt in ("md", "csv", "json"):
            written = app.export_comparison(fmt)
            assert written.parent == exports
            assert written.read_bytes() == expected[fmt].encode()

        # Sort by clicking the Avg. Gap header; again reverses it. k cycles columns from the keyboard.
        x = sum(c.get_render_width(table) for c in table.ordered_columns[:5]) + 2
        await pilot.click(ComparisonTable, offset=(x, 0))
        await refreshed(pilot)
        assert table.sort_key == "avg_gap" and not table.reverse
        shown = [e.run_dir for e in table.shown()]
        assert shown[-1].name == "retrain-digits-class3"  # no Avg. Gap: last, as `compare --sort` does
        assert app.export_comparison("md").read_bytes() == expected["md sorted"].encode()
        await pilot.click(ComparisonTable, offset=(x, 0))
        await refreshed(pilot)
        assert table.reverse and [e.run_dir for e in table.shown()][:2] == shown[:2][::-1]
        await pilot.press("k")
        assert table.sort_key == "pflops"
        await pilot.press("K")
        assert table.sort_key == "pflops" and table.reverse

        # Export through the dialog: all three formats at once, then the screen as SVG.
        await pilot.press("x")
        assert isinstance(app.screen, ExportScreen)
        options = app.screen.query_one("OptionList")
        options.highlighted = 3  # all three
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert sorted(p.suffix for p in exports.iterdir()) == [".csv", ".csv", ".json", ".json", ".md", ".md", ".md"]
        svg = app.export_svg(tmp_path / "screen.svg")
        assert svg.read_text().lstrip().startswith("<svg")

        # Rename and tag the CoUn run (the pane shown), from the keyboard.
        app.activate_pane(panes[1].run_id)
        await pilot.press("n")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = "CoUn 2 epochs"
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, PromptScreen), app.screen
        await pilot.press("g")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = "paper, baseline"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert read_labels(runs / "coun-digits-class3") == {"name": "CoUn 2 epochs", "tags": ["paper", "baseline"]}
        await refreshed(pilot)
        assert "CoUn 2 epochs" in table_cells(app)["coun-digits-class3"]["run"]
        assert "#paper" in table_cells(app)["coun-digits-class3"]["run"]
        before = {n: (c, app.pane_for(runs / n)) for n, c in table_cells(app).items()}
        curves = {n: (p.runlog.steps, p.runlog.losses, p.runlog.embedding.xy, [e.metrics for e in p.runlog.epochs])
                  for n, (_, p) in before.items()}
        sort = (table.sort_key, table.reverse)
        await pilot.press("q")

    # Restart on the same runs directory: the same runs, curves, table and labels come back.
    again = CounLab(runs_dir=runs, export_dir=exports, session=True)
    async with again.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: len(again.panes()) == 3, 10, "the session's runs to reopen")
        await refreshed(pilot)
        assert [p.runlog.run_dir.name for p in again.panes()] == list(NAMES)
        assert again.compare_view
        assert (again.compare_table.sort_key, again.compare_table.reverse) == sort
        assert table_cells(again) == {n: c for n, (c, _) in before.items()}
        for name, curve in curves.items():
            p = again.pane_for(runs / name)
            assert (p.runlog.steps, p.runlog.losses, p.runlog.embedding.xy,
                    [e.metrics for e in p.runlog.epochs]) == curve
        assert again.pane_for(runs / "coun-digits-class3").runlog.labels["name"] == "CoUn 2 epochs"

        # Delete the FT run: a confirm first; "n" keeps it, "y" deletes it.
        again.activate_pane(again.pane_for(runs / "ft-digits-class3").run_id)
        await pilot.press("delete")
        assert isinstance(again.screen, ConfirmScreen)
        await pilot.press("n")
        assert (runs / "ft-digits-class3").is_dir() and len(again.panes()) == 3
        await pilot.press("delete")
        await pilot.press("y")
        await pilot.pause(0.3)
        assert not (runs / "ft-digits-class3").exists()
        assert len(again.panes()) == 2
        await refreshed(pilot)
        assert list(table_cells(again)) == ["coun-digits-class3", "retrain-digits-class3"]


async def test_queue_one_device_and_gaps_fill_in_when_retrain_finishes(tmp_path, digits_model):
    from textual.widgets import Select

    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3)
        app.query_one("#method", Select).value = "ga"
        await pilot.pause()
        app.setup_panel.set_hparams(epochs=1)
        # No Retrain for class 3 yet: the app says so and offers to run it first.
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen) and app.screen.query("#retrain_first")
        await pilot.press("y")  # run anyway
        ga = app.active_pane
        # Then a short Retrain on the same device: it waits for the GA run.
        app.query_one("#method", Select).value = "retrain"
        await pilot.pause()
        app.setup_panel.set_hparams(epochs=1)
        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        retrain = app.active_pane
        assert retrain is not ga and retrain.runlog.spec["method"] == "retrain"
        if not ga.runlog.finished and retrain.runlog.status == "queued":
            # GA can finish at any await; so redraw and read the table and the pane with no await
            # between (the status only changes on the event loop).
            # (the pane learns GA's end from its log a poll after the Retrain's status does:
            # then the Retrain may be preparing already, and the order is checked below)
            app._refresh_compare(force=True)
            retrain._draw_head()
            assert "queued" in table_cells_by_id(app)[retrain.run_id]["state"]
            assert "queued" in str(retrain.query_one("#status").render())
        await wait_until(pilot, lambda: ga.runlog.finished and retrain.runlog.finished, 300, "both runs")
        assert ga.runlog.status == retrain.runlog.status == "done", (ga.runlog.reason, retrain.runlog.reason)
        # One at a time on the device: the Retrain started training after GA finished.
        ga_events = (ga.runlog.run_dir / "events.jsonl").stat().st_mtime
        assert retrain.runlog.started is not None and ga_events <= (retrain.runlog.run_dir / "run.toml").stat().st_mtime
        # GA was recorded without gaps; the Retrain's numbers fill them in.
        assert metrics(ga.runlog.run_dir)["gap"] is None
        await pilot.pause(0.3)
        await refreshed(pilot)
        m, ref = metrics(ga.runlog.run_dir), metrics(retrain.runlog.run_dir)
        cell = table_cells_by_id(app)[ga.run_id]
        for k in ("RA", "UA", "TA", "MIA"):
            value, gap = map(float, re.match(r"([\d.]+) ?\(([\d.]+)\)", cell[k]).groups())  # 2 or 1 decimals
            assert value == pytest.approx(m[k], abs=0.05) and gap == pytest.approx(abs(m[k] - ref[k]), abs=0.05)
        assert f"reference {retrain.runlog.run_dir.name}" in str(app.query_one("#compare-head").render())

        # "Retrain first": the Retrain is queued before the run, both on this device.
        app.query_one("#method", Select).value = "coun"
        await forget_classes(pilot, 5)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)
        await pilot.press("t")
        await pilot.pause()
        first, then = app.panes()[-2:]
        assert first.runlog.spec["method"] == "retrain" and then.runlog.spec["method"] == "coun"
        # A job reads "preparing" until its worker has started and said what it waits behind.
        await wait_until(pilot, lambda: then.runlog.status != "preparing", 60, "the CoUn job's worker")
        assert then.runlog.status == "queued"
        await pilot.press("c")  # cancel the queued CoUn run (the shown pane): it never starts
        await wait_until(pilot, lambda: then.runlog.finished, 30, "the queued run to cancel")
        assert then.runlog.status == "cancelled" and then.runlog.started is None
        assert "before it started" in str(then.query_one("#status").render())
        app.activate_pane(first.run_id)
        await pilot.press("c")
        await wait_until(pilot, lambda: first.runlog.finished, 60, "the Retrain to cancel")


def table_cells_by_id(app) -> dict[str, dict[str, str]]:
    table = app.compare_table
    keys = [c.key.value for c in table.ordered_columns]
    return {e.run_id: {key: str(cell).removesuffix(BEST) for key, cell in zip(keys, table.get_row(e.run_id))}
            for e in table.shown()}


def test_compare_rows_come_from_engine_report(runs):
    """The table's rows are engine.report.row_of rows of the metrics.json files (no second builder)."""
    from coun_tui.engine.runlog import read_run
    from coun_tui.tui.widgets.compare import entry_of

    for name in NAMES:
        entry = entry_of(name, read_run(runs / name))
        assert entry.finished
        assert entry.row == report.row_of(report.load_run(runs / name))
