"""`coun-lab bench --methods`: does every method train at the bare step's speed?

Each registered method (and each with +CL) runs the real run loop (runner.run) on the same data
for a fixed number of steps; its throughput is read from the Step events it yields, over the
intervals between consecutive steps of one epoch (so the per-epoch probe evaluation and a
method's per-epoch pass, such as SCRUB's max-steps, stay out of the window). Against it stands
the bare step of engine.bench (forward, cross-entropy, backward, SGD) on a batch of the same
shape and precision. FLOPs are the lab's FlopMeter's, measured on real steps, so a teacher's
forward or a forget batch counts as work: a method whose FLOP/s falls well below the bare
step's spends its time on something other than arithmetic (syncs, Python, small kernels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from coun_tui.engine import metrics
from coun_tui.engine.bench import bare_step, sync
from coun_tui.engine.events import Failed, Step
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.methods import all_methods
from coun_tui.engine.records import method_label
from coun_tui.engine.runner import RunSpec, autocast_for, prepare, run

TARGET = 0.8  # a method's FLOP/s as a fraction of the bare step's, at least
# Why a method can sit below the target although its loop is sound: shown beside its row.
BELOW_TARGET_WHY = {
    "ga": "its stream is the forget set only: few steps an epoch, each a short batch on digits",
    "salun": "its gradient mask multiplies every parameter's gradient each step (no FLOPs counted)",
    "l1-sparse": "its L1 term walks every parameter each step (elementwise work, few FLOPs)",
}


@dataclass
class MethodRate:
    label: str
    images_per_second: float
    flops_per_image: float
    flops_per_second: float
    steps: int  # steps in the timed window
    error: str = ""


class _StopAfter:
    """A run's cancel flag that trips once `steps` Step events have been seen."""

    def __init__(self, steps: int):
        self.left = steps

    def seen_step(self) -> None:
        self.left -= 1

    def is_set(self) -> bool:
        return self.left <= 0


def window_rates(steps: list[Step]) -> tuple[float, float, float, int]:
    """(images/s, FLOPs/image, FLOP/s, intervals) over consecutive steps of the same epoch,
    leaving out each epoch's first step (the FlopMeter counts a new shape under its slow
    counter) and what happens between epochs."""
    seconds = images = flops = 0.0
    intervals = 0
    for a, b in zip(steps, steps[1:], strict=False):
        if a.epoch != b.epoch or a.step == 1:
            continue
        seconds += b.seconds - a.seconds
        images += b.images - a.images
        flops += b.flops - a.flops
        intervals += 1
    if not intervals or seconds <= 0 or images <= 0:
        nan = float("nan")
        return nan, nan, nan, 0
    return images / seconds, flops / images, flops / seconds, intervals


def method_rate(model: str, method: str, cl: bool, device: str, steps: int, batch_size: int,
                forget: ForgetSpec) -> MethodRate:
    """One method's throughput over `steps` steps of its real run loop (probe evaluation cut to a
    few samples: it is not what is measured)."""
    spec = RunSpec(method=method, model=model, forget=forget, cl=cl, device=device, probe_size=16,
                   hparams={"epochs": 1000, "batch_size": batch_size})
    prep = prepare(spec)
    label = method_label(prep.method.name, cl and not prep.method.always_cl)
    stop = _StopAfter(steps)
    seen: list[Step] = []
    for event in run(prep, stop):
        if isinstance(event, Step):
            seen.append(event)
            stop.seen_step()
        elif isinstance(event, Failed):
            return MethodRate(label, float("nan"), float("nan"), float("nan"), 0, event.reason)
    ips, fpi, fps, intervals = window_rates(seen)
    return MethodRate(label, ips, fpi, fps, intervals)


def bare_rate(device: torch.device, shape: tuple[int, ...], num_classes: int, batch_size: int, steps: int,
              precision: str = "auto") -> tuple[float, float]:
    """The bare step's (FLOPs per image, FLOP/s) on a random batch of `shape` images, channels_last,
    at the runs' precision."""
    from coun_tui.engine import model as model_mod

    torch.manual_seed(0)
    net = model_mod.build(num_classes, shape[0]).to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch_size, *shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    step = bare_step(net, x, y, autocast_for(device, precision))
    meter = metrics.FlopMeter()
    with meter.measure(("bare",)):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    per_step = meter.total
    return per_step / batch_size, per_step * steps / (time.perf_counter() - start)


def run_bench_methods(model: str, device: str, steps: int = 10, batch_size: int = 128,
                      forget: ForgetSpec | None = None) -> tuple[tuple[float, float], list[MethodRate]]:
    """The bare step's (FLOPs/image, FLOP/s) and every method's rates, alone and with +CL."""
    forget = forget or ForgetSpec(classes=[3])
    rates: list[MethodRate] = []
    for name, cls in all_methods().items():
        for cl in (False, True):
            if cl and (cls.always_cl or cls.from_scratch):
                continue
            rates.append(method_rate(model, name, cl, device, steps, batch_size, forget))
    prep = prepare(RunSpec(method="ft", model=model, forget=forget, device=device))
    shape = tuple(prep.dataset.train_x.shape[1:])
    bare = bare_rate(prep.device, shape, prep.meta["num_classes"], batch_size, steps)
    return bare, rates


def table(bare: tuple[float, float], rates: list[MethodRate]) -> list[str]:
    """The bench's table: one line per method, a reason beside any below TARGET."""
    head = f"{'method':<16} {'img/s':>8} {'GFLOPs/img':>11} {'FLOP/s vs bare':>15}  note"
    lines = [head, f"{'bare step':<16} {'':>8} {bare[0] / 1e9:11.3f} {1.0:15.2f}  "
                   f"{bare[1] / 1e9:.1f} GFLOP/s (target for every method: >= {TARGET})"]
    for r in rates:
        if r.error:
            lines.append(f"{r.label:<16} failed: {r.error}")
            continue
        fraction = r.flops_per_second / bare[1]
        note = ""
        if fraction < TARGET:
            base = r.label.removesuffix("+CL")
            note = "below target: " + BELOW_TARGET_WHY.get(base, "unexplained")
        lines.append(f"{r.label:<16} {r.images_per_second:8.1f} {r.flops_per_image / 1e9:11.3f} {fraction:15.2f}  "
                     f"{note}".rstrip())
    return lines
