"""NegGrad+: alpha * CE(retain batch) - (1 - alpha) * CE(forget batch), forget batches cycled."""

import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class NegGradPlus(Method):
    name = "neggrad+"
    summary = "descend on retain CE while ascending on forget CE, weighted by alpha"
    defaults = {"epochs": 10, "lr": 0.05, "alpha": 0.99}
    stream = "retain+forget"

    def loss(self, ctx, batch, logits):
        alpha = float(self.hp["alpha"])
        with ctx.autocast():
            forget_logits = ctx.model(batch.forget_x)
        return {"ce": alpha * F.cross_entropy(logits, batch.y),
                "forget": -(1 - alpha) * F.cross_entropy(forget_logits.float(), batch.forget_y)}
