"""`coun-lab oracle`: per-example forgetting quality against a population of Retrain models."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from coun_tui.cli.base import (
    ADDRESS,
    BACKEND,
    CPUS_PER_RUN,
    DATA_ROOT,
    DATASET,
    GPUS_PER_RUN,
    STORAGE,
    bool_flag,
    class_index_for,
    command,
    fail,
    method_key_value,
    method_names,
    typed_value,
)


@command()
def oracle(model: str | None = typer.Option(None, "--model", help="checkpoint every method unlearns"),
           methods: str | None = typer.Option(None, "--methods", help="comma-separated, e.g. ft,coun"),
           out: Path | None = typer.Option(None, "--out", help="folder of the populations and the table"),
           show: Path | None = typer.Option(None, "--show", help="print the table of a finished oracle folder"),
           as_json: bool = bool_flag("--json", "with --show: print the scores as JSON"),
           population: int = typer.Option(8, "--population", help="models per population (at least 4)"),
           forget_class: str | None = typer.Option(None, "--forget-class", help="class ids or names, e.g. 3"),
           forget_fraction: float | None = typer.Option(None, "--forget-fraction", help="e.g. 0.1"),
           seed: int = typer.Option(0, "--seed", help="seed of the forget set's draw (members vary their own)"),
           sets: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE or KEY=VALUE (all methods); "
                                          "retrain.KEY=VALUE changes the Retrain (and original) recipe"),
           epochs: int | None = typer.Option(None, "--epochs", help="every method's unlearning epochs "
                                             "(Retrain keeps its recipe)"),
           picks: Path | None = typer.Option(None, "--picks", help="a finished search's experiment file: "
                                             "each method at its best point there"),
           single_original: bool = bool_flag("--single-original", "score the given model as the original "
                                             "instead of retraining a population of originals"),
           jobs: int = typer.Option(1, "--jobs", help="run up to N members at once"),
           backend: str | None = BACKEND, address: str | None = ADDRESS,
           gpus_per_run: float | None = GPUS_PER_RUN, cpus_per_run: float | None = CPUS_PER_RUN,
           storage: str | None = STORAGE,
           device: str = typer.Option("auto", "--device", help="auto, cpu or cuda:N"),
           data_root: str | None = DATA_ROOT, dataset: str | None = DATASET):
    """Train N Retrains and run each method N times; score every forget example (competition F, KLOM)."""
    if show is not None:
        _show(show, as_json)
        return
    missing = [flag for flag, v in (("--model", model), ("--methods", methods), ("--out", out)) if not v]
    if missing:
        fail(f"missing {', '.join(missing)}: give them, or --show DIR to print a finished oracle")
    assert model and methods and out  # checked just above
    if (forget_class is None) == (forget_fraction is None):
        fail("give one of --forget-class or --forget-fraction")
    from coun_tui.engine import backends
    from coun_tui.engine.events import Done, Failed
    from coun_tui.engine.forget import ForgetSpec, parse_classes
    from coun_tui.engine.methods import get as get_method
    from coun_tui.engine.oracle import Oracle, execute

    names = method_names(methods)
    forget = ForgetSpec(classes=parse_classes(forget_class, class_index_for(model, dataset, data_root)),
                        fraction=forget_fraction, seed=seed)
    hparams: dict[str, dict] = {}
    if picks is not None:
        from coun_tui.engine.sweep import Sweep
        from coun_tui.engine.sweep import picks as best_points

        hparams.update(best_points(Sweep.from_file(picks)))
    if epochs is not None:  # above a search's picks, beneath a --set for one method
        for name in names:
            hparams.setdefault(get_method(name).name, {})["epochs"] = typed_value("--epochs", "epochs", str(epochs))
    for item in sets:
        method, name, value = method_key_value("--set", item, [*names, "retrain"])
        hparams.setdefault(method, {})[name] = typed_value("--set", name, value)
    plan = Oracle(model, names, forget, population, out, hparams, device, data_root, dataset,
                  originals=not single_original)
    runner = backends.make(backend, address, gpus_per_run, cpus_per_run, storage)

    def started(i, n, run_dir):
        typer.echo(f"[{i + 1}/{n}] {run_dir.relative_to(out)}", err=True)

    def damaged(run_dir, reason):
        typer.echo(f"damaged member {run_dir.relative_to(out)} left out: {reason}", err=True)

    try:
        for run_dir, event in execute(plan, on_start=started, jobs=jobs, backend=runner, on_damaged=damaged):
            if isinstance(event, Done):
                m = event.metrics
                typer.echo(f"    {run_dir.relative_to(out)}: RA {m['RA']:.2f} TA {m['TA']:.2f}"
                           f" ({event.seconds:.0f} s)", err=True)
            elif isinstance(event, Failed):
                typer.echo(f"    {run_dir.relative_to(out)} failed: {event.reason}", err=True)
    finally:
        runner.close()
    _show(out, False)


def _show(folder: Path, as_json: bool) -> None:
    from coun_tui.engine.oracle import Oracle
    from coun_tui.engine.oracle_report import TABLE_FILE, build, render

    result = build(Oracle.load(folder))
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(render(result))
    from coun_tui.plots import epsilon_png, epsilon_terminal

    title = f"{Path(result['settings']['model']).name}: per-example epsilon against {result['reference']['n']} " \
            "Retrains"
    typer.echo(epsilon_terminal(result["rows"], title))
    png = folder / "oracle-epsilon.png"
    if epsilon_png(result["rows"], title, png):
        typer.echo(f"table in {folder / TABLE_FILE}; histogram in {png}", err=True)
    else:
        typer.echo(f"table in {folder / TABLE_FILE}; no PNG: matplotlib is missing (pip install -e '.[plots]')",
                   err=True)
