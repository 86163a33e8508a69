"""`coun-lab`: the app with no arguments, and headless commands for everything it does."""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections import Counter
from functools import cache, partial
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from typer import Abort
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.25 carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[assignment]  # the same class, older typer

from coun_tui.engine import UserError


class _HelpIsAFlag:
    """--help takes no value: show it without one (typer would print `<bool>`)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class LabCommand(_HelpIsAFlag, TyperCommand):
    pass


class LabGroup(_HelpIsAFlag, TyperGroup):
    pass


app = typer.Typer(cls=LabGroup, add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="coun-lab: machine unlearning (CoUn and baselines) for ResNet-18, in the terminal.")
command = partial(app.command, cls=LabCommand)

# Shared options ---------------------------------------------------------------------------------
DATASET = typer.Option(None, "--dataset", help="digits, fashion-mnist, mnist, cifar10, cifar100, svhn, imagefolder")
DATA_ROOT = typer.Option(None, "--data-root", help="folder holding the dataset's files")
FORGET_CLASS = typer.Option(None, "--forget-class", help="class ids or names to forget, e.g. 3 or 3,5 or Coat")
FORGET_FRACTION = typer.Option(None, "--forget-fraction", help="forget a random fraction, e.g. 0.1")
FORGET_INDICES = typer.Option(None, "--forget-indices", help=".npy, .txt or split.npz of train indices")
SEED = typer.Option(0, "--seed", help="seed of the forget set draw and of training")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda:N")
REFERENCE = typer.Option(None, "--reference", help="Retrain run directory or checkpoint, for the gaps")
MEAN = typer.Option(None, "--mean", help="a foreign checkpoint's input mean per channel, e.g. 0.4914,0.4822,0.4465")
STD = typer.Option(None, "--std", help="its input std per channel (both needed when the file records none)")
PRECISION = typer.Option("auto", "--precision", help="auto, bf16 or fp32")
BACKEND = typer.Option(None, "--backend", help="local (worker processes here; the default) or ray (Ray tasks; "
                       "the default when COUN_LAB_RAY_ADDRESS is set)", rich_help_panel="Where runs run")
ADDRESS = typer.Option(None, "--address", help="Ray head, e.g. 10.0.0.5:6379 (default: $COUN_LAB_RAY_ADDRESS, "
                       "else a local Ray is started)", rich_help_panel="Where runs run")
GPUS_PER_RUN = typer.Option(None, "--gpus-per-run", help="Ray: GPUs each run reserves; 0.25 puts four runs on "
                            "one GPU (default: none, the run trains on the CPU)", rich_help_panel="Where runs run")
CPUS_PER_RUN = typer.Option(None, "--cpus-per-run", help="CPU cores per run: torch's threads (Ray also "
                            "reserves them; default 1 there)", rich_help_panel="Where runs run")
STORAGE = typer.Option(None, "--storage", help="Ray: shared (every node sees the runs directory; the default) "
                       "or driver (no shared storage: results come back here)", rich_help_panel="Where runs run")


def bool_flag(name: str, help: str, *short: str):
    """A boolean flag: present means on. Shown without a value type, since none is taken."""
    return typer.Option(False, name, *short, help=help, metavar="")


def floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.4914,0.4822,0.4465")


def fail(message: str) -> NoReturn:
    raise UserError(message)


def forget_spec(classes: str | None, fraction: float | None, indices: str | None, seed: int, class_index):
    from coun_tui.engine.forget import ForgetSpec, parse_classes

    return ForgetSpec(parse_classes(classes, class_index), fraction, seed, indices)


def _class_index_for(model: str | None, dataset: str | None, data_root: str | None):
    """A function mapping a class token (id or name) to its id, for the model's dataset: the class
    names recorded in the checkpoint, or the dataset's (loaded only if needed)."""
    @cache
    def names() -> tuple[str | None, list[str]]:
        from coun_tui.engine import checkpoint, data

        meta = checkpoint.read_meta(model) if model else {}
        name = dataset or meta.get("dataset")
        if meta.get("classes") and name == meta.get("dataset"):
            return name, meta["classes"]
        if not name:
            fail("forgetting a class needs to know the dataset; pass --dataset NAME")
        return name, data.load(name, data_root, meta.get("subset"), meta.get("subset_seed") or 0).classes

    def index(token: str) -> int:
        from coun_tui.engine.forget import class_id

        name, classes = names()
        return class_id(token, classes, name or "the dataset")
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


# Commands -------------------------------------------------------------------------------------

@command()
def train(dataset: Optional[str] = typer.Option(None, "--dataset", help="dataset to train on"),
          out: Path = typer.Option(..., "--out", help="checkpoint to write (.safetensors)"),
          like: Optional[Path] = typer.Option(None, "--like", help="train a checkpoint's recipe again (its "
                                              "dataset, subset and hyperparameters) with --seed"),
          data_root: Optional[str] = DATA_ROOT,
          subset: Optional[int] = typer.Option(None, "--subset", help="stratified subset of N train images"),
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
                           subset_seed=recipe["subset_seed"], hparams={**recipe["hparams"], **_given(hparams)},
                           seed=seed, device=device, precision=precision))
    last = follow(train_checkpoint(prep, out, dtype="float16" if half else "float32"), f"train {dataset}")
    _finish(last)
    typer.echo(f"saved {out}: test accuracy {last.metrics['TA']:.2f}%, train accuracy "
               f"{last.metrics['RA']:.2f}%, {last.seconds:.0f} s")


@command()
def unlearn(model: str = typer.Option(..., "--model", help="checkpoint to unlearn"),
            method: str = typer.Option(..., "--method", help="see `coun-lab methods`"),
            out: str = typer.Option(..., "--out", help="run directory to write (a new one)"),
            cl: bool = bool_flag("--cl", "add CoUn's contrastive term to a baseline (not to retrain or coun)"),
            forget_class: Optional[str] = FORGET_CLASS, forget_fraction: Optional[float] = FORGET_FRACTION,
            forget_indices: Optional[str] = FORGET_INDICES, seed: int = SEED,
            dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
            reference: Optional[str] = REFERENCE, device: str = DEVICE,
            precision: str = PRECISION,
            mean: Optional[str] = MEAN, std: Optional[str] = STD,
            detach: bool = bool_flag("--detach", "start the job and return (follow it with `coun-lab runs watch OUT`)"),
            quiet: bool = bool_flag("--quiet", "no progress bar or per-epoch lines, only the final table", "-q"),
            backend: Optional[str] = BACKEND, address: Optional[str] = ADDRESS,
            gpus_per_run: Optional[float] = GPUS_PER_RUN, cpus_per_run: Optional[float] = CPUS_PER_RUN,
            storage: Optional[str] = STORAGE,
            **hparams: Any):
    """Make a model forget: run a method as a job that keeps the run in --out (followed here; Ctrl-C
    cancels it). Every hyperparameter of every method has a flag; `coun-lab methods` lists each
    method's defaults."""
    from coun_tui.engine import backends
    from coun_tui.engine.records import method_label
    from coun_tui.engine.runner import RunSpec

    spec = RunSpec(method=method, model=model, dataset=dataset, data_root=data_root,
                   forget=forget_spec(forget_class, forget_fraction, forget_indices, seed,
                                      _class_index_for(model, dataset, data_root)),
                   cl=cl, hparams=_given(hparams), seed=seed, device=device, precision=precision,
                   reference=reference, mean=floats(mean, "--mean"), std=floats(std, "--std"))
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
    _verdict(run_dir, jobs.wait(run_dir, 60))  # its last event is written just before its verdict


def _verdict(run_dir: Path, state) -> None:
    """Print a finished job's metrics, or fail with its state in one line."""
    if state.state == "done":
        m = json.loads((run_dir / "metrics.json").read_text())
        typer.echo(_table(m))
        paper = f" ({m['pflops_paper']:.4f} by the paper's count)" if m.get("pflops_paper") else ""
        typer.echo(f"{m['pflops']:.4f} PFLOPs{paper}, {m['seconds']:.1f} s; saved run in {run_dir}")
        return
    if state.state == "failed":
        fail(f"run failed: {state.detail}")
    fail(f"run {state.describe()}: {run_dir}")


@command("runs")
def runs_cmd(what: Optional[list[str]] = typer.Argument(
        None, metavar="[DIR] | watch RUN | cancel RUN | limit DEVICE [N]",
        help="list the runs under DIR (default: the app's runs directory); follow or cancel one; "
             "show or set how many jobs may run at once on a device"),
        as_json: bool = bool_flag("--json", "print the list as JSON")):
    """Jobs: list runs with their state, follow one, cancel one, or set a device's limit."""
    from coun_tui.engine import devqueue, jobs
    from coun_tui.engine.paths import default_runs_dir
    from coun_tui.engine.rundir import read_state

    what = list(what or [])
    action = what[0] if what and what[0] in ("watch", "cancel", "limit") else "list"
    args = what[1:] if action != "list" else what
    if action == "limit":
        if not args or len(args) > 2:
            fail("usage: coun-lab runs limit DEVICE [N], e.g. coun-lab runs limit cuda:0 4")
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
        if not (run_dir / "run.toml").is_file():
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
    if not root.exists():
        fail(f"{root} does not exist; give a runs directory, a sweep folder or a run")
    rows = [_run_row(run, read_state(run)) for run in jobs.find_runs(root)]
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


def _run_row(run: Path, state) -> dict:
    import time

    from coun_tui.engine.jobs import read_spec_dict

    spec = read_spec_dict(run)
    method = str(spec.get("method", "?")) + ("+cl" if spec.get("cl") and spec.get("method") != "coun" else "")
    f = spec.get("forget") or {}
    forget = ("class " + ",".join(map(str, f["classes"])) if f.get("classes") else
              f"{float(f['fraction']):.0%} s{f.get('seed', 0)}" if f.get("fraction") is not None else "-")
    progress = f"{state.step}/{state.total}" if state.total else ("-" if state.state != "done" else "done")
    age = time.time() - (state.updated or run.stat().st_mtime)
    shown_age = (f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m" if age < 7200 else
                 f"{age / 3600:.0f}h" if age < 172800 else f"{age / 86400:.0f}d")
    return {"run": str(run), "state": state.state, "detail": state.detail, "method": method, "forget": forget,
            "progress": progress, "step": state.step, "total": state.total, "age": shown_age}


# Hyperparameter flags, built from the methods' declarations -----------------------------------

def _given(hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameter flags given on the command line (unchecked: prepare checks them)."""
    return {key.removeprefix("hp_"): v for key, v in hparams.items() if v is not None}


def _defaults_text(defaults: dict[str, Any]) -> str:
    """"0.05 (ga 0.001, rl 0.01)": the most common default and the methods that differ."""
    common, _ = Counter(map(repr, defaults.values())).most_common(1)[0]
    others = [f"{name} {value}" for name, value in defaults.items() if repr(value) != common]
    shown = next(v for v in defaults.values() if repr(v) == common)
    return f"{shown}" + (f" ({', '.join(others)})" if others else "")


def _add_hparam_flags(command, only: tuple[str, ...] | None = None, method: str | None = None) -> None:
    """Give `command` one option per declared hyperparameter (all methods', or `method`'s keys in
    `only`). Done when the command is called, so the methods (and torch) load only for it."""
    from coun_tui.engine.methods import all_methods, all_params, flag, get

    if getattr(command, "flags_declared", False):
        return
    command.flags_declared = True
    table = all_params()
    if method is not None:
        table = {k: (p, {method: get(method).all_defaults()[k]}) for k, (p, _) in table.items() if k in (only or ())}
    sig = inspect.signature(command)
    params = list(sig.parameters.values())
    for key, (param, defaults) in table.items():
        methods_with = "" if len(defaults) == len(all_methods()) or method else f"{', '.join(defaults)} only; "
        default = "" if method else f"; default {_defaults_text(defaults)}"
        help_ = f"{param.help}: {methods_with}{param.describe()}{default}"
        is_bool = param.kind is bool
        option = typer.Option(None, f"{flag(key)}/--no-{flag(key)[2:]}" if is_bool else flag(key), help=help_,
                              metavar="" if is_bool else param.kind.__name__.upper().replace("STR", "TEXT"),
                              rich_help_panel="Hyperparameters", show_default=False)
        params.append(inspect.Parameter(f"hp_{key}", inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[bool] if is_bool else Optional[str]))
    command.__signature__ = sig.replace(parameters=params)


@command("eval")
def evaluate(model: str = typer.Option(..., "--model", help="checkpoint to evaluate"),
             forget_class: Optional[str] = FORGET_CLASS, forget_fraction: Optional[float] = FORGET_FRACTION,
             forget_indices: Optional[str] = FORGET_INDICES, seed: int = SEED,
             dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
             reference: Optional[str] = REFERENCE, device: str = DEVICE,
             precision: str = PRECISION,
             mean: Optional[str] = MEAN, std: Optional[str] = STD,
             as_json: bool = bool_flag("--json", "print JSON")):
    """RA, UA, TA and MIA of a checkpoint on the full sets (and gaps to a Retrain reference)."""
    from coun_tui.engine.runner import RunSpec, evaluate_checkpoint

    spec = RunSpec(model=model, dataset=dataset, data_root=data_root, seed=seed, device=device,
                   precision=precision,
                   forget=forget_spec(forget_class, forget_fraction, forget_indices, seed,
                                      _class_index_for(model, dataset, data_root)),
                   reference=reference, mean=floats(mean, "--mean"), std=floats(std, "--std"))
    result, split, meta = evaluate_checkpoint(spec)
    if as_json:
        typer.echo(json.dumps({**result, "n_retain": len(split.retain), "n_forget": len(split.forget),
                               "dataset": meta.get("dataset")}, indent=2))
    else:
        typer.echo(f"{model}: {meta.get('dataset')}, {len(split.retain)} retain / {len(split.forget)} forget")
        typer.echo(_table(result))


@command()
def methods():
    """List the unlearning methods with their hyperparameters: defaults and valid values."""
    from coun_tui.engine.methods import COMMON_PARAMS, all_methods

    typer.echo("Every method takes (default, valid values):")
    for key, p in COMMON_PARAMS.items():
        typer.echo(f"  {key:<13} {p.default!s:<9} {p.describe():<30} {p.help}")
    for name, cls in all_methods().items():
        declared = cls.declared()
        typer.echo(f"{name:<10} {cls.summary}")
        typer.echo(f"{'':<10} " + ", ".join(f"{key}={declared[key].default}" for key in cls.params)
                   + (" (or the checkpoint's recipe)" if cls.from_scratch else ""))
        for key in cls.params:
            if key not in COMMON_PARAMS:
                typer.echo(f"{'':<10} {key}: {declared[key].describe()}; {declared[key].help}")
    refuse = [name for name, cls in all_methods().items() if cls.always_cl or cls.from_scratch or cls.cl_refusal]
    typer.echo(f"Any method but {', '.join(refuse)} takes --cl (adds CoUn's contrastive term; --lambda, --tau).")


@command()
def tui(model: Optional[str] = typer.Option(None, "--model", help="checkpoint to open"),
        dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
        runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="where runs are kept"),
        backend: Optional[str] = BACKEND, address: Optional[str] = ADDRESS,
        gpus_per_run: Optional[float] = GPUS_PER_RUN, cpus_per_run: Optional[float] = CPUS_PER_RUN,
        storage: Optional[str] = STORAGE):
    """Open the lab (the same as `coun-lab` with no arguments)."""
    from coun_tui.engine import backends

    runner = backends.make(backend, address, gpus_per_run, cpus_per_run, storage)
    from coun_tui.tui.app import run_app

    backends.use(runner)
    try:
        run_app(model=model, dataset=dataset, data_root=data_root, runs_dir=runs_dir)
    finally:
        runner.close()


@command()
def serve(model: Optional[str] = typer.Option(None, "--model", help="checkpoint to open"),
          dataset: Optional[str] = DATASET, data_root: Optional[str] = DATA_ROOT,
          runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="where runs are kept"),
          host: str = typer.Option("127.0.0.1", "--host",
                                   help="address to listen on; the default keeps it to this machine "
                                        "(reach it from yours through an SSH tunnel)"),
          port: int = typer.Option(8000, "--port", help="port to listen on"),
          public_url: Optional[str] = typer.Option(
              None, "--public-url", help="the address your browser uses, when it differs (another tunnel port)")):
    """Open the lab in a web browser: the same app, served by textual-serve (one per browser tab)."""
    import shlex

    from textual_serve.server import Server

    args = [sys.executable, "-m", "coun_tui", "tui"]
    for flag_name, value in (("--model", model), ("--dataset", dataset), ("--data-root", data_root),
                             ("--runs-dir", runs_dir)):
        if value:
            args += [flag_name, str(Path(value).resolve()) if flag_name != "--dataset" else value]
    url = public_url or f"http://{host}:{port}"
    typer.echo(f"coun-lab in a browser: open {url}\n"
               f"from your own machine: ssh -L {port}:localhost:{port} THIS_HOST, then open "
               f"http://localhost:{port} (Ctrl+C here stops it)", err=True)
    Server(shlex.join(args), host=host, port=port, title="coun-lab", public_url=public_url).serve()


@command()
def compare(runs: list[Path] = typer.Argument(..., help="finished run directories"),
            fmt: str = typer.Option("md", "--format", help="md, csv or json"),
            sort: Optional[str] = typer.Option(None, "--sort", help="column to sort by, e.g. avg_gap"),
            reference: Optional[str] = typer.Option(
                None, "--reference", help="Retrain run: measure every run's gaps against it"),
            per_method: bool = typer.Option(
                False, "--per-method", help="one row per method and forget set: mean ± std over its runs "
                "(seeds), with the paper's Avg. Gap (gap of means)")):
    """Print a comparison table of finished runs (the paper's Table 1 layout)."""
    from coun_tui.engine.report import compare as compare_runs

    typer.echo(compare_runs(runs, fmt, sort, reference, per_method), nl=False)


@command()
def sweep(model: Optional[str] = typer.Option(None, "--model", help="checkpoint every run unlearns"),
          models: Optional[str] = typer.Option(None, "--models", help="several original models, comma-separated "
                                               "(e.g. one recipe trained with seeds 0,1,2): every seed on each"),
          methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated, e.g. ft,neggrad+,coun"),
          out: Optional[Path] = typer.Option(None, "--out", help="folder of the sweep's runs and tables"),
          spec: Optional[Path] = typer.Option(None, "--spec", help="an experiment file (experiments/*.toml) "
                                              "holding these options; options given here override it"),
          forget_class: list[str] = typer.Option([], "--forget-class", help="repeatable: one forget set each"),
          forget_fraction: list[float] = typer.Option([], "--forget-fraction", help="repeatable"),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated, e.g. 0,1,2 (default 0)"),
          cl_too: bool = bool_flag("--cl-too", "also run each baseline +CL"),
          sets: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE or KEY=VALUE (all methods)"),
          grids: list[str] = typer.Option([], "--grid", help="METHOD.KEY=V1,V2 or KEY=V1,V2: one run per value"),
          jobs: int = typer.Option(1, "--jobs", help="run up to N jobs at once (within each device's limit, "
                                   "see `coun-lab runs limit`; Ray runs as many as its resources allow)"),
          backend: Optional[str] = BACKEND, address: Optional[str] = ADDRESS,
          gpus_per_run: Optional[float] = GPUS_PER_RUN, cpus_per_run: Optional[float] = CPUS_PER_RUN,
          storage: Optional[str] = STORAGE,
          device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda:N"),
          dry_run: bool = bool_flag("--dry-run", "list the runs and which are finished; run none"),
          data_root: Optional[str] = DATA_ROOT, dataset: Optional[str] = DATASET):
    """Run every (method, forget set, seed, grid point) with its Retrain reference; write table.md/json."""
    from coun_tui.engine import backends
    from coun_tui.engine.events import Done, Failed
    from coun_tui.engine.forget import ForgetSpec, parse_classes
    from coun_tui.engine.sweep import Sweep, execute

    if spec is not None:
        plan = Sweep.from_file(spec, model=model, out=out, device=device, data_root=data_root, dataset=dataset)
        if methods:
            plan.methods = _names(methods)
        plan.cl_too = plan.cl_too or cl_too
    else:
        model = model or (_names(models)[0] if models and _names(models) else None)
        missing = [flag for flag, v in (("--model", model), ("--methods", methods), ("--out", out)) if not v]
        if missing:
            fail(f"missing {', '.join(missing)}: give them, or an experiment file with --spec FILE")
        assert model and methods and out  # checked just above
        plan = Sweep(model, _names(methods), [], [0], out, cl_too, device=device or "auto",
                     data_root=data_root, dataset=dataset)
    if models:
        plan.models = _names(models)
        plan.model = plan.models[0]
    names = plan.methods + ["retrain"]
    index = _class_index_for(plan.model, plan.dataset, plan.data_root)
    forgets = [ForgetSpec(classes=parse_classes(c, index)) for c in forget_class]
    forgets += [ForgetSpec(fraction=f) for f in forget_fraction]
    plan.forgets = forgets or plan.forgets
    if not plan.forgets:
        fail("a sweep needs at least one --forget-class or --forget-fraction")
    for item in sets:
        method, name, value = _method_key_value("--set", item, names)
        plan.hparams.setdefault(method, {})[name] = _typed("--set", name, value)
    for item in grids:
        method, name, values = _method_key_value("--grid", item, names)
        plan.grid.setdefault(method, {})[name] = [_typed("--grid", name, v) for v in values.split(",") if v.strip()]
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
        for run_dir, event in execute(plan, on_start=started, jobs=jobs, backend=runner):
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


@command()
def curve(spec: Path = typer.Argument(..., help="the experiment file of a sweep with a grid axis"),
          axis: str = typer.Option("epochs", "--axis", help="the grid axis to plot along"),
          png: Optional[Path] = typer.Option(None, "--png", help="also write the plot as a PNG (needs "
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


def _names(methods: str) -> list[str]:
    return [m.strip() for m in methods.split(",") if m.strip()]


def _method_key_value(flag: str, item: str, methods: list[str]) -> tuple[str, str, str]:
    """'ft.lr=0.1' -> ("ft", "lr", "0.1"); 'epochs=5' -> ("*", "epochs", "5")."""
    key, sep, value = item.partition("=")
    if not sep:
        fail(f"{flag} {item!r}: expected METHOD.KEY=VALUE or KEY=VALUE")
    method, _, name = key.rpartition(".")
    if method and method.removesuffix("+cl") not in methods:
        fail(f"{flag} {item!r}: {method!r} is not one of this sweep's methods ({', '.join(methods)})")
    return method or "*", name.replace("-", "_"), value


def _typed(flag: str, key: str, text: str):
    """A --set or --grid value as its hyperparameter's declared type, in its declared range."""
    from coun_tui.engine.methods import all_params

    if key not in all_params():
        fail(f"{flag} {key}: no method has a hyperparameter {key!r}; see `coun-lab methods`")
    param = all_params()[key][0]
    try:
        return param.parse(text)
    except ValueError as exc:
        fail(f"{flag} {key} {text.strip()!r}: {exc} ({param.help})")


@command()
def bench(device: str = DEVICE,
          image_size: int = typer.Option(28, "--image-size", help="side of the square test images"),
          batch_size: int = typer.Option(128, "--batch-size", help="images per step"),
          steps: int = typer.Option(5, "--steps", help="timed steps per variant"),
          job_costs: bool = bool_flag("--jobs", "also measure what running as a job costs: worker vs in-process "
                                      "img/s, launch to first step, following CPU (three short digits runs)"),
          metrics: bool = bool_flag("--metrics", "instead: what the metrics beyond RA/UA/TA/MIA add to a digits "
                                    "run and to a live refresh"),
          ray_costs: bool = bool_flag("--ray", "also measure Ray's overhead per run against the local backend, "
                                      "and 4 runs sharing a GPU vs one after another (needs Ray; a local one, "
                                      "or --address)"),
          address: Optional[str] = ADDRESS):
    """Training-step and inference throughput of the default path (bf16, channels_last) vs plainer ones."""
    from coun_tui.engine.bench import run_bench, run_metrics_bench
    from coun_tui.engine.paths import DEFAULT_MODEL
    from coun_tui.engine.runner import resolve_device

    dev = resolve_device(device)
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


# Commands whose hyperparameter flags come from the methods' declarations (until then, they have none).
for _command in (train, unlearn):
    _command.__signature__ = inspect.signature(_command).replace(parameters=[  # type: ignore[union-attr]
        p for p in inspect.signature(_command).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD])
DECLARED_FLAGS = {"unlearn": lambda: _add_hparam_flags(unlearn),
                "train": lambda: _add_hparam_flags(train, ("epochs", "lr", "batch_size", "momentum",
                                                          "weight_decay", "schedule", "min_lr"), "retrain")}


def main(argv: list[str] | None = None) -> None:
    """Every mistake is one `error:` line with exit 2: bad input, and usage errors too."""
    argv = list(sys.argv[1:] if argv is None else argv) or ["tui"]
    try:
        if argv[0] in DECLARED_FLAGS:
            DECLARED_FLAGS[argv[0]]()
        code = typer.main.get_command(app).main(args=argv, prog_name="coun-lab", standalone_mode=False)
    except UserError as exc:
        _error(str(exc))
    except ClickException as exc:
        where = getattr(exc, "ctx", None)
        hint = f" (see `{where.command_path} --help`)" if where is not None else " (see `coun-lab --help`)"
        _error(exc.format_message() + hint)
    except (KeyboardInterrupt, Abort):
        typer.secho("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    typer.secho(f"error: {' '.join(message.split())}", fg="red", err=True)
    sys.exit(2)
