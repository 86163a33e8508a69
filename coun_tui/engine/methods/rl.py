"""RL: random labels. Train on the retain set plus the forget set with random wrong labels."""

import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class RandomLabel(Method):
    name = "rl"
    summary = "train on retain data plus forget data relabelled at random (wrong labels)"
    defaults = {"epochs": 10, "lr": 0.01}
    stream = "mixed"

    def loss(self, ctx, batch, logits):
        return {"ce": F.cross_entropy(logits, batch.y)}
