"""GA: gradient ascent on the forget set (-CE), small learning rate, few epochs."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import OPTIMISER_PARAMS, Batch, Context, Method, Search

if TYPE_CHECKING:
    import torch


@register
class GradientAscent(Method):
    name = "ga"
    summary = "gradient ascent on the forget set (maximise its cross-entropy)"
    # Ascent diverges fast: its lr is searched two decades below the others'.
    params = {"epochs": 3, "lr": replace(OPTIMISER_PARAMS["lr"], default=1e-3, search=Search(1e-5, 1e-2, log=True))}
    stream = "forget"

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        return {"forget": -F.cross_entropy(logits, batch.y)}
