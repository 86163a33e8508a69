"""GA: gradient ascent on the forget set (-CE), small learning rate, few epochs."""

import torch
import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method


@register
class GradientAscent(Method):
    name = "ga"
    summary = "gradient ascent on the forget set (maximise its cross-entropy)"
    params = {"epochs": 3, "lr": 1e-3}
    stream = "forget"

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"forget": -F.cross_entropy(logits, batch.y)}
