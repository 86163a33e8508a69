"""NoT: negate the first conv layer's weights (BatchNorm untouched), then fine-tune on retain."""

import torch
import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class NegationOfTheFirstLayer(Method):
    name = "not"
    summary = "negate the first conv layer's weights, then fine-tune on the retain set"
    defaults = {"epochs": 10, "lr": 0.05}

    def setup(self, ctx):
        with torch.no_grad():
            ctx.model.conv1.weight.neg_()

    def loss(self, ctx, batch, logits):
        return {"ce": F.cross_entropy(logits, batch.y)}
