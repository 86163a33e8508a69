"""`coun-lab`: the app with no arguments, and headless commands for everything it does."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer

from coun_tui.engine import UserError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="coun-lab: machine unlearning (CoUn and baselines) for ResNet-18, in the terminal.")

# Shared options ---------------------------------------------------------------------------------
DATASET = typer.Option(None, "--dataset", help="digits, fashion-mnist, mnist, cifar10, cifar100, svhn, imagefolder")
DATA_ROOT = typer.Option(None, "--data-root", help="folder holding the dataset's files")
FORGET_CLASS = typer.Option(None, "--forget-class", help="class ids or names to forget, e.g. 3 or 3,5 or Coat")
FORGET_FRACTION = typer.Option(None, "--forget-fraction", help="forget a random fraction, e.g. 0.1")
FORGET_INDICES = typer.Option(None, "--forget-indices", help=".npy, .txt or split.npz of train indices")
SEED = typer.Option(0, "--seed", help="seed of the forget set draw and of training")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda:N")
REFERENCE = typer.Option(None, "--reference", help="Retrain run directory or checkpoint, for the gaps")


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def forget_spec(classes: str | None, fraction: float | None, indices: str | None, seed: int, class_index):
    from coun_tui.engine.forget import ForgetSpec, parse_classes

    return ForgetSpec(parse_classes(classes, class_index), fraction, seed, indices)


def _class_index_for(model: str | None, dataset: str | None, data_root: str | None):
    """A function mapping a class token to its id, for the model's dataset (only loaded if needed)."""
    def index(token: str) -> int:
        from coun_tui.engine import checkpoint, data

        name = dataset or (checkpoint.read_meta(model).get("dataset") if model else None)
        if token.strip().isdigit() or not name:
            return int(token) if token.strip().isdigit() else fail(f"class {token!r} needs a known dataset")
        meta = checkpoint.read_meta(model) if model else {}
        ds = data.load(name, data_root, meta.get("subset"), meta.get("subset_seed") or 0)
        return ds.class_index(token)
    return index


def follow(events, title: str, quiet: bool = False):
    """Consume a run's events with a progress bar on a terminal; return the last event."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from coun_tui.engine.events import Cancelled, Done, EpochMetrics, Failed, Started, Step

    console = Console(stderr=True)
    last = None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                  disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task(title, total=None, info="")
        for event in events:
            last = event
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


def _finish(last) -> None:
    from coun_tui.engine.events import Cancelled, Failed

    if isinstance(last, Failed):
        fail(f"run failed: {last.reason}")
    if isinstance(last, Cancelled):
        fail(f"run cancelled at step {last.step}")


def _table(metrics: dict) -> str:
    lines = []
    for key in ("RA", "UA", "TA", "MIA"):
        value = metrics.get(key)
        gap = (metrics.get("gap") or {}).get(key)
        shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.2f}"
        lines.append(f"{key:>4}  {shown}" + (f"   gap {gap:5.2f}" if gap is not None else ""))
    if metrics.get("avg_gap") is not None:
        lines.append(f"Avg. Gap  {metrics['avg_gap']:.2f}")
    return "\n".join(lines)


# Commands -------------------------------------------------------------------------------------

@app.command()
def train(dataset: str = typer.Option(..., "--dataset", help="dataset to train on"),
          out: Path = typer.Option(..., "--out", help="checkpoint to write (.safetensors)"),
          data_root: Optional[str] = DATA_ROOT,
          subset: Optional[int] = typer.Option(None, "--subset", help="stratified subset of N train images"),
          epochs: Optional[int] = typer.Option(None, "--epochs"),
          lr: Optional[float] = typer.Option(None, "--lr"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size"),
          schedule: Optional[str] = typer.Option(None, "--schedule", help="cosine, step or constant"),
          seed: int = typer.Option(0, "--seed"),
          device: str = DEVICE,
          precision: str = typer.Option("auto", "--precision", help="auto, bf16 or fp32"),
          half: bool = typer.Option(False, "--half", help="store the weights in float16 (half the size)")):
    """Train an original ResNet-18 (the paper's SGD recipe scaled to the data)."""
    from coun_tui.engine.runner import RunSpec, prepare
    from coun_tui.engine.runs import train_checkpoint

    if out.suffix != ".safetensors":
        fail(f"--out {out} must end in .safetensors")
    overrides = {k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size, schedule=schedule).items()
                 if v is not None}
    prep = prepare(RunSpec(method="retrain", dataset=dataset, data_root=data_root, subset=subset,
                           hparams=overrides, seed=seed, device=device, precision=precision))
    last = follow(train_checkpoint(prep, out, dtype="float16" if half else "float32"), f"train {dataset}")
    _finish(last)
    typer.echo(f"saved {out}: test accuracy {last.metrics['TA']:.2f}%, train accuracy "
               f"{last.metrics['RA']:.2f}%, {last.seconds:.0f} s")


HPARAM_FLAGS = {
    "epochs": int, "lr": float, "batch_size": int, "momentum": float, "weight_decay": float,
    "schedule": str, "min_lr": float, "lambda": float, "tau": float, "alpha": float, "gamma": float,
    "l1_epochs": int, "mask_ratio": float,
}


@app.command()
def unlearn(model: str = typer.Option(..., "--model", help="checkpoint to unlearn"),
            method: str = typer.Option(..., "--method", help="see `coun-lab methods`"),
            out: Path = typer.Option(..., "--out", help="run directory to write"),
            cl: bool = typer.Option(False, "--cl", help="add CoUn's contrastive term to the method"),
            forget_class: Optional[str] = FORGET_CLASS, forget_fraction: Optional[float] = FORGET_FRACTION,
            forget_indices: Optional[str] = FORGET_INDICES, seed: int = SEED,
            dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
            reference: Optional[str] = REFERENCE, device: str = DEVICE,
            precision: str = typer.Option("auto", "--precision", help="auto, bf16 or fp32"),
            epochs: Optional[int] = typer.Option(None, "--epochs"),
            lr: Optional[float] = typer.Option(None, "--lr"),
            batch_size: Optional[int] = typer.Option(None, "--batch-size"),
            momentum: Optional[float] = typer.Option(None, "--momentum"),
            weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
            schedule: Optional[str] = typer.Option(None, "--schedule"),
            min_lr: Optional[float] = typer.Option(None, "--min-lr"),
            lambda_: Optional[float] = typer.Option(None, "--lambda", help="weight of the contrastive term"),
            tau: Optional[float] = typer.Option(None, "--tau", help="temperature of the contrastive term"),
            alpha: Optional[float] = typer.Option(None, "--alpha", help="NegGrad+ retain weight"),
            gamma: Optional[float] = typer.Option(None, "--gamma", help="l1-sparse penalty weight"),
            l1_epochs: Optional[int] = typer.Option(None, "--l1-epochs"),
            mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", help="SalUn mask fraction"),
            quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Make a model forget: run a method and keep the run in --out."""
    from coun_tui.engine.runner import RunSpec, prepare
    from coun_tui.engine.runs import record

    values = dict(epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                  schedule=schedule, min_lr=min_lr, tau=tau, alpha=alpha, gamma=gamma, l1_epochs=l1_epochs,
                  mask_ratio=mask_ratio)
    values["lambda"] = lambda_
    overrides = {k: v for k, v in values.items() if v is not None}
    spec = RunSpec(method=method, model=model, dataset=dataset, data_root=data_root,
                   forget=forget_spec(forget_class, forget_fraction, forget_indices, seed,
                                      _class_index_for(model, dataset, data_root)),
                   cl=cl, hparams=overrides, seed=seed, device=device, precision=precision, reference=reference)
    prep = prepare(spec)
    last = follow(record(prep, out), f"{method}{'+cl' if cl else ''}", quiet)
    _finish(last)
    typer.echo(_table(last.metrics))
    typer.echo(f"{last.flops / 1e15:.4f} PFLOPs, {last.seconds:.1f} s; saved run in {out}")


@app.command("eval")
def evaluate(model: str = typer.Option(..., "--model", help="checkpoint to evaluate"),
             forget_class: Optional[str] = FORGET_CLASS, forget_fraction: Optional[float] = FORGET_FRACTION,
             forget_indices: Optional[str] = FORGET_INDICES, seed: int = SEED,
             dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
             reference: Optional[str] = REFERENCE, device: str = DEVICE,
             precision: str = typer.Option("auto", "--precision", help="auto, bf16 or fp32"),
             as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """RA, UA, TA and MIA of a checkpoint on the full sets (and gaps to a Retrain reference)."""
    from coun_tui.engine.runner import RunSpec, evaluate_checkpoint

    spec = RunSpec(model=model, dataset=dataset, data_root=data_root, seed=seed, device=device,
                   precision=precision,
                   forget=forget_spec(forget_class, forget_fraction, forget_indices, seed,
                                      _class_index_for(model, dataset, data_root)),
                   reference=reference)
    result, split, meta = evaluate_checkpoint(spec)
    if as_json:
        typer.echo(json.dumps({**result, "n_retain": len(split.retain), "n_forget": len(split.forget),
                               "dataset": meta.get("dataset")}, indent=2))
    else:
        typer.echo(f"{model}: {meta.get('dataset')}, {len(split.retain)} retain / {len(split.forget)} forget")
        typer.echo(_table(result))


@app.command()
def methods():
    """List the unlearning methods with their defaults."""
    from coun_tui.engine.methods import all_methods

    for name, cls in all_methods().items():
        own = ", ".join(f"{k}={v}" for k, v in cls.all_defaults().items()
                        if k in cls.defaults or k in ("momentum", "weight_decay", "schedule"))
        typer.echo(f"{name:<10} {cls.summary}\n{'':<10} defaults: {own}")
    typer.echo("Any method but coun takes --cl (adds CoUn's contrastive term; --lambda, --tau).")


@app.command()
def tui(model: Optional[str] = typer.Option(None, "--model", help="checkpoint to open"),
        dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
        runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="where runs are kept")):
    """Open the lab (the same as `coun-lab` with no arguments)."""
    from coun_tui.tui.app import run_app

    run_app(model=model, dataset=dataset, data_root=data_root, runs_dir=runs_dir)


@app.command()
def compare(runs: list[Path] = typer.Argument(..., help="finished run directories"),
            fmt: str = typer.Option("md", "--format", help="md, csv or json"),
            sort: Optional[str] = typer.Option(None, "--sort", help="column to sort by, e.g. avg_gap"),
            reference: Optional[str] = typer.Option(
                None, "--reference", help="Retrain run: measure every run's gaps against it")):
    """Print a comparison table of finished runs (the paper's Table 1 layout)."""
    from coun_tui.engine.report import compare as compare_runs

    typer.echo(compare_runs(runs, fmt, sort, reference), nl=False)


@app.command()
def sweep(model: str = typer.Option(..., "--model"),
          methods: str = typer.Option(..., "--methods", help="comma-separated, e.g. ft,neggrad+,coun"),
          out: Path = typer.Option(..., "--out"),
          forget_class: list[str] = typer.Option([], "--forget-class", help="repeatable: one forget set each"),
          forget_fraction: list[float] = typer.Option([], "--forget-fraction", help="repeatable"),
          seeds: str = typer.Option("0", "--seeds", help="comma-separated, e.g. 0,1,2"),
          cl_too: bool = typer.Option(False, "--cl-too", help="also run each baseline +CL"),
          sets: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE or KEY=VALUE (all methods)"),
          backend: str = typer.Option("local", "--backend", help="local: one run at a time per device"),
          device: str = DEVICE, data_root: Optional[str] = DATA_ROOT, dataset: Optional[str] = DATASET):
    """Run every (method, forget set, seed) with its Retrain reference; write table.md/json."""
    from coun_tui.engine.events import Done, Failed
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.sweep import Sweep, execute

    if backend != "local":
        fail(f"unknown backend {backend!r}; only 'local' is available")
    index = _class_index_for(model, dataset, data_root)
    from coun_tui.engine.forget import parse_classes

    forgets = [ForgetSpec(classes=parse_classes(c, index)) for c in forget_class]
    forgets += [ForgetSpec(fraction=f) for f in forget_fraction]
    if not forgets:
        fail("a sweep needs at least one --forget-class or --forget-fraction")
    hparams: dict = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: expected METHOD.KEY=VALUE or KEY=VALUE")
        method, _, name = key.rpartition(".")
        if method and method.removesuffix("+cl") not in [m.strip() for m in methods.split(",")] + ["retrain"]:
            fail(f"--set {item!r}: {method!r} is not one of this sweep's methods ({methods})")
        hparams.setdefault(method or "*", {})[name.replace("-", "_")] = _parse_value(value)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    plan = Sweep(model, [m.strip() for m in methods.split(",") if m.strip()], forgets, seed_list, out,
                 cl_too, hparams, device, data_root, dataset)
    total = len(plan.runs())

    def started(i, n, run_dir):
        typer.echo(f"[{i + 1}/{n}] {run_dir.relative_to(out)}", err=True)

    for run_dir, event in execute(plan, on_start=started):
        if isinstance(event, Done):
            m = event.metrics
            typer.echo(f"    RA {m['RA']:.2f} UA {m['UA']:.2f} TA {m['TA']:.2f} MIA {m['MIA']:.2f}"
                       + (f" Avg.Gap {m['avg_gap']:.2f}" if m.get("avg_gap") is not None else "")
                       + f"  ({event.seconds:.0f} s)", err=True)
        elif isinstance(event, Failed):
            typer.echo(f"    failed: {event.reason}", err=True)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"{total} runs; tables in {out / 'table.md'} and {out / 'table.json'}", err=True)


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@app.command()
def bench(device: str = DEVICE,
          image_size: int = typer.Option(28, "--image-size"),
          batch_size: int = typer.Option(128, "--batch-size"),
          steps: int = typer.Option(5, "--steps")):
    """Training-step and inference throughput of the default path (bf16, channels_last) vs plainer ones."""
    from coun_tui.engine.bench import run_bench
    from coun_tui.engine.runner import resolve_device

    dev = resolve_device(device)
    typer.echo(f"device {dev}, ResNet-18 (CIFAR stem), batch {batch_size}, {image_size}x{image_size}x1")
    rows = run_bench(dev, image_size, 1, batch_size, steps)
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        typer.echo(f"{name:<{width}} {value:10.2f} {unit}")


def main(argv: list[str] | None = None) -> None:
    """Usage errors are click's (a usage line, exit 2); bad input is one `error:` line, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        app(args=argv or ["tui"], prog_name="coun-lab")
    except UserError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
