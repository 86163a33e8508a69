"""NoT: negate the first conv layer's weights (BatchNorm untouched), then fine-tune on retain."""

import torch

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Context, Method


@register
class NegationOfTheFirstLayer(Method):
    name = "not"
    summary = "negate the first conv layer's weights, then fine-tune on the retain set"
    params = {"epochs": 10, "lr": 0.05}

    def setup(self, ctx: Context) -> None:
        with torch.no_grad():
            ctx.model.conv1.weight.neg_()
