"""NoT: negate the first conv layer's weights (BatchNorm untouched), then fine-tune on retain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Context, Method

if TYPE_CHECKING:
    pass


@register
class NegationOfTheFirstLayer(Method):
    name = "not"
    summary = "negate the first conv layer's weights, then fine-tune on the retain set"
    params = {"epochs": 10, "lr": 0.05}

    def setup(self, ctx: Context) -> None:
        import torch

        with torch.no_grad():
            ctx.model.conv1.weight.neg_()
