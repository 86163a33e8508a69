"""Live metrics that do not mislead: the probe holds digits' whole sets, so the last epoch's live
numbers are the final ones; the live MIA comes with its spread over balanced draws, which shows
when the attack is a coin toss (a class whose forget samples all get ~0 confidence)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from textual.app import App

from coun_tui.engine import metrics
from coun_tui.engine.events import Done, EpochMetrics, Started
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.runlog import RunLog
from coun_tui.engine.runner import RunSpec, prepare, run
from coun_tui.tui.widgets.run_pane import PROBE_NOTE, MetricsTable


def test_mia_spread_first_draw_is_the_final_one_and_the_spread_shows_doubt():
    rng = np.random.default_rng(0)
    # A clear attack: members confident, non-members unsure, forget samples unsure.
    members, nonmembers = rng.uniform(0.95, 1.0, 300), rng.uniform(0.0, 0.5, 150)
    value, spread = metrics.mia_spread(members, nonmembers, np.full(40, 0.2), seed=3)
    assert value == metrics.mia_efficacy(members, nonmembers, np.full(40, 0.2), seed=3) == 100.0
    assert spread == 0.0
    # A coin toss: both sides nearly always right with the same few misses; every forget sample
    # gets ~0 confidence, so the attack calls all or none of them non-members, by the draw.
    rng = np.random.default_rng(0)
    members = np.where(rng.random(1200) < 0.1, rng.uniform(0, 0.5, 1200), rng.uniform(0.9, 1, 1200))
    nonmembers = np.where(rng.random(300) < 0.1, rng.uniform(0, 0.5, 300), rng.uniform(0.9, 1, 300))
    draws = [metrics.mia_efficacy(members, nonmembers, np.zeros(100), seed=s) for s in range(5)]
    value, spread = metrics.mia_spread(members, nonmembers, np.zeros(100), seed=0)
    assert value == draws[0] and spread == pytest.approx(np.std(draws))
    assert set(draws) == {0.0, 100.0} and spread > 30
    # Above `cap` members a side, each draw balances `cap` of each (an SVC costs O(n^2)).
    big_m, big_n = rng.uniform(0.9, 1, 3000), rng.uniform(0, 1, 2500)
    pick = np.random.default_rng(7)
    m, n = big_m[pick.choice(3000, 1024, replace=False)], big_n[pick.choice(2500, 1024, replace=False)]
    weights = np.full(10, 0.3)
    assert metrics.mia_spread(big_m, big_n, weights, seed=7)[0] == metrics.mia_efficacy(m, n, weights, seed=7)


def test_last_epoch_live_numbers_are_the_final_ones_on_digits(digits_model):
    prep = prepare(RunSpec(method="ga", model=digits_model, forget=ForgetSpec(classes=[3]),
                           hparams={"epochs": 1, "lr": 1e-3}, device="cpu"))
    events = list(run(prep))
    done = events[-1]
    assert isinstance(done, Done), events[-1]
    last = [e for e in events if isinstance(e, EpochMetrics)][-1]
    for key in ("RA", "UA", "TA", "MIA"):
        assert last.metrics[key] == pytest.approx(done.metrics[key], abs=1e-9), key
    assert math.isfinite(last.metrics["MIA_sd"]) and last.metrics["MIA_sd"] >= 0


class TableApp(App):
    def compose(self):
        yield MetricsTable()


async def test_live_table_says_probe_and_shows_the_mia_spread():
    log = RunLog()
    log.apply(Started("retrain", 2, 10, 1291, 146, "cpu", {}))
    log.apply(EpochMetrics(1, {"RA": 90.0, "UA": 100.0, "TA": 89.0, "MIA": 0.0, "MIA_sd": 49.0}))
    log.apply(EpochMetrics(2, {"RA": 95.0, "UA": 100.0, "TA": 94.0, "MIA": 100.0, "MIA_sd": 0.0}))
    app = TableApp()
    async with app.run_test(size=(100, 10)) as pilot:
        table = app.query_one(MetricsTable)
        table.draw(log)
        await pilot.pause()
        mia = [str(table.get_row_at(i)[4]) for i in range(table.row_count)]
        assert mia == ["0.0 ±49", "100.0"]  # a spread under half a point is not shown
    assert "probe estimates" in PROBE_NOTE and "full sets" in PROBE_NOTE
