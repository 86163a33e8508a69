"""80x24 is a first-class size: the comparison drops columns by priority and tells repeated methods
apart by their settings, the history keeps its Avg. Gap and When, the footer fits (see
test_tui_first_session), and the loss chart's legend covers no curve and a long run's epoch lines
stay few."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_tui_app import ready, text_of

from coun_tui.engine.events import Started, Step
from coun_tui.engine.runlog import RunLog
from coun_tui.tui.app import CounLab
from coun_tui.tui.widgets.compare import COLUMNS
from coun_tui.tui.widgets.history import HistoryScreen
from coun_tui.tui.widgets.plots import MAX_EPOCH_LINES, LossPlot

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
NAMES = ("ft-digits-class3", "coun-digits-class3", "coun-lr0.1", "retrain-digits-class3")


@pytest.fixture
def runs(tmp_path) -> Path:
    """The recorded FT, CoUn and Retrain runs, and a second CoUn run that differs in its lr."""
    out = tmp_path / "runs"
    for name in ("ft-digits-class3", "coun-digits-class3", "retrain-digits-class3"):
        shutil.copytree(FIXTURE_RUNS / name, out / name)
    other = out / "coun-lr0.1"
    shutil.copytree(FIXTURE_RUNS / "coun-digits-class3", other)
    events = (other / "events.jsonl").read_text().splitlines()
    started = json.loads(events[0])
    started["hparams"]["lr"] = 0.1
    (other / "events.jsonl").write_text("\n".join([json.dumps(started), *events[1:]]) + "\n")
    m = json.loads((other / "metrics.json").read_text())
    m["hparams"]["lr"], m["avg_gap"] = 0.1, m["avg_gap"] + 1
    (other / "metrics.json").write_text(json.dumps(m))
    return out


async def compare(pilot, runs: Path) -> None:
    app = pilot.app
    await ready(pilot)
    for name in NAMES:
        app.open_run(runs / name)
    await pilot.pause(0.8)
    app._refresh_compare(force=True)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_comparison_fits_and_tells_repeated_methods_apart(runs, size, digits_model):
    app = CounLab(runs_dir=runs)
    async with app.run_test(size=size) as pilot:
        await compare(pilot, runs)
        table = app.compare_table
        shown = [c.key.value for c in table.ordered_columns]
        assert sum(c.get_render_width(table) for c in table.ordered_columns) <= table.size.width
        heading = str(app.query_one("#compare-head").render())
        if size == (80, 24):
            # The lowest priorities give way first; Method, the four metrics and Avg. Gap stay.
            assert {"method", "RA", "UA", "TA", "MIA", "avg_gap"} <= set(shown) and "run" not in shown
            kept = [c for c in COLUMNS if c.key in shown]
            assert max(c.priority for c in kept) <= min(c.priority for c in COLUMNS if c.key not in shown)
            assert "not shown at this width" in heading and "Run" in heading
        else:
            # every column but the deeper metrics', shown only when some run has them (none here)
            assert shown == [c.key for c in COLUMNS if c.priority < 6] and "not shown" not in heading
        method = {e.run_dir.name: str(table.get_cell(e.run_id, "method")) for e in table.shown()}
        assert method["coun-digits-class3"].endswith("coun lr=0.05") and method["coun-lr0.1"].endswith("coun lr=0.1")
        assert method["ft-digits-class3"].endswith(" ft")  # a method shown once needs no settings
        assert all(m.startswith("✔ ") for m in method.values())  # the state, also as a glyph


async def test_history_keeps_avg_gap_and_when_at_80x24(runs, digits_model):
    app = CounLab(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("o")
        await pilot.pause(0.3)
        assert isinstance(app.screen, HistoryScreen)
        table = app.screen.query_one("DataTable")
        headers = [str(c.label) for c in table.ordered_columns]
        assert {"Name", "State", "Avg.Gap", "When"} <= set(headers)
        assert sum(c.get_render_width(table) for c in table.ordered_columns) <= table.size.width


def long_run(epochs: int = 30, per_epoch: int = 3) -> RunLog:
    log = RunLog(title="retrain")
    log.apply(Started("retrain", epochs, per_epoch, 1291, 146, "cpu", {}))
    for step in range(1, epochs * per_epoch + 1):
        log.apply(Step(step, (step - 1) // per_epoch + 1, {"ce": 2.0 / step, "total": 2.0 / step}, 0.1,
                       64 * step, 1e9 * step, 0.1 * step))
    return log


async def test_loss_legend_covers_no_curve_and_epoch_lines_stay_few(digits_model):
    app = CounLab(runs_dir=FIXTURE_RUNS)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        plot = LossPlot()
        await app.screen.mount(plot)
        plot.styles.width, plot.styles.height = 76, 14
        await pilot.pause()
        plot.draw(long_run())
        await pilot.pause(0.3)
        lines = text_of(plot).splitlines()
        assert "ce" in lines[0] and "total" in lines[0]  # the legend is the title line
        assert not any("total" in line for line in lines[1:])  # ... and nowhere over the curves
        middle = lines[len(lines) // 2]
        assert middle.count("│") <= MAX_EPOCH_LINES + 2  # a 30-epoch run: a few epoch lines, not 29
