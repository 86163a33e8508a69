"""l1-sparse: CE on retain plus gamma_t * ||theta||_1, gamma_t decaying linearly to 0."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method, Param, Search

if TYPE_CHECKING:
    import torch


def l1_weight(gamma: float, step: int, l1_steps: int) -> float:
    """gamma at step 0, falling linearly to exactly 0 at step l1_steps and after."""
    if l1_steps <= 0:
        return 0.0
    return gamma * max(0.0, 1.0 - step / l1_steps)


@register
class L1Sparse(Method):
    name = "l1-sparse"
    summary = "fine-tune with an L1 penalty on the weights that decays linearly to zero"
    # The paper applies the penalty over the first 4 epochs (Jia et al., "model sparsity").
    params = {"epochs": 10, "lr": 0.05,
              # the paper's gamma range (coun-method.md)
              "gamma": Param(5e-4, "weight of the L1 penalty at the first step", ge=0,
                             search=Search(1e-4, 0.1, log=True)),
              "l1_epochs": Param(4, "epochs over which the L1 weight falls to 0", ge=0)}

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        weight = l1_weight(float(self.hp["gamma"]), ctx.step,
                           int(self.hp["l1_epochs"]) * ctx.steps_per_epoch)
        ctx.state["l1_weight"] = weight
        out = {"ce": F.cross_entropy(logits, batch.y)}
        if weight > 0:
            out["l1"] = weight * torch.stack([p.abs().sum() for p in ctx.model.parameters()]).sum()
        return out
