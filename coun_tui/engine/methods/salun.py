"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss.

The mask keeps the top `mask_ratio` fraction (one global ranking) of |d CE(forget) / d w| over
all weights. Unmasked weights never move: they are restored after every optimiser step, so
neither weight decay nor momentum can drift them (a known pitfall of masked-gradient versions).
"""

import torch
import torch.nn.functional as F

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class SalUn(Method):
    name = "salun"
    summary = "random labels on forget data, updating only the most forget-salient weights"
    defaults = {"epochs": 10, "lr": 0.01, "mask_ratio": 0.5}
    stream = "mixed"

    def setup(self, ctx):
        self.mask = saliency_mask(ctx, float(self.hp["mask_ratio"]))

    def loss(self, ctx, batch, logits):
        return {"ce": F.cross_entropy(logits, batch.y)}

    def before_step(self, ctx):
        self._before = [p.detach().clone() for p in ctx.model.parameters()]

    def after_step(self, ctx):
        with torch.no_grad():
            for p, old, keep in zip(ctx.model.parameters(), self._before, self.mask):
                p.copy_(torch.where(keep, p, old))


def saliency_mask(ctx, ratio: float, batch_size: int = 256) -> list[torch.Tensor]:
    """Boolean masks (one per parameter): True for the top `ratio` of |forget-loss gradient|."""
    model = ctx.model
    params = list(model.parameters())
    grads = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()  # the gradient of the trained model as it is, BatchNorm statistics frozen
    x_all, y_all = ctx.data.train_x[ctx.forget], ctx.data.train_y[ctx.forget]
    for i in range(0, len(ctx.forget), batch_size):
        x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
        model.zero_grad(set_to_none=True)
        with ctx.flops.measure(("salun-mask", tuple(x.shape))):
            # float32: a confident model's forget gradients underflow in bf16
            loss = F.cross_entropy(model(x), y, reduction="sum")
            loss.backward()
        for g, p in zip(grads, params):
            g += p.grad.detach().abs()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat([g.flatten() for g in grads])
    k = max(1, int(round(ratio * flat.numel())))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True  # exactly k, whatever the ties
    return [m.view_as(g) for m, g in zip(keep.split([g.numel() for g in grads]), grads)]
