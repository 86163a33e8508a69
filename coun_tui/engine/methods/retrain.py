"""Retrain: the gold standard. The original model's recipe, from scratch, on the retain set only."""

from __future__ import annotations

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class Retrain(Method):
    name = "retrain"
    summary = "train from scratch on the retain set with the original recipe (the reference)"
    # Overridden by the recipe stored in the original checkpoint, when it has one.
    params = {"epochs": 30, "lr": 0.05, "batch_size": 128}
    from_scratch = True
