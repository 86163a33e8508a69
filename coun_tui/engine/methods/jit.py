"""JiT: zero-shot unlearning by Lipschitz smoothing (Foster, Fogarty, Schoepf, Brintrup et al.,
"Zero-Shot Machine Unlearning at Scale via Lipschitz Regularization", 2024, arXiv 2402.01401).

Only the forget set is used, never the retain set. For each forget image x, `samples` noisy copies
x' = x + N(0, noise^2), clipped to the batch's pixel range, estimate the model's local Lipschitz
constant ||f(x) - f(x')|| / ||x - x'|| (logits, L2 norms); one pass of plain SGD over the forget
set minimises its mean over the copies, summed over the batch. The copies' outputs are constants
(no gradient flows through them), and the model stays in training mode throughout, as in the
authors' code (jwf40/Zeroshot-Unlearning-At-Scale, lipschitz.py: 25 copies, SGD without momentum
or weight decay, one epoch, forget batches of 128).

Defaults: `samples` 25, one epoch, batch 128, momentum and weight decay 0, constant lr (authors'
code); `noise` 0.1 and lr 1e-3 as in the JiT wrapper of a public benchmark; the authors' own
script gives sigma 0.01 with lr 3e-4 for VGG-16 and sigma 0.5 with lr 0.1 for ViT, and no
ResNet-18 values, so tune both. The lab's forget batches are augmented like every training batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import OPTIMISER_PARAMS, Batch, Context, Method, Param, Search

if TYPE_CHECKING:
    import torch


@register
class JiT(Method):
    name = "jit"
    summary = "zero-shot: smooth the model around forget samples (Lipschitz penalty); no retain data"
    # Tuning searches the lr two decades below the others' (as GA's: steps on forget samples only)
    # and the noise a decade either side of its default.
    params = {"epochs": 1, "lr": replace(OPTIMISER_PARAMS["lr"], default=1e-3, search=Search(1e-5, 1e-2, log=True)),
              "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant",
              "noise": Param(0.1, "JiT: std of the Gaussian noise of each perturbed copy (sigma), in "
                             "normalised pixel units", gt=0, search=Search(0.01, 1.0, log=True)),
              "samples": Param(25, "JiT: perturbed copies per forget image (N)", ge=1)}
    stream = "forget"
    cl_refusal = "JiT is zero-shot: it never reads the retain set, and the term trains on retain samples"

    def setup(self, ctx: Context) -> None:
        import torch

        self.gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 8)

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        x = batch.x
        low, high = x.min(), x.max()
        flat_x = x.flatten(1)
        total = torch.zeros((), device=logits.device)
        n = int(self.hp["samples"])
        for _ in range(n):
            noisy = (x + float(self.hp["noise"]) * torch.randn(x.shape, generator=self.gen, device=x.device,
                                                                dtype=x.dtype)).clamp(low, high)
            with torch.no_grad(), ctx.autocast():
                out = ctx.model(noisy.contiguous(memory_format=torch.channels_last)).float()
            ratio = (logits - out).norm(dim=1) / (flat_x - noisy.flatten(1)).norm(dim=1)
            total = total + ratio.sum()
        ctx.flops.count_images(forward_only=n * len(x))
        return {"lipschitz": total / n}
