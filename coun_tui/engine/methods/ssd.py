"""SSD: Selective Synaptic Dampening (Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without
Retraining Through Selective Synaptic Dampening", AAAI 2024, arXiv 2308.07707).

Training-free. Each weight's importance is the diagonal of the Fisher information, estimated as
the mean over batches of the squared gradient of the batch-mean cross-entropy, once on the forget
set ([]_Df) and once on the whole training set ([]_D, retain plus forget). A weight is selected
when []_Df > alpha * []_D and multiplied by beta = min(lambda * []_D / []_Df, 1); every other
weight, and every BatchNorm buffer, is left bit-identical.

As in the authors' code (if-loops/selective-synaptic-dampening, ssd.py and forget_random_main.py):
the model in eval mode, batches of 128 unshuffled, every parameter eligible, and their defaults
alpha (`selection_weighting`; the lab's `selection`, as NegGrad+ has an alpha of its own) 10 and
lambda (`dampening_constant`; the lab's `dampening`) 1 for ResNet-18 on CIFAR.
The lab feeds un-augmented images where theirs come through the training loader (an importance is
an expectation over the data; augmentation only adds noise to it), and computes in float32 (a
confident model's squared gradients underflow in bf16).

There is no training loop: `epochs` is 0 and the optimiser's settings are unused. Its cost is the
two importance passes, one forward and backward per training image (forget images twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import OPTIMISER_PARAMS, Context, Method, Param, Search

if TYPE_CHECKING:
    import torch


@register
class SelectiveSynapticDampening(Method):
    name = "ssd"
    summary = "training-free: dampen the weights far more important to the forget set than to the data"
    # Tuning searches SSD's own two numbers around the authors' defaults (alpha 10, lambda 1), not
    # the lr, which no step uses.
    params = {"epochs": Param(0, "SSD trains no epochs: it dampens the weights once, before any step",
                              ge=0, le=0),
              "lr": replace(OPTIMISER_PARAMS["lr"], search=None),
              "selection": Param(10.0, "SSD alpha: dampen a weight whose forget importance exceeds alpha "
                                 "times its importance on the training data", gt=0,
                                 search=Search(1.0, 100.0, log=True)),
              "dampening": Param(1.0, "SSD lambda: a selected weight is scaled by min(lambda * "
                                 "importance on the data / importance on the forget set, 1)", gt=0,
                                 search=Search(0.1, 5.0, log=True))}
    cl_refusal = "SSD has no training loop: it dampens the weights once, so no loss takes the term"

    def setup(self, ctx: Context) -> None:
        import torch

        train_set = torch.cat([ctx.retain, ctx.forget])
        forget_imp = importance(ctx, ctx.forget)
        data_imp = importance(ctx, train_set)
        self.selected = dampen(ctx.model, forget_imp, data_imp, float(self.hp["selection"]),
                               float(self.hp["dampening"]))
        ctx.state["selected"] = sum(int(s.sum()) for s in self.selected)


def _batches(ctx: Context, rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    bs = int(ctx.hparams["batch_size"])
    for i in range(0, len(rows), bs):
        idx = rows[i:i + bs]
        yield ctx.data.train_x[idx], ctx.data.train_y[idx]


def importance(ctx: Context, rows: torch.Tensor) -> list[torch.Tensor]:
    """Per weight: mean over batches of (d batch-mean CE / d w)^2, eval mode, float32."""
    import torch
    import torch.nn.functional as F

    model = ctx.model
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    n = 0
    for x, y in _batches(ctx, rows):
        model.zero_grad(set_to_none=True)
        with ctx.flops.measure(("ssd-importance", tuple(x.shape))):
            F.cross_entropy(model(x), y).backward()
        ctx.flops.count_images(trained=len(x))
        for t, p in zip(total, params):
            if p.grad is not None:
                t.add_(p.grad.detach().square())
        n += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return [t / max(n, 1) for t in total]


def dampen(model: torch.nn.Module, forget_imp: list[torch.Tensor], data_imp: list[torch.Tensor],
           alpha: float, dampening: float) -> list[torch.Tensor]:
    """Scale the selected weights in place; returns the selection (one bool mask per parameter)."""
    import torch

    selected = []
    with torch.no_grad():
        for p, f_imp, d_imp in zip(model.parameters(), forget_imp, data_imp):
            chosen = f_imp > alpha * d_imp
            beta = (dampening * d_imp / f_imp).clamp(max=1.0)  # f_imp > 0 wherever chosen
            p[chosen] = p[chosen] * beta[chosen]
            selected.append(chosen)
    return selected
