"""Models and methods: train an original model, evaluate a checkpoint, list the methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from coun_tui.cli.base import (
    DATA_ROOT,
    DATASET,
    DEVICE,
    FORGET_CLASS,
    FORGET_FRACTION,
    FORGET_INDICES,
    MEAN,
    PRECISION,
    REFERENCE,
    STD,
    bool_flag,
    class_index_for,
    command,
    fail,
    floats,
    forget_spec,
    given_hparams,
)
from coun_tui.cli.follow import finish, follow, metrics_table


@command()
def train(dataset: str | None = typer.Option(None, "--dataset", help="dataset to train on"),
          out: Path = typer.Option(..., "--out", help="checkpoint to write (.safetensors)"),
          like: Path | None = typer.Option(None, "--like", help="train a checkpoint's recipe again (its "
                                           "dataset, subset and hyperparameters) with --seed"),
          data_root: str | None = DATA_ROOT,
          subset: int | None = typer.Option(None, "--subset", help="stratified subset of N train images"),
          seed: int = typer.Option(0, "--seed", help="seed of the weights' initialisation and of training"),
          device: str = DEVICE,
          precision: str = PRECISION,
          half: bool = bool_flag("--half", "store the weights in float16 (half the size)"),
          force: bool = bool_flag("--force", "replace --out if it exists"),
          **hparams: Any):
    """Train an original ResNet-18 (the paper's SGD recipe scaled to the data)."""
    from coun_tui.engine.runner import RunSpec, prepare
    from coun_tui.engine.runs import train_checkpoint

    if out.suffix != ".safetensors":
        fail(f"--out {out} must end in .safetensors")
    if subset is not None and subset < 1:
        fail(f"--subset {subset} must be at least 1")
    if out.exists() and not force:
        fail(f"--out {out} exists; give a new file, or --force to replace it")
    recipe: dict[str, Any] = {"dataset": dataset, "subset": subset, "subset_seed": None, "hparams": {}}
    if like is not None:
        from coun_tui.engine.runs import recipe_of

        if dataset or subset is not None:
            fail("--like takes the dataset and subset from the checkpoint: drop --dataset and --subset")
        recipe = recipe_of(like)
        half = half or recipe.pop("half")
    elif not dataset:
        fail("missing --dataset: give it, or --like CHECKPOINT to train that checkpoint's recipe again")
    prep = prepare(RunSpec(method="retrain", dataset=recipe["dataset"], data_root=data_root, subset=recipe["subset"],
                           subset_seed=recipe["subset_seed"], hparams={**recipe["hparams"], **given_hparams(hparams)},
                           seed=seed, device=device, precision=precision))
    last = follow(train_checkpoint(prep, out, dtype="float16" if half else "float32"), f"train {dataset}")
    finish(last)
    typer.echo(f"saved {out}: test accuracy {last.metrics['TA']:.2f}%, train accuracy "
               f"{last.metrics['RA']:.2f}%, {last.seconds:.0f} s")


@command("eval")
def evaluate(model: str = typer.Option(..., "--model", help="checkpoint to evaluate"),
             forget_class: str | None = FORGET_CLASS, forget_fraction: float | None = FORGET_FRACTION,
             forget_indices: str | None = FORGET_INDICES,
             seed: int = typer.Option(0, "--seed", help="seed of the forget set's draw (--forget-fraction)"),
             dataset: str | None = DATASET, data_root: str | None = DATA_ROOT,
             reference: str | None = REFERENCE, device: str = DEVICE,
             precision: str = PRECISION,
             mean: str | None = MEAN, std: str | None = STD,
             as_json: bool = bool_flag("--json", "print JSON")):
    """RA, UA, TA and MIA of a checkpoint on the full sets (and gaps to a Retrain reference)."""
    from coun_tui.engine.precheck import check_device_name, check_model, check_precision

    check_device_name(device)
    check_precision(precision)
    check_model(model)  # before torch loads
    forget = forget_spec(forget_class, forget_fraction, forget_indices, seed,
                         class_index_for(model, dataset, data_root))
    mean_, std_ = floats(mean, "--mean"), floats(std, "--std")

    from coun_tui.engine.runner import RunSpec, evaluate_checkpoint

    spec = RunSpec(model=model, dataset=dataset, data_root=data_root, seed=seed, device=device,
                   precision=precision, forget=forget, reference=reference, mean=mean_, std=std_)
    result, split, meta = evaluate_checkpoint(spec)
    if as_json:
        typer.echo(json.dumps({**result, "n_retain": len(split.retain), "n_forget": len(split.forget),
                               "dataset": meta.get("dataset")}, indent=2))
    else:
        typer.echo(f"{model}: {meta.get('dataset')}, {len(split.retain)} retain / {len(split.forget)} forget")
        typer.echo(metrics_table(result))


@command()
def methods():
    """List the unlearning methods with their hyperparameters: defaults and valid values."""
    import shutil
    import textwrap

    from coun_tui.engine.methods import all_methods, searched
    from coun_tui.engine.methods.params import CONTRASTIVE_PARAMS, OPTIMISER_PARAMS

    methods_ = all_methods()
    width = max(map(len, methods_)) + 2
    columns = max(80, min(shutil.get_terminal_size().columns, 120))

    def wrap(line: str, indent: int = width + 2) -> str:
        return textwrap.fill(line, width=columns, subsequent_indent=" " * indent, break_on_hyphens=False)

    def common(title: str, params: dict) -> None:
        typer.echo(title)
        for key, p in params.items():
            defaults = {cls.declared()[key].default for cls in methods_.values()}
            shown = str(p.default) if len(defaults) == 1 else "per method"
            typer.echo(wrap(f"  {key:<13} {shown:<11} {p.describe():<30} {p.help}", 59))

    common("Every method takes the SGD recipe (default, valid values; a method's own defaults are below it):",
           OPTIMISER_PARAMS)
    common("The contrastive term (coun's, or any other method's with --cl) takes:", CONTRASTIVE_PARAMS)
    for name, cls in methods_.items():
        declared = cls.declared()
        typer.echo(f"{name:<{width}}{cls.summary}")
        typer.echo(wrap(f"{'':<{width}}" + ", ".join(f"{key}={declared[key].default}" for key in cls.params)
                        + (" (or the checkpoint's recipe)" if cls.from_scratch else "")))
        for key in cls.params:
            if key not in OPTIMISER_PARAMS and key not in CONTRASTIVE_PARAMS:
                typer.echo(wrap(f"{'':<{width}}{key}: {declared[key].describe()}; {declared[key].help}"))
        if not cls.from_scratch and (space := searched(cls)):
            ranges = ", ".join(f"{k} {s.describe()}" for k, s in space.items())
            typer.echo(wrap(f"{'':<{width}}tune searches: {ranges}"))
    refuse = [name for name, cls in methods_.items() if cls.always_cl or cls.from_scratch or cls.cl_refusal]
    typer.echo(f"Any method but {', '.join(refuse)} takes --cl (adds CoUn's contrastive term; --lambda, --tau; "
               "tune searches them too).")
