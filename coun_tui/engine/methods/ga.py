"""GA: gradient ascent on the forget set (-CE), small learning rate, few epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method

if TYPE_CHECKING:
    import torch


@register
class GradientAscent(Method):
    name = "ga"
    summary = "gradient ascent on the forget set (maximise its cross-entropy)"
    params = {"epochs": 3, "lr": 1e-3}
    stream = "forget"

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        return {"forget": -F.cross_entropy(logits, batch.y)}
