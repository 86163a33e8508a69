"""What every command shares: the app object, the common options, and the parsing of flags into the
engine's types. Command groups live beside this module and register themselves on `app`."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from functools import cache, partial
from typing import Any, NoReturn, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from coun_tui.engine import UserError


class _HelpIsAFlag:
    """--help takes no value: show it without one (typer would print `<bool>`)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class LabCommand(_HelpIsAFlag, TyperCommand):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.short_help and self.help:
            self.short_help = short_help(self.help)


SHORT_HELP_WIDTH = 76  # what `coun-lab --help` has room for beside the names at 100 columns


def short_help(text: str) -> str:
    """A command's line in `coun-lab --help`: its docstring's first sentence on one line, shortened
    (asides in parentheses, then what follows a semicolon, dropped) until it fits."""
    first = re.split(r"(?<!Avg)\.\s+(?=[A-Z`])", " ".join(text.split()), maxsplit=1)[0].rstrip(".")
    for shorter in (lambda t: re.sub(r"\s*\([^()]*\)$", "", t), lambda t: t.split("; ")[0],
                    lambda t: re.sub(r"\s*\([^()]*\)", "", t)):
        if len(first) <= SHORT_HELP_WIDTH:
            break
        first = shorter(first)
    return first


# The order `coun-lab --help` lists the commands in (a command not named here follows, in the order
# its module registered it).
COMMAND_ORDER = ("train", "unlearn", "runs", "eval", "methods", "tui", "serve", "compare", "sweep", "curve", "figure",
                 "tune", "oracle", "export", "bench")


class LabGroup(_HelpIsAFlag, TyperGroup):
    def list_commands(self, ctx):
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER)))


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
LOG = typer.Option([], "--log", help="also log the run to an experiment tracker, repeatable: tensorboard[:DIR] "
                   "(default DIR: the run's tensorboard/ folder) or mlflow[:URI] (default: $MLFLOW_TRACKING_URI, "
                   "else ./mlflow.db); needs the tensorboard or mlflow extra", metavar="TRACKER[:WHERE]")
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


def log_targets(values: list[str]) -> list[str]:
    """--log values as run.toml keeps them; a tracker whose library is missing is one warning line."""
    from coun_tui.engine.trackers import parse_target, usable_targets

    def warn(message: str) -> None:
        typer.secho(f"warning: {message}", fg="yellow", err=True)

    return usable_targets([parse_target(v) for v in values], warn)


# The arguments coun-lab was called with (main sets them), for lines that say how to run it again.
INVOCATION: list[str] = []


def fail(message: str) -> NoReturn:
    raise UserError(message)


def model_or_default(model: str | None) -> str:
    """--model, or the app's default model (saying so in one line, on stderr)."""
    if model:
        return model
    from coun_tui.engine.paths import DEFAULT_MODEL

    typer.echo(f"model: the default, {DEFAULT_MODEL} (--model FILE picks another)", err=True)
    return str(DEFAULT_MODEL)


def forget_spec(classes: str | None, fraction: float | None, indices: str | None, seed: int, class_index):
    from coun_tui.engine.forget import ForgetSpec, parse_classes

    return ForgetSpec(parse_classes(classes, class_index), fraction, seed, indices)


def class_index_for(model: str | None, dataset: str | None, data_root: str | None):
    """A function mapping a class token (id or name) to its id, for the model's dataset: the class
    names recorded in the checkpoint, or the dataset's (loaded only if needed)."""
    @cache
    def names() -> tuple[str | None, list[str]]:
        from coun_tui.engine import ckpt_meta

        meta: dict = {}
        if model:
            header = ckpt_meta.read_meta(model)  # the safetensors header: no torch
            if header is None:  # a .pt or a foreign safetensors: only a full load says
                from coun_tui.engine import checkpoint

                header = checkpoint.read_meta(model)
            meta = header
        name = dataset or meta.get("dataset")
        if meta.get("classes") and name == meta.get("dataset"):
            return name, meta["classes"]
        if not name:
            fail("forgetting a class needs to know the dataset; pass --dataset NAME")
        from coun_tui.engine import data

        return name, data.load(name, data_root, meta.get("subset"), meta.get("subset_seed") or 0).classes

    def index(token: str) -> int:
        from coun_tui.engine.forget import class_id

        name, classes = names()
        return class_id(token, classes, name or "the dataset")
    return index


def method_names(methods: str) -> list[str]:
    return [m.strip() for m in methods.split(",") if m.strip()]


def method_key_value(flag: str, item: str, methods: list[str]) -> tuple[str, str, str]:
    """'ft.lr=0.1' -> ("ft", "lr", "0.1"); 'epochs=5' -> ("*", "epochs", "5")."""
    key, sep, value = item.partition("=")
    if not sep:
        fail(f"{flag} {item!r}: expected METHOD.KEY=VALUE or KEY=VALUE")
    method, _, name = key.rpartition(".")
    if method and method.removesuffix("+cl") not in methods:
        fail(f"{flag} {item!r}: {method!r} is not one of this sweep's methods ({', '.join(methods)})")
    return method or "*", name.replace("-", "_"), value


def typed_value(flag: str, key: str, text: str):
    """A --set or --grid value as its hyperparameter's declared type, in its declared range."""
    from coun_tui.engine.methods import all_params

    if key not in all_params():
        fail(f"{flag} {key}: no method has a hyperparameter {key!r}; see `coun-lab methods`")
    param = all_params()[key][0]
    try:
        return param.parse(text)
    except ValueError as exc:
        fail(f"{flag} {key} {text.strip()!r}: {exc} ({param.help})")


# Hyperparameter flags, built from the methods' declarations -----------------------------------

def given_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameter flags given on the command line (unchecked: prepare checks them)."""
    return {key.removeprefix("hp_"): v for key, v in hparams.items() if v is not None}


def defaults_text(defaults: dict[str, Any]) -> str:
    """"0.05 (ga 0.001, rl 0.01)": the most common default and the methods that differ."""
    common, _ = Counter(map(repr, defaults.values())).most_common(1)[0]
    others = [f"{name} {value}" for name, value in defaults.items() if repr(value) != common]
    shown = next(v for v in defaults.values() if repr(v) == common)
    return f"{shown}" + (f" ({', '.join(others)})" if others else "")


def add_hparam_flags(command, only: tuple[str, ...] | None = None, method: str | None = None) -> None:
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
        default = "" if method else f"; default {defaults_text(defaults)}"
        help_ = f"{param.help}: {methods_with}{param.describe()}{default}"
        is_bool = param.kind is bool
        option = typer.Option(None, f"{flag(key)}/--no-{flag(key)[2:]}" if is_bool else flag(key), help=help_,
                              metavar="" if is_bool else param.kind.__name__.upper().replace("STR", "TEXT"),
                              rich_help_panel="Hyperparameters", show_default=False)
        params.append(inspect.Parameter(f"hp_{key}", inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[bool] if is_bool else Optional[str]))
    command.__signature__ = sig.replace(parameters=params)
