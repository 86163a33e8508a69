"""The budget curve's plots: a log Avg. Gap axis where every gap is positive, a linear one where a
run matches Retrain exactly (a gap of 0, which a log axis cannot show)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coun_tui.plots import budget_png, budget_terminal


def series(gaps: list[float]) -> dict[str, list[dict[str, float]]]:
    return {"ft": [{"epochs": e, "avg_gap": g, "pflops": 0.01 * e} for e, g in zip((1, 2, 5), gaps)]}


@pytest.mark.parametrize("gaps", [[2.4, 0.6, 0.8], [1.0, 0.0, 0.5]])
def test_curve_draws_with_any_gaps(gaps, tmp_path: Path):
    text = budget_terminal(series(gaps), "epochs", "sweep, random-10pct", width=100, height=20)
    assert text.startswith("sweep, random-10pct\n") and "Avg. Gap vs epochs" in text
    budget_png(series(gaps), "epochs", "sweep, random-10pct", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_figure_in_one_process_shows_only_its_own_series():
    # plotext's clear_figure clears only the subplot last selected; a stale series with a gap of 0
    # once broke the next figure's log axis.
    budget_terminal({"old": series([1.0, 0.0, 0.5])["ft"]}, "epochs", "first")
    text = budget_terminal({"new": series([2.4, 0.6, 0.8])["ft"]}, "epochs", "second")
    assert "new" in text and "old" not in text
