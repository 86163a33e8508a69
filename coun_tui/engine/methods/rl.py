"""RL: random labels. Train on the retain set plus the forget set with random labels.

As in the OPTML-Group reference (Unlearn-Saliency, unlearn/RL.py, its CIFAR-10 path), forget
samples get labels drawn uniformly over all classes afresh for every batch (`labels=per-batch`).
`labels=once` keeps the lab's earlier choice: one random wrong label per forget sample for the whole
run (the committed runs made before the reference behaviour was the default used it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method, Param

if TYPE_CHECKING:
    import torch

LABELS = Param("per-batch", "forget samples' random labels: per-batch (drawn for every batch, as the "
               "OPTML-Group reference) or once (one wrong label per sample for the run)",
               choices=("per-batch", "once"))


@register
class RandomLabel(Method):
    name = "rl"
    summary = "train on retain data plus forget data relabelled at random"
    params = {"epochs": 10, "lr": 0.01, "labels": LABELS}
    stream = "mixed"

    def setup(self, ctx: Context) -> None:
        import torch

        self.label_gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 4)

    def targets(self, ctx: Context, batch: Batch) -> torch.Tensor:
        """The batch's labels, the forget rows' drawn afresh unless `labels=once`."""
        import torch

        rows = ~batch.is_retain
        if self.hp["labels"] == "once" or not bool(rows.any()):
            return batch.y  # the run loop's relabel(): wrong labels drawn once
        y = batch.y.clone()
        drawn = torch.randint(0, ctx.num_classes, (int(rows.sum()),), generator=self.label_gen,
                              device=self.label_gen.device)
        y[rows] = drawn.to(y.device)
        return y

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        return {"ce": F.cross_entropy(logits, self.targets(ctx, batch))}
