"""UNSIR: error-maximising noise, then impair and repair (Tarun, Chundawat, Mandal, Kankanhalli,
"Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023, arXiv 2111.08947).

1. Noise: images N, one per forget sample and labelled as it, start from N(0, 1) and are optimised
   with Adam to maximise the model's error on their labels, with an L2 penalty that keeps them
   small: minimise -CE(f(N), y) + noise_l2 * mean_i ||N_i||^2.
2. Impair (the first `impair_epochs`): train on retain batches with the noise mixed in, each noise
   image seen once per epoch (a share of the noise beside every retain batch, one CE over both).
3. Repair (the remaining epochs): train on retain batches only.

Defaults from the authors' code (vikram2000b/Fast-Machine-Unlearning): 40 noise steps (5 epochs
of 8) with Adam at lr 0.1 and penalty 0.1; one impair epoch and one repair epoch. They train the
model with Adam at lr 0.02 (impair) then 0.01 (repair): steps of about the lr on every weight,
far larger than SGD's at 0.02. The impair works by such large steps: on digits, forgetting class
3, one impair epoch with the lab's SGD at lr 0.02 lowers the forget loss (0.014 -> 0.007: training
the noise as class 3 pulls every input toward 3, and costs the other classes), while at lr 0.1 it
raises it to 13.4 and the whole method (impair + repair) reaches UA 100, RA 95.7, TA 95.7. So the
lab's default lr is 0.1, its cosine schedule halving it by the repair. With a random forget set
(noise labelled with every class) the impair raises the forget loss at lr 0.02 already (0.004 ->
0.12, against 0.004 for fine-tuning). Their method forgets whole classes with 5,120 noise
images per class; one noise image per forget sample serves random forgetting as well (for a
forgotten class it is that class's noise). They train on a subset of the retain set (1,000
images a class); the lab uses all of it. Noise is optimised in eval mode, so that the noise
does not move BatchNorm's statistics before the impair step trains on it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Batch, Context, Method, Param

if TYPE_CHECKING:
    import torch


@register
class Unsir(Method):
    name = "unsir"
    summary = "learn error-maximising noise for the forget samples, train on it with retain data, then repair"
    params = {"epochs": 2, "lr": 0.1,
              "impair_epochs": Param(1, "UNSIR: the first epochs train on the noise beside retain batches "
                                     "(impair); the rest on retain batches only (repair)", ge=0),
              "noise_steps": Param(40, "UNSIR: Adam steps that maximise the noise's error", ge=0),
              "noise_lr": Param(0.1, "UNSIR: Adam learning rate of the noise", gt=0),
              "noise_l2": Param(0.1, "UNSIR: weight of the noise's mean squared L2 norm", ge=0)}

    def setup(self, ctx: Context) -> None:
        import torch

        self.noise_y = ctx.data.train_y[ctx.forget]
        self.noise = error_maximising_noise(ctx, self.noise_y, int(self.hp["noise_steps"]),
                                            float(self.hp["noise_lr"]), float(self.hp["noise_l2"]))
        self.gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 9)
        self.chunks: list[torch.Tensor] = []

    def _impairing(self, ctx: Context) -> bool:
        return ctx.epoch < int(self.hp["impair_epochs"]) and len(self.noise) > 0

    def before_epoch(self, ctx: Context) -> None:
        """Deal the noise, shuffled, across this epoch's steps: each image once."""
        import torch

        if self._impairing(ctx):
            order = torch.randperm(len(self.noise), generator=self.gen, device=self.gen.device)
            self.chunks = list(order.to(self.noise.device).tensor_split(ctx.steps_per_epoch))

    def extend_batch(self, ctx: Context, batch: Batch) -> Batch:
        """In the impair epochs: this step's share of the noise appended to the retain batch, so
        that one cross-entropy (and BatchNorm's batch statistics) covers both, as in the authors'
        shuffled loader of noise and retain images."""
        import torch

        chunk = self.chunks[ctx.step % ctx.steps_per_epoch] if self._impairing(ctx) else None
        if chunk is None or len(chunk) == 0:
            return batch
        noise = self.noise[chunk].to(batch.x.dtype).contiguous(memory_format=torch.channels_last)
        return replace(batch, x=torch.cat([batch.x, noise]), y=torch.cat([batch.y, self.noise_y[chunk]]),
                       is_retain=torch.cat([batch.is_retain, torch.zeros_like(chunk, dtype=torch.bool)]))


def error_maximising_noise(ctx: Context, labels: torch.Tensor, steps: int, lr: float,
                           l2: float) -> torch.Tensor:
    """Images that maximise the model's cross-entropy on `labels`, kept small by the L2 term."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed + 10)
    model = ctx.model
    was_training = model.training
    model.eval()
    bs = int(ctx.hparams["batch_size"])
    chunks = []
    for i in range(0, len(labels), bs):  # each batch of noise its own Adam, as the authors' one per class
        y = labels[i:i + bs]
        x = torch.randn((len(y), *ctx.data.train_x.shape[1:]), generator=gen, device=ctx.device)
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            with ctx.flops.measure(("unsir-noise", tuple(x.shape))):
                objective = -F.cross_entropy(model(x), y) + l2 * x.square().flatten(1).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                objective.backward()
            opt.step()
            ctx.flops.count_images(trained=len(y))
        chunks.append(x.detach())
    model.zero_grad(set_to_none=True)  # the noise's backward left gradients on the weights
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros((0, *ctx.data.train_x.shape[1:]), device=ctx.device)
