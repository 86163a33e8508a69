"""`coun-lab bench`: measured training-step and inference throughput of the default path against
plainer ones.

Ratios are measured in one run, so they hold on a noisy machine where absolute numbers do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from coun_tui.engine import UserError
from coun_tui.engine import data as data_mod
from coun_tui.engine import model as model_mod
from coun_tui.engine.events import Done, Failed
from coun_tui.engine.metrics import Autocast
from coun_tui.engine.model import ResNet18
from coun_tui.engine.runner import autocast_for


def bare_step(model: ResNet18, x: torch.Tensor, y: torch.Tensor, autocast: Autocast) -> Callable[[], None]:
    """One plain training step on (x, y): forward under `autocast`, cross-entropy, backward, SGD
    (momentum 0.9). The yardstick every method's loop is measured against."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _step_rate(model: ResNet18, x: torch.Tensor, y: torch.Tensor, autocast: Autocast, channels_last: bool,
               steps: int) -> float:
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model.to(memory_format=torch.contiguous_format)
    step = bare_step(model, x, y, autocast)
    step()  # warm-up
    sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(x.device)
    return steps * len(x) / (time.perf_counter() - start)


@torch.no_grad()
def _infer_rate(model: ResNet18, x: torch.Tensor, autocast: Autocast, steps: int) -> float:
    model.eval().to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast():
        model(x)  # warm-up
    sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast():
            model(x)
    sync(x.device)
    return steps * len(x) / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
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
    rows: list[tuple[str, float, str]] = []
    configs: list[tuple[str, Autocast, bool]] = [("fp32", nullcontext, False),
                                                 ("fp32 + channels_last", nullcontext, True)]
    if bf16 is not nullcontext:
        configs += [("bf16 autocast", bf16, False), ("bf16 + channels_last (default)", bf16, True)]
    for name, ac, cl in configs:
        rows.append((f"train step, {name}", _step_rate(model, x, y, ac, cl, steps), "img/s"))
    fake = data_mod.DeviceData(x, y, x, y, torch.zeros(channels, device=device), max(1, image_size // 8), True)
    gen = torch.Generator(device=device).manual_seed(0)
    data_mod.augment(x, fake, gen)
    sync(device)
    start = time.perf_counter()
    for _ in range(20):
        data_mod.augment(x, fake, gen)
    sync(device)
    rows.append(("batched augmentation (crop + flip)", 20 * batch_size / (time.perf_counter() - start), "img/s"))
    base = rows[0][1]
    rows += [(f"speed-up of {name} over fp32", value / base, "x") for name, value, unit in rows[1:len(configs)]]
    # The final full-set evaluation's path (channels_last, the run's precision).
    infer: list[tuple[str, Autocast]] = [("fp32", nullcontext)]
    if bf16 is not nullcontext:
        infer.append(("bf16 (default)", bf16))
    rates = [(name, _infer_rate(model, x, ac, steps)) for name, ac in infer]
    rows += [(f"inference + channels_last, {name}", rate, "img/s") for name, rate in rates]
    return rows + [(f"speed-up of inference, {name} over fp32", rate / rates[0][1], "x") for name, rate in rates[1:]]


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run_metrics_bench(model_path: str, device: torch.device, repeats: int = 3) -> list[tuple[str, float, str]]:
    """What the metrics beyond the paper's four cost, on the shipped digits model with class 3
    forgotten (a digits sweep setting): the final evaluation and one probe evaluation (the live
    view's per-epoch refresh), each with only RA/UA/TA/MIA and with everything, and the wall
    time of the sweep's FT run (5 epochs) they are added to. The model's own view stands in
    for a Retrain's reference.npz (the same arrays, the same work)."""
    from coun_tui.engine import metrics
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.runner import RunSpec, _Probes, evaluate_split, prepare, probe_rows, run, test_rows

    forget = ForgetSpec(classes=[3])
    prep = prepare(RunSpec(method="ft", model=model_path, forget=forget, hparams={"epochs": 5},
                           device=str(device)))
    data = data_mod.prepare(prep.dataset, prep.meta["mean"], prep.meta["std"], device)
    autocast, model, split = autocast_for(device, "auto"), prep.model, prep.split
    rows = probe_rows(split, len(data.test_y), 0, prep.spec.probe_size)
    prep.reference_view = evaluate_split(model, data, split, forget, autocast, rows)[1]
    r, f = (torch.from_numpy(a).to(device) for a in (split.retain, split.forget))
    t = torch.from_numpy(test_rows(data.test_y, forget)).to(device)

    def four(sets: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float, float, float]:
        """RA, UA, TA, MIA alone from predictions on (x, y) of retain, forget, test."""
        (pr, yr), (pf, yf), (pt, yt) = [(metrics.predict(model, x, autocast=autocast), y.cpu()) for x, y in sets]
        return (metrics.accuracy(pr, yr), metrics.accuracy(pf, yf), metrics.accuracy(pt, yt),
                metrics.mia_efficacy(metrics.confidence(pr, yr), metrics.confidence(pt, yt),
                                     metrics.confidence(pf, yf)))

    full_sets = [(data.train_x[r], data.train_y[r]), (data.train_x[f], data.train_y[f]),
                 (data.test_x[t], data.test_y[t])]
    probes = _Probes(prep, data, autocast)
    keep = probes.keep.to(device)
    probe_sets = [probes.sets["retain"], probes.sets["forget"],
                  (probes.sets["test"][0][keep], probes.sets["test"][1][keep])]
    final_four = _best_seconds(lambda: four(full_sets), repeats)
    final_all = _best_seconds(lambda: evaluate_split(model, data, split, forget, autocast, rows,
                                                     prep.reference_view), repeats)
    probe_four = _best_seconds(lambda: four(probe_sets), repeats)
    probe_all = _best_seconds(lambda: probes.evaluate(model), repeats)
    end = next(e for e in run(prep) if isinstance(e, (Done, Failed)))
    if isinstance(end, Failed):
        raise UserError(f"the bench's FT run failed: {end.reason}")
    run_seconds = end.seconds
    return [("final evaluation, RA/UA/TA/MIA only", final_four, "s"),
            ("final evaluation, with the metrics beyond them", final_all, "s"),
            ("digits sweep run (FT, 5 epochs, class 3), wall time", run_seconds, "s"),
            ("added to the run by the new metrics", 100 * (final_all - final_four) / run_seconds, "% (target <= 10)"),
            ("probe evaluation (live refresh), RA/UA/TA/MIA only", probe_four, "s"),
            ("probe evaluation, with the metrics beyond them", probe_all, "s"),
            ("added to a live refresh by the new metrics", 100 * (probe_all - probe_four) / probe_four,
             "% (target <= 5)")]
