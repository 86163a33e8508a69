"""Bad Teacher (Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023).

A student (the original model) is distilled from two teachers on retain and forget samples
shuffled together: the original model (competent) on retain samples and a randomly initialised
ResNet-18 (incompetent) on forget samples, KL(teacher || student) at `temperature`. Both teachers
see every batch, as in the authors' code (vikram2000b/bad-teaching-unlearning); it takes a
batch-mean KL where theirs averages over classes too (a constant factor the lr absorbs), all
retain data where the paper samples 30% of it, and the lab's SGD where theirs uses Adam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method, Param, Search
from coun_tui.engine.methods.scrub import frozen_copy

if TYPE_CHECKING:
    import torch


@register
class BadTeacher(Method):
    name = "bad-teacher"
    summary = "distil the original on retain samples and a random network on forget samples"
    params = {"epochs": 1, "lr": 0.01, "temperature": Param(1.0, "temperature of the distillation KL", gt=0,
                                           search=Search(0.5, 8.0, log=True))}
    stream = "mixed"

    def setup(self, ctx: Context) -> None:
        import torch

        from coun_tui.engine import model as model_mod

        model = ctx.model
        self.good = frozen_copy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed + 6)
            bad = model_mod.build(model.num_classes, model.in_channels, model.stem)
        self.bad = frozen_copy(bad.to(ctx.device).to(memory_format=torch.channels_last))

    def loss(self, ctx: Context, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        t = float(self.hp["temperature"])
        with torch.no_grad(), ctx.autocast():
            good, bad = self.good(batch.x), self.bad(batch.x)
        ctx.flops.count_images(forward_only=2 * len(batch.x))
        rows = batch.is_retain[:, None]
        target = torch.where(rows, F.softmax(good.float() / t, dim=1), F.softmax(bad.float() / t, dim=1))
        return {"kl": F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="batchmean")}
