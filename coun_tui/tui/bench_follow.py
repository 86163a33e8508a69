"""The app's CPU while it follows a running job (for `coun-lab bench --jobs`): the real app,
headless, reattached to a digits job, measured over the job's training time while the harness
only sleeps."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from coun_tui.engine import jobs
from coun_tui.engine.bench_jobs import cpu_seconds, digits_spec
from coun_tui.engine.runner import check


def app_follow_cpu(model: str, device: str, runs_dir: Path, epochs: int = 2) -> tuple[float, int]:
    """(% of one core the app used while following, steps it received)."""
    from coun_tui.tui.app import CounLab

    spec = digits_spec(model, device, epochs)
    run_dir = jobs.launch(spec, runs_dir / "followed", check(spec))

    async def follow() -> tuple[float, int]:
        app = CounLab(model=model, runs_dir=runs_dir)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.setup_panel.dataset is None or not app.panes():
                await pilot.pause(0.1)
            pane = app.panes()[0]
            while pane.runlog.step == 0 and not pane.runlog.finished:  # the worker is loading
                await pilot.pause(0.1)
            cpu0, wall0, step0 = cpu_seconds(), time.perf_counter(), pane.runlog.step
            while not pane.runlog.finished:
                # A plain sleep, not pilot.pause: that posts a message to every widget of the screen
                # at each call (the test harness's cost, most of the CPU when it was measured).
                await asyncio.sleep(0.2)
            share = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
            return 100 * share, pane.runlog.step - step0

    try:
        return asyncio.run(follow())
    finally:
        jobs.cancel(run_dir)
