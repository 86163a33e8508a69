"""Snapshots of the lab's main screens (setup, mid-run, finished, comparison) at 80x24 and 160x48.

Deterministic: the model is the shipped one, the runs directory is tests/fixtures/runs (recorded
by scripts/make_tui_fixture.py, with fixed wall-clock values), and the run screens replay a
recorded CoUn run rather than train live. Run from the repository root (paths are shown relative
to it). Accept new pictures with `--snapshot-update` only after looking at them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from coun_tui.tui.app import CounLab

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
COUN_RUN = FIXTURE_RUNS / "coun-digits-class3"
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def mid_run_events() -> int:
    """Events up to the middle of the last epoch: the run as it looked while training."""
    lines = (COUN_RUN / "events.jsonl").read_text().splitlines()
    epochs = [i for i, line in enumerate(lines) if '"kind":"epoch"' in line]
    steps = [i for i, line in enumerate(lines) if '"kind":"step"' in line]
    last_epoch_steps = [i for i in steps if i > epochs[-2]]
    return last_epoch_steps[len(last_epoch_steps) // 2] + 1


async def settled(pilot) -> None:
    """Let replayed panes draw and their tables size their columns: wait until two screenshots
    0.2 s apart are the same, so a slow machine waits longer instead of snapshotting too early."""
    previous = None
    for _ in range(50):
        await pilot.pause(0.2)
        await pilot.wait_for_scheduled_animations()
        shot = pilot.app.export_screenshot()
        if shot == previous:
            return
        previous = shot


async def prepared(pilot) -> None:
    app = pilot.app
    while app.setup_panel.dataset is None:
        await pilot.pause(0.1)
    sel = app.query_one("#forget-classes")
    sel.deselect_all()
    sel.select(3)
    for inp in app.query(Input):
        inp.cursor_blink = False
    await pilot.pause()


async def compared(pilot) -> None:
    await prepared(pilot)
    for name in ("ft-digits-class3", "coun-digits-class3", "retrain-digits-class3"):
        pilot.app.open_run(FIXTURE_RUNS / name)
    await settled(pilot)
    pilot.app._refresh_compare(force=True)
    await settled(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_setup_screen(snap_compare, size, digits_model):
    assert snap_compare(CounLab(runs_dir=FIXTURE_RUNS), terminal_size=size, run_before=prepared)


@pytest.mark.parametrize("size", SIZES)
def test_mid_run_screen(snap_compare, size, digits_model):
    async def run_before(pilot):
        await prepared(pilot)
        pilot.app.open_run(COUN_RUN, limit=mid_run_events())
        await settled(pilot)

    assert snap_compare(CounLab(runs_dir=FIXTURE_RUNS), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_finished_screen(snap_compare, size, digits_model):
    async def run_before(pilot):
        await prepared(pilot)
        pilot.app.open_run(COUN_RUN)
        await settled(pilot)

    assert snap_compare(CounLab(runs_dir=FIXTURE_RUNS), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_comparison_screen(snap_compare, size, digits_model):
    """FT, CoUn and their Retrain reference side by side (tabs at 80x24), the table below."""

    assert snap_compare(CounLab(runs_dir=FIXTURE_RUNS), terminal_size=size, run_before=compared)


def test_setup_screen_without_colour(snap_compare, monkeypatch, digits_model):
    """NO_COLOR=1 at 80x24: the ticked class (X), +CL (X, forced by coun) and the focused row
    (reversed) differ in glyph or text style, not in colour."""
    monkeypatch.setenv("NO_COLOR", "1")

    async def run_before(pilot):
        await prepared(pilot)
        sel = pilot.app.query_one("#forget-classes")
        sel.focus()
        sel.highlighted = 2
        await settled(pilot)

    assert snap_compare(CounLab(runs_dir=FIXTURE_RUNS), terminal_size=(80, 24), run_before=run_before)


def test_comparison_screen_without_colour(snap_compare, monkeypatch, digits_model):
    """NO_COLOR=1 at 80x24: the best value of each column carries a *, each run its state glyph."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(CounLab(runs_dir=FIXTURE_RUNS), terminal_size=(80, 24), run_before=compared)
