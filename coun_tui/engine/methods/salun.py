"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss.

The mask keeps the top `mask_ratio` fraction (one global ranking) of a saliency statistic over all
weights. `mask=signed-sum` (default) is the OPTML-Group reference's (Unlearn-Saliency,
generate_mask.py): |sum over forget batches of the gradient of the batch-mean forget CE|, on
augmented forget images (its forget loader uses the training transform), BatchNorm in eval mode.
`mask=abs-sum` is the lab's earlier statistic: sum of |per-batch gradient| of the summed CE on
clean images. Labels are RL's (`labels`, see rl.py).

Unmasked weights never move: they are restored bit-exactly after every optimiser step, so neither
weight decay nor momentum can drift them (the reference now does the same: it restores them and
clears their momentum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Context, Param, Search
from coun_tui.engine.methods.rl import LABELS, RandomLabel

if TYPE_CHECKING:
    import torch


@register
class SalUn(RandomLabel):
    name = "salun"
    summary = "random labels on forget data, updating only the most forget-salient weights"
    params = {"epochs": 10, "lr": 0.01,
              # the paper's mask-ratio range (coun-method.md)
              "mask_ratio": Param(0.5, "fraction of the weights updated (the most forget-salient)", gt=0, le=1,
                                  search=Search(0.1, 1.0)),
              "mask": Param("signed-sum", "saliency statistic: signed-sum (|sum of forget-batch gradients| on "
                            "augmented images, the OPTML-Group reference's) or abs-sum (sum of |gradients| on "
                            "clean images, the lab's earlier one)", choices=("signed-sum", "abs-sum")),
              "labels": LABELS}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        statistic = saliency if self.hp["mask"] == "signed-sum" else abs_saliency
        self.mask = top_fraction(statistic(ctx), float(self.hp["mask_ratio"]))

    def before_step(self, ctx: Context) -> None:
        self._before = [p.detach().clone() for p in ctx.model.parameters()]

    def after_step(self, ctx: Context) -> None:
        import torch

        with torch.no_grad():
            for p, old, keep in zip(ctx.model.parameters(), self._before, self.mask):
                p.copy_(torch.where(keep, p, old))


def forget_batches(ctx: Context) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The reference's mask data: the forget set shuffled into batches of the run's batch size,
    each augmented as training images are (seeded by the run's seed)."""
    import torch

    from coun_tui.engine import data as data_mod

    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 5)
    bs = int(ctx.hparams["batch_size"])
    order = ctx.forget[torch.randperm(len(ctx.forget), generator=gen, device=gen.device).to(ctx.forget.device)]
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        yield data_mod.augment(ctx.data.train_x[idx], ctx.data, gen), ctx.data.train_y[idx]


def _gradients(ctx: Context, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], reduction: str,
               accumulate: Callable[[torch.Tensor, torch.Tensor], object]) -> list[torch.Tensor]:
    """Run each batch forward and backward at the trained weights (eval mode, float32: a confident
    model's forget gradients underflow in bf16) and fold its gradient into the statistic."""
    import torch
    import torch.nn.functional as F

    model = ctx.model
    params = list(model.parameters())
    stat = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        with ctx.flops.measure(("salun-mask", tuple(x.shape))):
            F.cross_entropy(model(x), y, reduction=reduction).backward()
        ctx.flops.count_images(trained=len(x))
        for s, p in zip(stat, params):
            if p.grad is not None:  # every weight of the model takes part in the loss
                accumulate(s, p.grad.detach())
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return stat


def saliency(ctx: Context) -> list[torch.Tensor]:
    """|sum over augmented forget batches of d mean-CE / d w| per weight (the reference's)."""
    return [s.abs_() for s in _gradients(ctx, forget_batches(ctx), "mean", lambda s, g: s.add_(g))]


def abs_saliency(ctx: Context, batch_size: int = 256) -> list[torch.Tensor]:
    """sum over clean forget batches of |d summed-CE / d w| (the lab's earlier statistic)."""
    x, y = ctx.data.train_x[ctx.forget], ctx.data.train_y[ctx.forget]
    batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
    return _gradients(ctx, batches, "sum", lambda s, g: s.add_(g.abs()))


def top_fraction(stat: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Boolean masks (one per parameter): True for the top `ratio` of the statistic, globally."""
    import torch

    flat = torch.cat([s.flatten() for s in stat])
    k = max(1, int(round(ratio * flat.numel())))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True  # exactly k, whatever the ties
    return [m.view_as(s) for m, s in zip(keep.split([s.numel() for s in stat]), stat)]
