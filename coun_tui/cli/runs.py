"""Runs as jobs: start one (`unlearn`), list, follow, cancel them, and set a device's limit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from coun_tui.cli.base import (
    ADDRESS,
    BACKEND,
    CPUS_PER_RUN,
    DATA_ROOT,
    DATASET,
    DEVICE,
    FORGET_CLASS,
    FORGET_FRACTION,
    FORGET_INDICES,
    GPUS_PER_RUN,
    LOG,
    MEAN,
    PRECISION,
    REFERENCE,
    SEED,
    STD,
    STORAGE,
    bool_flag,
    class_index_for,
    command,
    fail,
    floats,
    forget_spec,
    given_hparams,
    log_targets,
    model_or_default,
)
from coun_tui.cli.follow import follow_job


@command()
def unlearn(model: str | None = typer.Option(None, "--model", help="checkpoint to unlearn (default: the "
                                              "app's default, the shipped digits model)"),
            method: str = typer.Option(..., "--method", help="see `coun-lab methods`"),
            out: str = typer.Option(..., "--out", help="run directory to write (a new one)"),
            cl: bool = bool_flag("--cl", "add CoUn's contrastive term to a baseline (not to retrain or coun)"),
            forget_class: str | None = FORGET_CLASS, forget_fraction: float | None = FORGET_FRACTION,
            forget_indices: str | None = FORGET_INDICES, seed: int = SEED,
            dataset: str | None = DATASET, data_root: str | None = DATA_ROOT,
            reference: str | None = REFERENCE, device: str = DEVICE,
            precision: str = PRECISION,
            mean: str | None = MEAN, std: str | None = STD,
            detach: bool = bool_flag("--detach", "start the job and return (follow it with `coun-lab runs watch OUT`)"),
            quiet: bool = bool_flag("--quiet", "no progress bar or per-epoch lines, only the final table", "-q"),
            backend: str | None = BACKEND, address: str | None = ADDRESS,
            gpus_per_run: float | None = GPUS_PER_RUN, cpus_per_run: float | None = CPUS_PER_RUN,
            storage: str | None = STORAGE, log: list[str] = LOG,
            **hparams: Any):
    """Make a model forget: run a method as a job that keeps the run in --out (followed here; Ctrl-C
    cancels it). Every hyperparameter of every method has a flag; `coun-lab methods` lists each
    method's defaults."""
    from coun_tui.engine.precheck import check_run
    from coun_tui.engine.rundir import check_out_dir

    model = model_or_default(model)
    # Everything that needs no torch first: a mistake is one line before torch loads.
    check_run(model, method, cl, given_hparams(hparams), seed, device, precision)
    check_out_dir(out, model)
    forget = forget_spec(forget_class, forget_fraction, forget_indices, seed,
                         class_index_for(model, dataset, data_root))
    mean_, std_ = floats(mean, "--mean"), floats(std, "--std")

    from coun_tui.engine import backends
    from coun_tui.engine.records import method_label
    from coun_tui.engine.runner import RunSpec

    spec = RunSpec(method=method, model=model, dataset=dataset, data_root=data_root,
                   forget=forget, cl=cl, hparams=given_hparams(hparams), seed=seed, device=device,
                   precision=precision, reference=reference, mean=mean_, std=std_,
                   log=log_targets(log))
    runner = backends.make(backend, address, gpus_per_run, cpus_per_run, storage)
    if detach and runner.schedules:
        fail("--detach needs the local backend: a Ray run belongs to the command that submitted it "
             "(follow it here; Ctrl-C cancels it)")
    try:
        run_dir = runner.launch(spec, out)
        if runner.schedules and not quiet:
            typer.echo(f"on {runner.describe()}", err=True)
        if detach:
            typer.echo(str(run_dir))
            return
        follow_job(run_dir, method_label(method.lower(), cl and method.lower() != "coun"), quiet)
    finally:
        runner.close()


@command("runs")
def runs_cmd(what: list[str] | None = typer.Argument(
        None, metavar="[DIR] | watch RUN | cancel RUN | limit DEVICE [N]",
        help="list the runs under DIR (default: the app's runs directory); follow or cancel one; "
             "show or set how many jobs may run at once on a device"),
        as_json: bool = bool_flag("--json", "print the list as JSON")):
    """Jobs: list runs with their state, follow one, cancel one, or set a device's limit."""
    from coun_tui.engine import devqueue, jobs
    from coun_tui.engine.paths import default_runs_dir
    from coun_tui.engine.rundir import read_state
    from coun_tui.engine.runlist import list_runs

    what = list(what or [])
    action = what[0] if what and what[0] in ("watch", "cancel", "limit") else "list"
    args = what[1:] if action != "list" else what
    if action == "limit":
        if not args or len(args) > 2:
            fail("usage: coun-lab runs limit DEVICE [N], e.g. coun-lab runs limit cuda:0 4")
        devqueue.check_queue(args[0])
        if len(args) == 2:
            try:
                devqueue.set_limit(args[0], int(args[1]))
            except ValueError:
                fail(f"limit {args[1]!r}: expected a whole number of jobs, e.g. 4")
        typer.echo(f"{args[0]}: up to {devqueue.get_limit(args[0])} job(s) at once")
        return
    if action in ("watch", "cancel"):
        if len(args) != 1:
            fail(f"usage: coun-lab runs {action} RUN_DIR")
        run_dir = Path(args[0])
        if not os.path.isfile(run_dir / "run.toml"):  # (never raises, even on a name too long)
            fail(f"{run_dir} is not a run directory (no run.toml)")
        if action == "watch":
            state = read_state(run_dir)
            if not state.live:
                typer.echo(f"{state.describe()}: {run_dir}")
                return
            follow_job(run_dir, run_dir.name, cancel_on_interrupt=False)
            return
        if not jobs.cancel(run_dir):
            fail(f"{run_dir} is {read_state(run_dir).describe()}: nothing to cancel")
        state = jobs.wait(run_dir, jobs.CANCEL_GRACE_SECONDS + 5)
        typer.echo(f"{state.describe()}: {run_dir}")
        return
    if len(args) > 1:
        fail("usage: coun-lab runs [DIR]")
    root = Path(args[0]) if args else default_runs_dir()
    if not os.path.exists(root):
        fail(f"{root} does not exist; give a runs directory, a sweep folder or a run")
    rows = list_runs(root)
    for problem in devqueue.queue_problems():
        typer.echo(f"warning: {problem}", err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        typer.echo(f"no runs under {root}")
        return
    typer.echo(f"{'state':<10} {'method':<13} {'forget':<16} {'progress':<11} {'age':>6}  run")
    for r in rows:
        typer.echo(f"{r['state']:<10} {r['method']:<13} {r['forget']:<16} {r['progress']:<11} {r['age']:>6}  "
                   f"{r['run']}" + (f"\n{'':<10} {r['detail']}" if r["detail"] else ""))
