"""FT: fine-tune on the retain set with cross-entropy (catastrophic forgetting of the rest)."""

import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class FineTune(Method):
    name = "ft"
    summary = "fine-tune on the retain set with cross-entropy"
    defaults = {"epochs": 10, "lr": 0.05}

    def loss(self, ctx, batch, logits):
        return {"ce": F.cross_entropy(logits, batch.y)}
