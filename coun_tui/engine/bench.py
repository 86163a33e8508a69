"""`coun-lab bench`: measured training-step and inference throughput of the default path against
plainer ones.

Ratios are measured in one run, so they hold on a noisy machine where absolute numbers do not.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from coun_tui.engine import data as data_mod, model as model_mod
from coun_tui.engine.runner import autocast_for


def _step_rate(model, x, y, autocast, channels_last: bool, steps: int) -> float:
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model.to(memory_format=torch.contiguous_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(x.device)
    return steps * len(x) / (time.perf_counter() - start)


@torch.no_grad()
def _infer_rate(model, x, autocast, steps: int) -> float:
    model.eval().to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast():
        model(x)  # warm-up
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast():
            model(x)
    _sync(x.device)
    return steps * len(x) / (time.perf_counter() - start)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(device: torch.device, image_size: int = 28, channels: int = 1, batch_size: int = 128,
              steps: int = 5) -> list[tuple[str, float, str]]:
    """(name, value, unit) rows: step throughput per configuration and augmentation throughput."""
    torch.manual_seed(0)
    model = model_mod.build(10, channels).to(device)
    x = torch.randn(batch_size, channels, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    bf16 = autocast_for(device, "auto")
    rows = []
    configs = [("fp32", nullcontext, False), ("fp32 + channels_last", nullcontext, True)]
    if bf16 is not nullcontext:
        configs += [("bf16 autocast", bf16, False), ("bf16 + channels_last (default)", bf16, True)]
    for name, ac, cl in configs:
        rows.append((f"train step, {name}", _step_rate(model, x, y, ac, cl, steps), "img/s"))
    fake = data_mod.DeviceData(x, y, x, y, torch.zeros(channels, device=device), max(1, image_size // 8), True)
    gen = torch.Generator(device=device).manual_seed(0)
    data_mod.augment(x, fake, gen)
    _sync(device)
    start = time.perf_counter()
    for _ in range(20):
        data_mod.augment(x, fake, gen)
    _sync(device)
    rows.append(("batched augmentation (crop + flip)", 20 * batch_size / (time.perf_counter() - start), "img/s"))
    base = rows[0][1]
    rows += [(f"speed-up of {name} over fp32", value / base, "x") for name, value, unit in rows[1:len(configs)]]
    # The final full-set evaluation's path (channels_last, the run's precision).
    infer = [("fp32", nullcontext)] + ([("bf16 (default)", bf16)] if bf16 is not nullcontext else [])
    rates = [(name, _infer_rate(model, x, ac, steps)) for name, ac in infer]
    rows += [(f"inference + channels_last, {name}", rate, "img/s") for name, rate in rates]
    return rows + [(f"speed-up of inference, {name} over fp32", rate / rates[0][1], "x") for name, rate in rates[1:]]
