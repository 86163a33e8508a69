"""SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023).

The original model is a frozen teacher. In each of the first `max_epochs` epochs, a max-pass over
the forget set (batches of `forget_batch_size`) pushes the student's outputs away from the
teacher's (ascent on KL); then every epoch's min-steps on retain batches minimise
ce_weight * CE + kl_weight * KL(teacher || student), KL at `temperature` scaled by T^2.
Defaults are the authors' code's (meghdadk/SCRUB): gamma 0.99, alpha 0.001, kd_T 4, msteps 2
(max-passes in epochs 0..2), 3 epochs, lr 5e-4, forget batch 32; the lab's shared optimiser
(SGD, momentum 0.9, wd 5e-4) and cosine schedule replace their step decay, which does not act
within 3 epochs.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import OPTIMISER_PARAMS, Batch, Context, Method, Param, Search

if TYPE_CHECKING:
    import torch

    from coun_tui.engine.model import ResNet18


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened outputs, batch mean, times T^2 (Hinton et al.)."""
    import torch.nn.functional as F

    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    p_t = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * t * t


def frozen_copy(model: ResNet18) -> ResNet18:
    teacher: ResNet18 = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@register
class Scrub(Method):
    name = "scrub"
    summary = "max-steps on forget data away from the original, min-steps on retain: CE + KL to it"
    # Search ranges around the SCRUB paper's small lr and KL weight (the CoUn paper gives none).
    params = {"epochs": 3, "lr": replace(OPTIMISER_PARAMS["lr"], default=5e-4, search=Search(1e-5, 1e-2, log=True)),
              "kl_weight": Param(0.001, "weight of the KL to the original in SCRUB's min-steps (alpha)", ge=0,
                                 search=Search(1e-4, 1.0, log=True)),
              "ce_weight": Param(0.99, "weight of the cross-entropy in SCRUB's min-steps (gamma)", ge=0),
              "temperature": Param(4.0, "temperature of the distillation KL", gt=0, search=Search(1.0, 8.0)),
              "max_epochs": Param(3, "SCRUB: the first epochs, each starting with a max-pass over the forget set",
                                  ge=0),
              "forget_batch_size": Param(32, "SCRUB: forget samples per max-step", ge=2)}

    def setup(self, ctx: Context) -> None:
        import torch

        self.teacher = frozen_copy(ctx.model)
        self.gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 7)

    def _teacher(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad(), ctx.autocast():
            logits: torch.Tensor = self.teacher(x)
        ctx.flops.count_images(forward_only=len(x))
        return logits

    def before_epoch(self, ctx: Context) -> None:
        """The max-pass: one ascent step on KL per forget batch."""
        import torch

        from coun_tui.engine import data as data_mod

        if ctx.epoch >= int(self.hp["max_epochs"]):
            return
        bs = int(self.hp["forget_batch_size"])
        order = ctx.forget[torch.randperm(len(ctx.forget), generator=self.gen, device=self.gen.device)
                           .to(ctx.forget.device)]
        for i in range(0, len(order) - 1, bs):  # no one-sample batch: BatchNorm cannot train on it
            idx = order[i:i + bs]
            if len(idx) < 2:
                break
            x = data_mod.augment(ctx.data.train_x[idx], ctx.data, self.gen).contiguous(
                memory_format=torch.channels_last)
            with ctx.flops.measure(("scrub-max", tuple(x.shape))):
                with ctx.autocast():
                    student = ctx.model(x)
                loss = -distill_kl(student, self._teacher(ctx, x), self.hp["temperature"])
                assert ctx.optimizer is not None  # the run loop sets it before the first epoch
                ctx.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            ctx.optimizer.step()
            ctx.flops.count_images(trained=len(idx))
            ctx.state["max_kl"] = -float(loss.detach())

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        kl = distill_kl(logits, self._teacher(ctx, batch.x), self.hp["temperature"])
        return {"ce": float(self.hp["ce_weight"]) * F.cross_entropy(logits, batch.y),
                "kl": float(self.hp["kl_weight"]) * kl}
