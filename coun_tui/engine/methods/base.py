"""What a method is: hyperparameters it declares, a loss on a batch, optional set-up and step hooks.

A new method is one module in this package (it is found by itself) with a class like:

    @register
    class MyMethod(Method):
        name = "mine"                      # what --method and the app call it
        summary = "one line for `coun-lab methods` and the app"
        params = {
            "epochs": 5, "lr": 0.02,       # a plain value: a new default for a common hyperparameter
            "beta": Param(0.5, "weight of the forget term", ge=0, le=1),  # a hyperparameter of its own
        }
        stream = "retain"                  # which samples a step trains on (see Method.stream)

        def loss(self, ctx, batch, logits):  # optional: the default is cross-entropy on batch.y
            return {"ce": ..., "forget": ...}

Every method takes the common hyperparameters (COMMON_PARAMS: the SGD recipe and CoUn's lambda and
tau, used by +CL). A hyperparameter is declared once, with its default, its type (the default's),
its valid range or choices and a one-line help; `coun-lab unlearn` gets a flag for it
(`beta` -> `--beta`), the app an input, `coun-lab methods` a line, and every value is checked
against the declaration where it enters (flags, the app, a checkpoint's recipe, `--set`), before
anything is written. `self.hp[key]` then holds a value of the declared type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from coun_tui.engine import UserError
from coun_tui.engine.model import ResNet18

if TYPE_CHECKING:
    from coun_tui.engine.data import DeviceData
    from coun_tui.engine.metrics import Autocast, FlopMeter

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: default (its type is the parameter's type), help, and valid values:
    bounds `ge` (>=), `gt` (>), `le` (<=), `lt` (<) for numbers, `choices` for text."""

    default: int | float | str | bool
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def kind(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        """What a valid value is, e.g. "a number > 0", "an integer >= 1", "a number in [0, 1)"."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices) if self.choices else "text"
        what = "an integer" if self.kind is int else "a number"
        low = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None)
        high = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None)
        if low and high:
            return f"{what} in {low}, {high}"
        if low:
            return f"{what} {'>=' if low[0] == '[' else '>'} {low[1:]}"
        if high:
            return f"{what} {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        return what

    def parse(self, value: Any) -> int | float | str | bool:
        """`value` (typed, or text from a flag, the app or --set) as the declared type, checked;
        raises ValueError("expected ...") otherwise."""
        wrong = ValueError(f"expected {self.describe()}")
        text = value.strip() if isinstance(value, str) else None
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in TRUE + FALSE:
                return text.lower() in TRUE
            raise wrong
        if self.kind is str:
            if text is None or (self.choices and text not in self.choices) or not text:
                raise wrong
            return text
        if isinstance(value, bool):
            raise wrong
        if self.kind is int:
            if text is not None and re.fullmatch(r"[+-]?[0-9]+", text):
                value = int(text)
            if not isinstance(value, int):
                raise wrong
            number: int | float = value
        else:
            if text is not None:
                try:
                    value = float(text)
                except ValueError:
                    raise wrong from None
            if not isinstance(value, (int, float)):
                raise wrong
            number = float(value)
            if not math.isfinite(number):
                raise wrong
        if ((self.ge is not None and number < self.ge) or (self.gt is not None and number <= self.gt)
                or (self.le is not None and number > self.le) or (self.lt is not None and number >= self.lt)):
            raise wrong
        return number


def _num(x: float) -> str:
    return f"{x:g}"


# Every method's optimiser: the CoUn paper's SGD (momentum 0.9, weight decay 5e-4, cosine decay).
OPTIMISER_PARAMS: dict[str, Param] = {
    "epochs": Param(10, "training epochs", ge=1),
    "lr": Param(0.01, "SGD learning rate at the start of the schedule", gt=0),
    "batch_size": Param(128, "samples per step (BatchNorm needs 2 or more)", ge=2),
    "momentum": Param(0.9, "SGD momentum", ge=0, lt=1),
    "weight_decay": Param(5e-4, "SGD weight decay", ge=0),
    "schedule": Param("cosine", "learning-rate schedule", choices=("cosine", "step", "constant")),
    "min_lr": Param(1e-4, "where the cosine schedule ends", ge=0),
}
# CoUn's contrastive term, which `--cl` adds to any method.
CONTRASTIVE_PARAMS: dict[str, Param] = {
    "lambda": Param(1.0, "weight of CoUn's contrastive term", ge=0),
    "tau": Param(0.1, "temperature of CoUn's contrastive term", gt=0),
}
COMMON_PARAMS: dict[str, Param] = {**OPTIMISER_PARAMS, **CONTRASTIVE_PARAMS}


@dataclass
class Batch:
    x: torch.Tensor  # augmented view 1 of the step's main batch
    y: torch.Tensor  # its labels (random wrong labels for relabelled forget samples)
    is_retain: torch.Tensor  # bool mask: which rows of x are retain samples
    forget_x: torch.Tensor | None = None  # a cycled forget batch, for methods that ask for one
    forget_y: torch.Tensor | None = None


@dataclass
class Context:
    """What a method may read or change during a run."""

    model: ResNet18
    data: DeviceData
    retain: torch.Tensor  # indices into the train split
    forget: torch.Tensor
    hparams: dict[str, Any]
    num_classes: int
    device: torch.device
    autocast: Autocast  # a zero-argument callable returning the autocast context
    flops: FlopMeter  # count extra passes (e.g. SalUn's mask) through it
    epoch: int = 0  # 0-based epoch being trained
    step: int = 0  # 0-based global step
    steps_per_epoch: int = 1
    optimizer: torch.optim.Optimizer | None = None
    state: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # the run's seed, for a method's own random streams


class Method:
    name: ClassVar[str]
    summary: ClassVar[str]
    # New defaults of common hyperparameters (plain values) and the method's own (Param).
    params: ClassVar[dict[str, Any]] = {}
    # Which samples a step trains on: "retain", "forget", "retain+forget" (a retain batch plus a
    # cycled forget batch) or "mixed" (retain and relabelled forget samples shuffled together).
    stream: ClassVar[str] = "retain"
    always_cl: ClassVar[bool] = False  # CoUn: the contrastive term is the method
    from_scratch: ClassVar[bool] = False  # Retrain: start from freshly initialised weights
    # Why `--cl` cannot apply (no training loop, or no retain data by design); None: it can.
    cl_refusal: ClassVar[str | None] = None

    def __init__(self, hparams: dict[str, Any]):
        self.hp = hparams

    @classmethod
    def declared(cls) -> dict[str, Param]:
        """Every hyperparameter the method takes, with this method's defaults."""
        out = dict(COMMON_PARAMS)
        for key, value in cls.params.items():
            if isinstance(value, Param):
                out[key] = value
            elif key in COMMON_PARAMS:
                out[key] = replace(COMMON_PARAMS[key], default=value)
            else:
                raise TypeError(f"method {cls.__name__}: declare its own hyperparameter {key!r} as "
                                f"Param(default, help, ...) (see coun_tui/engine/methods/base.py)")
        return out

    @classmethod
    def all_defaults(cls) -> dict[str, Any]:
        return {key: p.default for key, p in cls.declared().items()}

    def setup(self, ctx: Context) -> None:
        """Runs once before the first step (NoT flips conv1, SalUn builds its mask)."""

    def before_epoch(self, ctx: Context) -> None:
        """At the start of every epoch, before its first step (SCRUB's max-steps)."""

    def relabel(self, ctx: Context, forget_y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Labels for forget samples in a "mixed" stream: random wrong labels, drawn once."""
        shift = torch.randint(1, ctx.num_classes, forget_y.shape, generator=gen, device=gen.device)
        return (forget_y + shift.to(forget_y.device)) % ctx.num_classes

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss components for one step; `logits` are the model's outputs on batch.x. The default:
        cross-entropy on the batch's labels (retain samples, plus relabelled forget samples in a
        "mixed" stream)."""
        return {"ce": F.cross_entropy(logits, batch.y)}

    def extend_batch(self, ctx: Context, batch: Batch) -> Batch:
        """The step's batch with any rows the method trains on beside its samples, appended after
        them (UNSIR's noise images; is_retain False). The default adds none."""
        return batch

    def before_step(self, ctx: Context) -> None:
        """After backward, before the optimiser step."""

    def after_step(self, ctx: Context) -> None:
        """After the optimiser step."""


def flag(key: str) -> str:
    """The command-line flag of a hyperparameter: batch_size -> --batch-size."""
    return "--" + key.replace("_", "-")


def check_hparams(method: type[Method], values: dict[str, Any],
                  label: Callable[[str], str] = flag) -> dict[str, Any]:
    """`values` checked against `method`'s declarations and converted to their types; raises
    UserError (one line naming the value, what is valid and what it is for) otherwise."""
    declared = method.declared()
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise UserError(f"{method.name} has no hyperparameter {', '.join(unknown)}; "
                        f"it takes: {', '.join(sorted(declared))} (see `coun-lab methods`)")
    out = {}
    for key, value in values.items():
        try:
            out[key] = declared[key].parse(value)
        except ValueError as exc:
            shown = value.strip() if isinstance(value, str) else value
            raise UserError(f"{label(key)} {shown!r}: {exc} ({declared[key].help})") from None
    return out


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """CoUn's contrastive term: cross-view InfoNCE over cosine similarities / tau, both directions.

    s[n, j] = cos(z1_n, z2_j) / tau; positives on the diagonal; only the N cross-view pairs form
    each denominator (no same-view negatives), and labels are not used.
    """
    z1 = torch.nn.functional.normalize(z1.float(), dim=1)
    z2 = torch.nn.functional.normalize(z2.float(), dim=1)
    s = z1 @ z2.T / tau
    target = torch.arange(len(s), device=s.device)
    ce = torch.nn.functional.cross_entropy
    return ce(s, target) + ce(s.T, target)
