"""`coun-lab tune`: one budgeted Optuna search per method (engine/tune.py), and --show of a study."""

from __future__ import annotations

from pathlib import Path

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
    SEED,
    class_index_for,
    command,
    fail,
    forget_spec,
    log_targets,
    method_names,
)


def tune_engine():
    """engine/study.py and engine/tune.py, or one line saying how to install Optuna, which they need."""
    try:
        from coun_tui.engine import study as study_api
        from coun_tui.engine import tune as tune_api
    except ImportError as exc:
        if exc.name != "optuna":
            raise
        fail("coun-lab tune needs Optuna, which is not installed here: pip install -e '.[tune]'")
    return study_api, tune_api


def parse_range(item: str) -> tuple[str, tuple[float, float, bool | None]]:
    """'lr=1e-4:0.1:log' -> ("lr", (0.0001, 0.1, True)); without :log or :linear, as declared."""
    key, sep, text = item.partition("=")
    parts = text.split(":")
    if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
        fail(f"--range {item!r}: expected KEY=LOW:HIGH, KEY=LOW:HIGH:log or KEY=LOW:HIGH:linear")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        fail(f"--range {item!r}: LOW and HIGH must be numbers, e.g. lr=0.001:0.1")
    return key.strip().replace("-", "_"), (low, high, None if len(parts) == 2 else parts[2] == "log")


@command()
def tune(model: str | None = typer.Option(None, "--model", help="checkpoint every trial unlearns"),
         method: str | None = typer.Option(None, "--method", help="method, or comma-separated methods (one "
                                           "study each); a baseline +CL as ft+cl"),
         out: Path | None = typer.Option(None, "--out", help="the study folder (several methods: one "
                                         "folder each beneath it, beside a shared retrain/)"),
         trials: int = typer.Option(16, "--trials", help="trials of every study (the budget)"),
         epochs: int = typer.Option(5, "--epochs", help="unlearning epochs of every trial"),
         ranges: list[str] = typer.Option([], "--range", help="KEY=LOW:HIGH[:log|:linear], repeatable: "
                                          "search KEY there instead of its declared range"),
         pruner: str = typer.Option("median", "--pruner", help="median, halving (successive halving) or none"),
         half_seed: int = typer.Option(0, "--half-seed", help="seed of the test set's split into the "
                                       "validation half (tuning) and the report half (final tables)"),
         storage: str | None = typer.Option(None, "--storage", help="an SQLAlchemy URL for the study "
                                            "(default: sqlite in the study folder)"),
         show: Path | None = typer.Option(None, "--show", help="print a study's trials, best parameters "
                                          "and hyperparameter importance; run nothing"),
         forget_class: str | None = FORGET_CLASS, forget_fraction: float | None = FORGET_FRACTION,
         forget_indices: str | None = FORGET_INDICES, seed: int = SEED, device: str = DEVICE,
         reference: str | None = typer.Option(None, "--reference", help="a finished Retrain run measured on "
                                              "the same validation half (default: the study runs one)"),
         jobs: int = typer.Option(1, "--jobs", help="trials at once (within each device's limit)"),
         backend: str | None = BACKEND, address: str | None = ADDRESS,
         gpus_per_run: float | None = GPUS_PER_RUN, cpus_per_run: float | None = CPUS_PER_RUN,
         data_root: str | None = DATA_ROOT, dataset: str | None = DATASET, log: list[str] = LOG):
    """Search each method's hyperparameters (the ranges `coun-lab methods` shows) with Optuna, every
    trial a run; the objective is the Avg. Gap to Retrain with TA on the test set's validation half."""
    study_api, tune_api = tune_engine()
    if show is not None:
        typer.echo("\n".join(study_api.show(show)))
        return
    missing = [flag for flag, v in (("--model", model), ("--method", method), ("--out", out)) if not v]
    if missing:
        fail(f"missing {', '.join(missing)}: e.g. coun-lab tune --model M --method ft --forget-class 3 --out DIR")
    assert model and method and out  # checked just above
    if not Path(model).is_file():
        fail(f"--model {model}: no such checkpoint file")
    from coun_tui.engine import backends
    from coun_tui.engine.methods import get as get_method

    forget = forget_spec(forget_class, forget_fraction, forget_indices, seed,
                         class_index_for(model, dataset, data_root))
    if not (forget.classes or forget.fraction is not None or forget.indices_file):
        fail("tuning needs a forget set: --forget-class, --forget-fraction or --forget-indices")
    names = list(dict.fromkeys(method_names(method)))
    overrides = dict(parse_range(item) for item in ranges)
    several = len(names) > 1
    shared_ref = reference or (str((out / "retrain").resolve()) if several else None)
    plans = []
    for name in names:  # every study is checked before any of them writes
        base, cl = (name[:-3], True) if name.lower().endswith("+cl") else (name, False)
        cls = get_method(base)
        settings = study_api.StudySettings(
            model=str(Path(model).resolve()), method=cls.name, cl=cl, forget=forget, trials=trials, epochs=epochs,
            seed=seed, half_seed=half_seed, space=study_api.search_space(cls.name, cl, overrides),
            reference=str(Path(shared_ref).resolve()) if shared_ref else None, storage=storage, dataset=dataset)
        folder = out / settings.label.lower() if several else out
        plans.append(study_api.prepare(folder, settings, device, data_root, log_targets(log)))
    chosen_pruner = tune_api.make_pruner(pruner)
    runner = backends.make(backend, address, gpus_per_run, cpus_per_run)
    try:
        for study, _ in plans:  # every study's runs are checked before the first one starts
            tune_api.check(study, runner, own_reference=reference is None)
        for study, started_as in plans:
            typer.echo(f"study {study.folder}: {study.settings.label}, {trials} trials of {epochs} epoch(s); "
                       f"searching {study_api.describe_space(study.settings.space)}", err=True)
            tune_api.run(study, started_as, jobs, runner, chosen_pruner, say=lambda line: typer.echo(line, err=True),
                         own_reference=reference is None)
            typer.echo("\n".join(study_api.show(study.folder)))
    finally:
        runner.close()
