"""Following a run: the progress bar over its event stream, and the verdict at its end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from coun_tui.cli.base import fail


def follow(events, title: str, quiet: bool = False, console=None):
    """Consume a run's events with a progress bar on a terminal; return the last event. The ETA is
    the engine's (events.Progress), the same the app and every other follower show."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from coun_tui.engine.events import Cancelled, Done, EpochMetrics, Failed, Started, Step, format_duration
    from coun_tui.engine.events import Progress as RunProgress

    console = console or Console(stderr=True)
    last, run = None, RunProgress()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TextColumn("ETA {task.fields[eta]}"), console=console,
                  disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task(title, total=None, info="", eta=format_duration(None))
        for event in events:
            last = event
            run.update(event)
            bar.update(task, eta=format_duration(run.eta_seconds))
            if isinstance(event, Started):
                bar.update(task, total=event.total_steps)
            elif isinstance(event, Step):
                ips = event.images / max(event.seconds, 1e-9)
                bar.update(task, completed=event.step, info=f"loss {event.losses['total']:.3f}  "
                           f"{ips:.0f} img/s  {event.flops / 1e15:.4f} PFLOPs")
            elif isinstance(event, EpochMetrics) and not quiet and not console.is_terminal:
                shown = "  ".join(f"{k} {v:.2f}" for k, v in event.metrics.items() if not math.isnan(v))
                console.print(f"epoch {event.epoch}: {shown} (probe subsets)")
            elif isinstance(event, (Done, Failed, Cancelled)):
                break
    return last


def finish(last) -> None:
    from coun_tui.engine.events import Cancelled, Failed

    if isinstance(last, Failed):
        fail(f"run failed: {last.reason}")
    if isinstance(last, Cancelled):
        fail(f"run cancelled at step {last.step}")


def metrics_table(metrics: dict) -> str:
    from coun_tui.engine.records import METRICS

    lines = []
    for key in METRICS:
        value = metrics.get(key)
        gap = (metrics.get("gap") or {}).get(key)
        shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.2f}"
        lines.append(f"{key:>4}  {shown}" + (f"   gap {gap:5.2f}" if gap is not None else ""))
    if metrics.get("avg_gap") is not None:
        lines.append(f"Avg. Gap  {metrics['avg_gap']:.2f}")
    from coun_tui.engine.report import DEEPER, _fmt

    for key, label in DEEPER:  # what the run has of the metrics beyond the paper's
        if _fmt(metrics, key, False) != "-":
            lines.append(f"{label:<20} {_fmt(metrics, key, False)}")
    return "\n".join(lines)


def follow_job(run_dir: Path, title: str, quiet: bool = False, cancel_on_interrupt: bool = True) -> None:
    """Follow a job with the progress bar to its end and print its verdict; Ctrl-C cancels it
    (or, with cancel_on_interrupt=False, only stops watching)."""
    from coun_tui.engine import jobs

    def queued(state) -> None:
        if state.state == "queued" and state.detail and not quiet:
            typer.echo(f"queued: {state.detail}", err=True)

    try:
        follow(jobs.stream(run_dir, on_state=queued), title, quiet)
    except KeyboardInterrupt:
        if not cancel_on_interrupt:
            typer.echo(f"stopped watching; the run goes on (coun-lab runs cancel {run_dir} stops it)", err=True)
            raise typer.Exit(130) from None
        typer.echo("cancelling…", err=True)
        jobs.cancel(run_dir)
        state = jobs.wait(run_dir, jobs.CANCEL_GRACE_SECONDS + 5)
        typer.echo(f"{state.describe()}: {run_dir}", err=True)
        raise typer.Exit(130) from None
    verdict(run_dir, jobs.wait(run_dir, 60))  # its last event is written just before its verdict


def verdict(run_dir: Path, state) -> None:
    """Print a finished job's metrics, or fail with its state in one line."""
    if state.state == "done":
        m = json.loads((run_dir / "metrics.json").read_text())
        typer.echo(metrics_table(m))
        paper = f" ({m['pflops_paper']:.4f} by the paper's count)" if m.get("pflops_paper") else ""
        typer.echo(f"{m['pflops']:.4f} PFLOPs{paper}, {m['seconds']:.1f} s; saved run in {run_dir}")
        return
    if state.state == "failed":
        fail(f"run failed: {state.detail}")
    fail(f"run {state.describe()}: {run_dir}")
