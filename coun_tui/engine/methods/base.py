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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# The declarations live in params.py (no torch there); they are this module's too.
from coun_tui.engine.methods.params import (
    COMMON_PARAMS,
    CONTRASTIVE_PARAMS,
    OPTIMISER_PARAMS,
    Declared,
    Param,
    Search,
    check_hparams,
    flag,
)

if TYPE_CHECKING:  # torch loads when a run starts, not when the methods are listed or checked
    import torch

    from coun_tui.engine.data import DeviceData
    from coun_tui.engine.metrics import Autocast, FlopMeter
    from coun_tui.engine.model import ResNet18


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


class Method(Declared):
    """A method's training hooks; torch is imported in them, when a run calls them."""

    def __init__(self, hparams: dict[str, Any]):
        self.hp = hparams

    def setup(self, ctx: Context) -> None:
        """Runs once before the first step (NoT flips conv1, SalUn builds its mask)."""

    def before_epoch(self, ctx: Context) -> None:
        """At the start of every epoch, before its first step (SCRUB's max-steps)."""

    def relabel(self, ctx: Context, forget_y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Labels for forget samples in a "mixed" stream: random wrong labels, drawn once."""
        import torch

        shift = torch.randint(1, ctx.num_classes, forget_y.shape, generator=gen, device=gen.device)
        return (forget_y + shift.to(forget_y.device)) % ctx.num_classes

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss components for one step; `logits` are the model's outputs on batch.x. The default:
        cross-entropy on the batch's labels (retain samples, plus relabelled forget samples in a
        "mixed" stream)."""
        import torch.nn.functional as F

        return {"ce": F.cross_entropy(logits, batch.y)}

    def extend_batch(self, ctx: Context, batch: Batch) -> Batch:
        """The step's batch with any rows the method trains on beside its samples, appended after
        them (UNSIR's noise images; is_retain False). The default adds none."""
        return batch

    def before_step(self, ctx: Context) -> None:
        """After backward, before the optimiser step."""

    def after_step(self, ctx: Context) -> None:
        """After the optimiser step."""


def searched(method: type[Method], cl: bool = False) -> dict[str, Search]:
    """What `coun-lab tune` searches for a method (+CL when `cl`): each declared hyperparameter with
    a search range, CoUn's lambda and tau only where its contrastive term is on."""
    with_cl = cl or method.always_cl
    return {key: p.search for key, p in method.declared().items()
            if p.search is not None and (with_cl or key not in CONTRASTIVE_PARAMS)}


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """CoUn's contrastive term: cross-view InfoNCE over cosine similarities / tau, both directions.

    s[n, j] = cos(z1_n, z2_j) / tau; positives on the diagonal; only the N cross-view pairs form
    each denominator (no same-view negatives), and labels are not used.
    """
    import torch

    z1 = torch.nn.functional.normalize(z1.float(), dim=1)
    z2 = torch.nn.functional.normalize(z2.float(), dim=1)
    s = z1 @ z2.T / tau
    target = torch.arange(len(s), device=s.device)
    ce = torch.nn.functional.cross_entropy
    return ce(s, target) + ce(s.T, target)


__all__ = ["COMMON_PARAMS", "CONTRASTIVE_PARAMS", "OPTIMISER_PARAMS", "Batch", "Context", "Declared", "Method", "Param",
           "Search", "check_hparams", "flag", "info_nce", "searched"]
