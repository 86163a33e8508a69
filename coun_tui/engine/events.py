"""Typed events that a run yields. The TUI, the CLI progress bar and the sweep runner consume them."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Started:
    method: str
    epochs: int
    steps_per_epoch: int
    n_retain: int
    n_forget: int
    device: str
    hparams: dict[str, Any]
    kind: str = "started"

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass
class Step:
    step: int  # 1-based global step
    epoch: int  # 1-based epoch
    losses: dict[str, float]  # by component: "ce", "cl", "forget", "l1", ... and "total"
    lr: float
    images: int  # training images seen so far (both views of CoUn count once)
    flops: float  # FLOPs spent so far (measured on real steps)
    seconds: float  # wall time since start
    kind: str = "step"


@dataclass
class EpochMetrics:
    epoch: int
    metrics: dict[str, float]  # RA, UA, TA, MIA (percent) on the fixed probe subsets
    gap: dict[str, float] | None = None  # |metric - Retrain's| per metric, plus "avg"
    # On the same subsets: the MIA variants, the k-NN probe on D_u and, against a Retrain that
    # kept its reference.npz, agreement and CKA (keys as in metrics.json)
    extra: dict[str, float] | None = None
    kind: str = "epoch"


@dataclass
class Embedding:
    epoch: int
    xy: list[list[float]]  # 2-D PCA of penultimate features of the probe points
    labels: list[int]
    forget: list[bool]  # True for forget-set points
    features: Any = field(default=None, repr=False)  # raw features (numpy), kept out of JSON
    kind: str = "embedding"


@dataclass
class Done:
    metrics: dict[str, Any]  # final metrics on the full sets
    seconds: float
    flops: float
    paper_flops: float | None = None  # the same training counted by the paper's convention
    reference: Any = field(default=None, repr=False)  # a Retrain's reference.View, kept out of JSON
    kind: str = "done"


@dataclass
class Failed:
    reason: str
    kind: str = "failed"


@dataclass
class Cancelled:
    step: int
    kind: str = "cancelled"


Event = Started | Step | EpochMetrics | Embedding | Done | Failed | Cancelled


RAW_FIELDS = ("features", "reference")  # arrays that travel with an event but are not logged


def to_json(event: Event) -> str:
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in RAW_FIELDS}
    return json.dumps(data, separators=(",", ":"))


def eta_seconds(last: Step | None, total_steps: int | None) -> float | None:
    """Seconds left, from the run's own clock: its mean time per step so far (evaluations and set-up
    included) times the steps left. It depends on the events alone, never on when a follower
    started reading them, so every follower (the app, `unlearn`, `runs watch`) shows the same ETA."""
    if last is None or not total_steps or last.step <= 0 or last.seconds <= 0:
        return None
    return last.seconds / last.step * max(total_steps - last.step, 0)


class Progress:
    """How far a run is, fed its events in order (the CLI's progress bar keeps one)."""

    def __init__(self) -> None:
        self.total_steps: int | None = None
        self.last_step: Step | None = None
        self.over = False

    def update(self, event: Event) -> None:
        if isinstance(event, Started):
            self.total_steps = event.total_steps
        elif isinstance(event, Step):
            self.last_step = event
        elif isinstance(event, (Done, Failed, Cancelled)):
            self.over = True

    @property
    def eta_seconds(self) -> float | None:
        return None if self.over else eta_seconds(self.last_step, self.total_steps)


def format_duration(seconds: float | None) -> str:
    """1:05, 1:02:03; --:-- when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"
