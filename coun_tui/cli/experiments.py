"""Experiments: sweeps of runs, comparison tables, curves along a grid axis."""

from __future__ import annotations

from pathlib import Path

import typer

from coun_tui.cli.base import (
    ADDRESS,
    BACKEND,
    CPUS_PER_RUN,
    DATA_ROOT,
    DATASET,
    GPUS_PER_RUN,
    INVOCATION,
    LOG,
    STORAGE,
    bool_flag,
    class_index_for,
    command,
    fail,
    log_targets,
    method_key_value,
    method_names,
    model_or_default,
    typed_value,
)


@command()
def compare(runs: list[Path] = typer.Argument(..., help="finished run directories"),
            fmt: str = typer.Option("md", "--format", help="md, csv or json"),
            sort: str | None = typer.Option(None, "--sort", help="column to sort by, e.g. avg_gap"),
            reference: str | None = typer.Option(
                None, "--reference", help="Retrain run: measure every run's gaps against it"),
            per_method: bool = bool_flag("--per-method", "one row per method and forget set: mean ± std over "
                                         "its runs (distinct seeds; a repeat counts once), with the paper's Avg. "
                                         "Gap (gap of means)")):
    """Print a comparison table of finished runs (the paper's Table 1 layout)."""
    from coun_tui.engine.report import compare as compare_runs

    typer.echo(compare_runs(runs, fmt, sort, reference, per_method), nl=False)


@command()
def sweep(model: str | None = typer.Option(None, "--model", help="checkpoint every run unlearns (default: the "
                                          "app's default, the shipped digits model)"),
          models: str | None = typer.Option(None, "--models", help="several original models, comma-separated "
                                            "(e.g. one recipe trained with seeds 0,1,2): every seed on each"),
          methods: str | None = typer.Option(None, "--methods", help="comma-separated, e.g. ft,neggrad+,coun"),
          out: Path | None = typer.Option(None, "--out", help="folder of the sweep's runs and tables"),
          spec: Path | None = typer.Option(None, "--spec", help="an experiment file (experiments/*.toml) "
                                              "holding these options; options given here override it"),
          forget_class: list[str] = typer.Option([], "--forget-class", help="repeatable: one forget set each"),
          forget_fraction: list[float] = typer.Option([], "--forget-fraction", help="repeatable"),
          seeds: str | None = typer.Option(None, "--seeds", help="comma-separated, e.g. 0,1,2 (default 0)"),
          cl_too: bool = bool_flag("--cl-too", "also run each baseline +CL"),
          sets: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE or KEY=VALUE (all methods)"),
          grids: list[str] = typer.Option([], "--grid", help="METHOD.KEY=V1,V2 or KEY=V1,V2: one run per value"),
          jobs: int = typer.Option(1, "--jobs", help="run up to N jobs at once (within each device's limit, "
                                   "see `coun-lab runs limit`; Ray runs as many as its resources allow)"),
          backend: str | None = BACKEND, address: str | None = ADDRESS,
          gpus_per_run: float | None = GPUS_PER_RUN, cpus_per_run: float | None = CPUS_PER_RUN,
          storage: str | None = STORAGE, log: list[str] = LOG,
          device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda:N"),
          dry_run: bool = bool_flag("--dry-run", "list the runs and which are finished; run none"),
          from_study: str | None = typer.Option(
              None, "--from-study", help="STUDY[,STUDY...]: each study's best parameters for its method "
              "(`coun-lab tune`); TA then reads the report half of the test set"),
          data_root: str | None = DATA_ROOT, dataset: str | None = DATASET):
    """Run every (method, forget set, seed, grid point) with its Retrain reference; write table.md/json."""
    from coun_tui.engine.forget import ForgetSpec, parse_classes

    if spec is None:
        model = model_or_default(model or (method_names(models)[0] if models and method_names(models) else None))
        if not from_study:  # a study's methods are known once it is read, with the engine
            _precheck_sweep(model, methods, device, sets, grids, forget_class,
                            class_index_for(model, dataset, data_root))

    from coun_tui.engine import backends
    from coun_tui.engine.events import Done, Failed
    from coun_tui.engine.sweep import Sweep, execute

    if spec is not None:
        plan = Sweep.from_file(spec, model=model, out=out, device=device, data_root=data_root, dataset=dataset)
        if methods:
            plan.methods = method_names(methods)
        plan.cl_too = plan.cl_too or cl_too
    else:
        missing = [flag for flag, v in (("--methods", methods or from_study), ("--out", out)) if not v]
        if missing:
            fail(f"missing {', '.join(missing)}: give them, or an experiment file with --spec FILE")
        assert model and out  # model: the default, given above; out: checked just above
        plan = Sweep(model, method_names(methods or ""), [], [0], out, cl_too, device=device or "auto",
                     data_root=data_root, dataset=dataset)
    if models:
        plan.models = method_names(models)
        plan.model = plan.models[0]
    if from_study:  # before the --set flags, which may name the studies' methods
        from coun_tui.cli.tune import tune_engine

        tune_engine()[0].apply_studies(plan, method_names(from_study))
    names = plan.methods + ["retrain"]
    index = class_index_for(plan.model, plan.dataset, plan.data_root)
    forgets = [ForgetSpec(classes=parse_classes(c, index)) for c in forget_class]
    forgets += [ForgetSpec(fraction=f) for f in forget_fraction]
    plan.forgets = forgets or plan.forgets
    plan.log = log_targets(log) or plan.log
    if not plan.forgets:
        fail("a sweep needs at least one --forget-class or --forget-fraction")
    for item in sets:
        method, name, value = method_key_value("--set", item, names)
        plan.hparams.setdefault(method, {})[name] = typed_value("--set", name, value)
    for item in grids:
        method, name, values = method_key_value("--grid", item, names)
        plan.grid.setdefault(method, {})[name] = [typed_value("--grid", name, v)
                                                  for v in values.split(",") if v.strip()]
    if seeds is not None:
        try:
            plan.seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            fail(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    out = plan.out
    total = len(plan.runs())
    if dry_run:
        from coun_tui.engine.sweep import find_reusable

        for run_dir, run_spec in plan.runs():
            found = None if (run_dir / "metrics.json").is_file() else find_reusable(plan, run_dir, run_spec)
            state = "finished" if (run_dir / "metrics.json").is_file() else f"reuse {found}" if found else "to run"
            typer.echo(f"{run_dir}: {state}")
        return

    runner = backends.make(backend, address, gpus_per_run, cpus_per_run, storage)
    if runner.schedules:
        typer.echo(f"on {runner.describe()}", err=True)

    def started(i, n, run_dir):
        typer.echo(f"[{i + 1}/{n}] {run_dir.relative_to(out)}", err=True)

    try:
        for run_dir, event in _stop_says_where(execute(plan, on_start=started, jobs=jobs, backend=runner), plan):
            where = f"    {run_dir.relative_to(out)}:" if jobs > 1 or runner.schedules else "   "
            if isinstance(event, Done):
                m = event.metrics
                typer.echo(f"{where} RA {m['RA']:.2f} UA {m['UA']:.2f} TA {m['TA']:.2f} MIA {m['MIA']:.2f}"
                           + (f" Avg.Gap {m['avg_gap']:.2f}" if m.get("avg_gap") is not None else "")
                           + f"  ({event.seconds:.0f} s)", err=True)
            elif isinstance(event, Failed):
                typer.echo(f"{where} failed: {event.reason}", err=True)
    finally:
        runner.close()
    typer.echo((out / "table.md").read_text())
    typer.echo(f"{total} runs; tables in {out / 'table.md'} and {out / 'table.json'}", err=True)


def _stop_says_where(events, plan):
    """The sweep's events; on Ctrl-C (execute has cancelled the running jobs), one line saying what
    finished, what was cancelled and the command that resumes the sweep, then exit 130."""
    try:
        yield from events
    except KeyboardInterrupt:
        import shlex

        from coun_tui.engine import jobs as job_api
        from coun_tui.engine.rundir import read_state

        runs = [run_dir for run_dir, _ in plan.runs()]
        finished = [d for d in runs if (d / "metrics.json").is_file()]
        stopped = [d for d in runs if (d / "run.toml").is_file() and d not in finished]
        for run_dir in stopped:
            if read_state(run_dir).live:
                job_api.wait(run_dir, job_api.CANCEL_GRACE_SECONDS + 5)
        names = f" ({', '.join(str(d.relative_to(plan.out)) for d in stopped)})" if stopped else ""
        typer.echo(f"interrupted: {len(finished)} of {len(runs)} runs finished and kept in {plan.out}; "
                   f"{len(stopped)} cancelled{names}; {len(runs) - len(finished) - len(stopped)} not started. "
                   f"Resume (finished runs are kept): {shlex.join(['coun-lab', *INVOCATION])}", err=True)
        raise typer.Exit(130) from None


def _precheck_sweep(model: str, methods: str | None, device: str | None, sets: list[str], grids: list[str],
                   forget_class: list[str], index) -> None:
    """What a sweep's options can be checked for without torch (it loads with the sweep's engine):
    the model file, the method names, the device's spelling, --set and --grid values, class names."""
    from coun_tui.engine.forget import parse_classes
    from coun_tui.engine.methods import get as get_method
    from coun_tui.engine.precheck import check_device_name, check_model

    check_model(model)
    names = method_names(methods or "")
    for name in names:
        get_method(name.removesuffix("+cl"))
    if device:
        check_device_name(device)
    for flag, items in (("--set", sets), ("--grid", grids)):
        for item in items:
            _, key, value = method_key_value(flag, item, names + ["retrain"])
            for v in (value.split(",") if flag == "--grid" else [value]):
                if v.strip() or flag == "--set":
                    typed_value(flag, key, v)
    for classes in forget_class:
        parse_classes(classes, index)


@command()
def curve(spec: Path = typer.Argument(..., help="the experiment file of a sweep with a grid axis"),
          axis: str = typer.Option("epochs", "--axis", help="the grid axis to plot along"),
          png: Path | None = typer.Option(None, "--png", help="also write the plot as a PNG (needs "
                                             "matplotlib: pip install -e '.\\[plots]')")):
    """Avg. Gap along a grid axis and against PFLOPs, in the terminal (and optionally as a PNG)."""
    from coun_tui.engine.sweep import Sweep, curves

    plan = Sweep.from_file(spec)
    found = {tag: series for tag, series in curves(plan, axis).items() if series}
    if not found:
        fail(f"no finished runs along {axis!r} in {plan.out}; run `coun-lab sweep --spec {spec}` first")
    from coun_tui.plots import budget_png, budget_terminal

    for tag, series in found.items():
        typer.echo(budget_terminal(series, axis, f"{spec.stem}, {tag}"))
        for name, points in series.items():
            typer.echo(f"{name:<22} " + "  ".join(f"{p[axis]}: {p['avg_gap']:.2f} ({p['pflops']:.3g} PF)"
                                                  for p in points if p.get("avg_gap") is not None))
        if png is not None:
            target = png if len(found) == 1 else png.with_name(f"{png.stem}-{tag}{png.suffix}")
            budget_png(series, axis, f"{spec.stem}, {tag}", target)
            typer.echo(f"wrote {target}", err=True)
