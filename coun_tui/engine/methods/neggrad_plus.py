"""NegGrad+: alpha * CE(retain batch) - (1 - alpha) * CE(forget batch), forget batches cycled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method, Param, Search

if TYPE_CHECKING:
    import torch


@register
class NegGradPlus(Method):
    name = "neggrad+"
    summary = "descend on retain CE while ascending on forget CE, weighted by alpha"
    params = {"epochs": 10, "lr": 0.05,
              "alpha": Param(0.99, "weight of the retain loss; 1 - alpha weighs the forget loss", ge=0, le=1,
                             search=Search(0.95, 0.9999))}  # the paper's range (coun-method.md)
    stream = "retain+forget"

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        alpha = float(self.hp["alpha"])
        assert batch.forget_x is not None and batch.forget_y is not None  # stream "retain+forget" sets them
        with ctx.autocast():
            forget_logits = ctx.model(batch.forget_x)
        return {"ce": alpha * F.cross_entropy(logits, batch.y),
                "forget": -(1 - alpha) * F.cross_entropy(forget_logits.float(), batch.forget_y)}
