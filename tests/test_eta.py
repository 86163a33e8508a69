"""One ETA: the app's run log and the CLI's progress bar (`unlearn`, `runs watch`) fed the same events
show the same ETA, however fast the events reach them (a late `runs watch` reads the past at once)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from coun_tui.cli.follow import follow
from coun_tui.engine.events import Started, Step, format_duration
from coun_tui.engine.runlog import RunLog


def run_events(steps_done: int, seconds_per_step: float, total: int = 100) -> list:
    started = Started(method="ft", epochs=2, steps_per_epoch=total // 2, n_retain=900, n_forget=100, device="cpu",
                      hparams={})
    return [started] + [Step(step=i, epoch=1 + (i - 1) // (total // 2), losses={"total": 1.0}, lr=0.01,
                             images=64 * i, flops=1e9 * i, seconds=seconds_per_step * i)
                        for i in range(1, steps_done + 1)]


def cli_eta(events: list) -> str:
    out = io.StringIO()
    follow(iter(events), "ft", console=Console(file=out, force_terminal=True, width=200))
    shown = re.findall(r"ETA (\S+)", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()))
    assert shown, out.getvalue()
    return shown[-1]


def test_the_app_and_the_cli_followers_show_the_same_eta_from_the_same_events():
    events = run_events(steps_done=30, seconds_per_step=2.0)  # 60 s for 30 of 100 steps: 140 s left
    log = RunLog(title="ft")
    for e in events:
        log.apply(e)
    assert log.eta_seconds == 140.0
    assert format_duration(log.eta_seconds) == "2:20"
    assert cli_eta(events) == "2:20"
    assert cli_eta(run_events(steps_done=90, seconds_per_step=4.0)) == format_duration(40.0) == "0:40"
