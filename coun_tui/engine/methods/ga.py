"""GA: gradient ascent on the forget set (-CE), small learning rate, few epochs."""

import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class GradientAscent(Method):
    name = "ga"
    summary = "gradient ascent on the forget set (maximise its cross-entropy)"
    defaults = {"epochs": 3, "lr": 1e-3}
    stream = "forget"

    def loss(self, ctx, batch, logits):
        return {"forget": -F.cross_entropy(logits, batch.y)}
