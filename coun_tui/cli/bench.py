"""Benchmarks: the training step, jobs, metrics and Ray overheads."""

from __future__ import annotations

from pathlib import Path

import typer

from coun_tui.cli.base import ADDRESS, DEVICE, bool_flag, command


@command()
def bench(device: str = DEVICE,
          image_size: int = typer.Option(28, "--image-size", help="side of the square test images"),
          batch_size: int = typer.Option(128, "--batch-size", help="images per step"),
          steps: int = typer.Option(5, "--steps", help="timed steps per variant"),
          job_costs: bool = bool_flag("--jobs", "also measure what running as a job costs: worker vs in-process "
                                      "img/s, launch to first step, following CPU (three short digits runs)"),
          metrics: bool = bool_flag("--metrics", "instead: what the metrics beyond RA/UA/TA/MIA add to a digits "
                                    "run and to a live refresh"),
          method_speed: bool = bool_flag("--methods", "instead: every method (and +CL) on the same digits data for "
                                         "--steps steps: img/s, FLOPs per image, FLOP/s against the bare step's"),
          ray_costs: bool = bool_flag("--ray", "also measure Ray's overhead per run against the local backend, "
                                      "and 4 runs sharing a GPU vs one after another (needs Ray; a local one, "
                                      "or --address)"),
          address: str | None = ADDRESS):
    """Training-step and inference throughput of the default path (bf16, channels_last) vs plainer ones."""
    from coun_tui.engine.bench import run_bench, run_metrics_bench
    from coun_tui.engine.paths import DEFAULT_MODEL
    from coun_tui.engine.runner import resolve_device

    dev = resolve_device(device)
    if method_speed:
        from coun_tui.engine.bench_methods import run_bench_methods, table

        typer.echo(f"device {dev}, the shipped digits model, class 3 forgotten, batch {batch_size}, "
                   f"{max(steps, 3)} steps per method (FLOP/s over the steps after each epoch's first)")
        for line in table(*run_bench_methods(str(DEFAULT_MODEL), str(dev), max(steps, 3), batch_size)):
            typer.echo(line)
        return
    if metrics:
        rows = run_metrics_bench(str(DEFAULT_MODEL), dev)
        width = max(len(name) for name, _, _ in rows)
        for name, value, unit in rows:
            typer.echo(f"{name:<{width}} {value:10.3f} {unit}")
        return
    typer.echo(f"device {dev}, ResNet-18 (CIFAR stem), batch {batch_size}, {image_size}x{image_size}x1")
    rows = run_bench(dev, image_size, 1, batch_size, steps)
    if job_costs:
        import tempfile

        from coun_tui.engine.bench_jobs import run_bench_jobs
        from coun_tui.engine.paths import DEFAULT_MODEL
        from coun_tui.tui.bench_follow import app_follow_cpu

        with tempfile.TemporaryDirectory(prefix="coun-lab-bench-") as tmp:
            rows += run_bench_jobs(str(DEFAULT_MODEL), str(dev), Path(tmp))
            share, seen = app_follow_cpu(str(DEFAULT_MODEL), str(dev), Path(tmp) / "app")
            rows.append((f"CPU of the app following a job ({seen} steps; target <= 5%)", share, "% of a core"))
    if ray_costs:
        import tempfile

        from coun_tui.engine import backends
        from coun_tui.engine.bench_ray import run_bench_ray
        from coun_tui.engine.paths import DEFAULT_MODEL

        backends.require_ray()
        with tempfile.TemporaryDirectory(prefix="coun-lab-bench-") as tmp:
            rows += run_bench_ray(str(DEFAULT_MODEL), Path(tmp), address)
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        typer.echo(f"{name:<{width}} {value:10.2f} {unit}")
