"""What a method is: a loss on a batch, optional set-up before training and hooks around a step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

# Defaults every method starts from (the CoUn paper's optimiser: SGD, momentum 0.9, wd 5e-4).
COMMON_DEFAULTS: dict[str, Any] = {
    "epochs": 10, "lr": 0.01, "batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4,
    "schedule": "cosine", "min_lr": 1e-4, "lambda": 1.0, "tau": 0.1,
}


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

    model: torch.nn.Module
    data: Any  # data.DeviceData
    retain: torch.Tensor  # indices into the train split
    forget: torch.Tensor
    hparams: dict[str, Any]
    num_classes: int
    device: torch.device
    autocast: Any  # a zero-argument callable returning the autocast context
    flops: Any  # metrics.FlopMeter: count extra passes (e.g. SalUn's mask) through it
    epoch: int = 0  # 0-based epoch being trained
    step: int = 0  # 0-based global step
    steps_per_epoch: int = 1
    optimizer: torch.optim.Optimizer | None = None
    state: dict[str, Any] = field(default_factory=dict)


class Method:
    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    # Which samples a step trains on: "retain", "forget", "retain+forget" (a retain batch plus a
    # cycled forget batch) or "mixed" (retain and relabelled forget samples shuffled together).
    stream: ClassVar[str] = "retain"
    always_cl: ClassVar[bool] = False  # CoUn: the contrastive term is the method
    from_scratch: ClassVar[bool] = False  # Retrain: start from freshly initialised weights

    def __init__(self, hparams: dict[str, Any]):
        self.hp = hparams

    @classmethod
    def all_defaults(cls) -> dict[str, Any]:
        return {**COMMON_DEFAULTS, **cls.defaults}

    def setup(self, ctx: Context) -> None:
        """Runs once before the first step (NoT flips conv1, SalUn builds its mask)."""

    def relabel(self, ctx: Context, forget_y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Labels for forget samples in a "mixed" stream: random wrong labels, drawn once."""
        shift = torch.randint(1, ctx.num_classes, forget_y.shape, generator=gen, device=gen.device)
        return (forget_y + shift.to(forget_y.device)) % ctx.num_classes

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss components for one step; `logits` are the model's outputs on batch.x."""
        raise NotImplementedError

    def before_step(self, ctx: Context) -> None:
        """After backward, before the optimiser step."""

    def after_step(self, ctx: Context) -> None:
        """After the optimiser step."""


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
