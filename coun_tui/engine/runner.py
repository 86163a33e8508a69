"""Prepare a run (load, validate) and execute it as a stream of typed events.

One loop serves every method, original training included (`coun-lab train` is Retrain with an
empty forget set): a method only supplies its loss and optional hooks (see methods/base.py).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from coun_tui.engine import UserError, checkpoint, data as data_mod, metrics, model as model_mod
from coun_tui.engine.events import Cancelled, Done, Embedding, EpochMetrics, Event, Failed, Started, Step
from coun_tui.engine.forget import ForgetSpec, Split, make_split
from coun_tui.engine.methods import Batch, Context, Method, get as get_method
from coun_tui.engine.methods.base import info_nce

EMBED_RETAIN, EMBED_FORGET = 300, 150  # probe points drawn in the embedding scatter


@dataclass
class RunSpec:
    """Everything needed to repeat a run; saved as run.toml."""

    method: str = "coun"
    model: str | None = None  # checkpoint to unlearn; None trains a new model (`coun-lab train`)
    dataset: str | None = None  # default: the checkpoint's own dataset
    data_root: str | None = None
    subset: int | None = None  # only when training a new model; a checkpoint records its own
    forget: ForgetSpec = field(default_factory=ForgetSpec)
    cl: bool = False
    hparams: dict[str, Any] = field(default_factory=dict)  # overrides of the method's defaults
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    reference: str | None = None  # a Retrain run directory or checkpoint for the gaps
    probe_size: int = 512


@dataclass
class Prepared:
    spec: RunSpec
    model: model_mod.ResNet18  # the model that will be trained, in place
    meta: dict[str, Any]  # the source checkpoint's metadata (or a new model's)
    dataset: data_mod.Dataset
    split: Split
    method: Method
    hparams: dict[str, Any]
    device: torch.device
    reference: dict[str, float] | None = None

    @property
    def use_cl(self) -> bool:
        return self.method.always_cl or self.spec.cl


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} asked for but CUDA is not available here; use --device cpu")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise UserError(f"device {name} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use auto, cpu or cuda:N")
    return dev


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast where the hardware supports it (a zero-argument context factory)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"unknown precision {precision!r}; use auto, bf16 or fp32")
    if precision == "fp32":
        return nullcontext
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
    else:
        ok = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if not ok:
        if precision == "bf16":
            raise UserError(f"bf16 is not supported on {device}; use --precision fp32")
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def merged_hparams(method_cls: type[Method], meta: dict, overrides: dict) -> dict[str, Any]:
    hp = method_cls.all_defaults()
    if method_cls.from_scratch and isinstance(meta.get("recipe"), dict):
        hp.update({k: v for k, v in meta["recipe"].items() if k in hp})  # Retrain = the original recipe
    unknown = sorted(set(overrides) - set(hp))
    if unknown:
        raise UserError(f"{method_cls.name} has no hyperparameter {', '.join(unknown)}; "
                        f"it takes: {', '.join(sorted(hp))}")
    for key, value in overrides.items():
        default = hp[key]
        try:
            hp[key] = type(default)(value) if default is not None and not isinstance(default, bool) else value
        except (TypeError, ValueError):
            kind = {int: "an integer", float: "a number"}.get(type(default), "text")
            raise UserError(f"--{key.replace('_', '-')} {value!r}: expected {kind}") from None
    for key in ("epochs", "batch_size"):
        if int(hp[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1")
    if hp["schedule"] not in ("cosine", "step", "constant"):
        raise UserError(f"unknown schedule {hp['schedule']!r}; use cosine, step or constant")
    return hp


def load_source(spec: RunSpec) -> tuple[model_mod.ResNet18 | None, dict[str, Any], data_mod.Dataset]:
    """The checkpoint (if any), its metadata and its dataset, checked against each other."""
    if spec.model:
        model, meta = checkpoint.load(spec.model)
        name = spec.dataset or meta.get("dataset")
        if not name:
            raise UserError(f"{spec.model} does not say which dataset it was trained on; pass --dataset")
        dataset = data_mod.load(name, spec.data_root, meta.get("subset"), meta.get("subset_seed") or 0)
        if model.in_channels != dataset.in_channels or model.num_classes != len(dataset.classes):
            raise UserError(f"{spec.model} takes {model.in_channels} channel(s) and {model.num_classes} "
                            f"classes but {name} has {dataset.in_channels} and {len(dataset.classes)}")
        if meta.get("mean") is None:
            meta["mean"], meta["std"] = dataset.channel_stats()
    else:
        if not spec.dataset:
            raise UserError("no model and no dataset given; pass --model FILE or --dataset NAME")
        dataset = data_mod.load(spec.dataset, spec.data_root, spec.subset, spec.seed)
        mean, std = dataset.channel_stats()
        meta = {"arch": "resnet18", "stem": "cifar", "in_channels": dataset.in_channels,
                "num_classes": len(dataset.classes), "dataset": dataset.name, "subset": dataset.subset,
                "subset_seed": dataset.subset_seed, "mean": mean, "std": std}
        model = None
    meta["classes"] = dataset.classes
    return model, meta, dataset


def prepare(spec: RunSpec) -> Prepared:
    """Load and check everything a run needs; raises UserError with one clear line on bad input."""
    device = resolve_device(spec.device)
    method_cls = get_method(spec.method)
    model, meta, dataset = load_source(spec)
    split = make_split(spec.forget, dataset.train_y.numpy())
    if len(split.retain) < 2:
        raise UserError("the forget set covers (almost) the whole train split: nothing left to retain")
    if spec.model and len(split.forget) == 0:
        raise UserError("nothing to forget: pass --forget-class, --forget-fraction or --forget-indices")
    hparams = merged_hparams(method_cls, meta, spec.hparams)
    if model is None or method_cls.from_scratch:
        torch.manual_seed(spec.seed)
        model = model_mod.build(meta["num_classes"], meta["in_channels"], meta["stem"])
    reference = None
    if spec.reference:
        from coun_tui.engine.runs import load_reference

        reference = load_reference(spec.reference, split)
    return Prepared(spec, model.to(device), meta, dataset, split, method_cls(hparams), hparams, device,
                    reference)


def evaluate_checkpoint(spec: RunSpec) -> tuple[dict[str, Any], Split, dict[str, Any]]:
    """Full-set RA, UA, TA, MIA (+ gaps with a reference) of spec.model, at spec.precision.

    Without forget flags, an unlearned checkpoint is evaluated on its own recorded forget set.
    """
    model, meta, dataset = load_source(spec)
    forget = spec.forget
    if forget == ForgetSpec() and isinstance(meta.get("forget"), dict):
        forget = ForgetSpec.from_dict(meta["forget"])
    split = make_split(forget, dataset.train_y.numpy())
    device = resolve_device(spec.device)
    data = data_mod.prepare(dataset, meta["mean"], meta["std"], device)
    model.to(device)
    result = evaluate_split(model, data, split, forget, autocast_for(device, spec.precision))
    if spec.reference:
        from coun_tui.engine.runs import load_reference

        gap, avg = metrics.gaps(result, load_reference(spec.reference, split))
        result.update(gap=gap, avg_gap=avg)
    return result, split, meta


def test_rows(test_y: torch.Tensor, forget: ForgetSpec) -> np.ndarray:
    """Test samples that TA (and the MIA's non-members) use.

    For class-wise forgetting, only the retained classes' test samples, as in the OPTML-Group
    repos and the paper's class-wise table (where Retrain's TA is 95.1, not ~85).
    """
    labels = test_y.cpu().numpy()
    return np.flatnonzero(~np.isin(labels, forget.classes)) if forget.classes else np.arange(len(labels))


def evaluate_split(model, data: data_mod.DeviceData, split: Split, forget: ForgetSpec,
                   autocast=None) -> dict[str, float]:
    """The final, full-set evaluation, the same for runs and `coun-lab eval`.

    It runs under the run's precision: on a CPU with bf16 support, inference in fp32 is 3x slower
    (290 vs 970 img/s) and the shipped Fashion-MNIST model's TA is 90.33% either way (14 of 10,000
    predictions differ). `--precision fp32` gives a pure float32 evaluation.
    """
    device = data.train_x.device
    r, f = (torch.from_numpy(a).to(device) for a in (split.retain, split.forget))
    t = torch.from_numpy(test_rows(data.test_y, forget)).to(device)
    model.to(memory_format=torch.channels_last)
    try:
        return metrics.evaluate(model, data.train_x[r], data.train_y[r], data.train_x[f], data.train_y[f],
                                data.test_x[t], data.test_y[t], autocast=autocast, seed=forget.seed)
    finally:
        model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors


def run(prep: Prepared, cancel=None) -> Iterator[Event]:
    """Train as the spec says, yielding events; never raises for a failing run (yields Failed)."""
    try:
        yield from _train(prep, cancel)
    except UserError as exc:
        yield Failed(str(exc))
    except torch.OutOfMemoryError:
        yield Failed(f"out of memory on {prep.device}: lower --batch-size or use another device")
    except Exception as exc:  # a failing run reports its reason; the app and the sweep keep going
        yield Failed(f"{type(exc).__name__}: {exc}")


def lr_at(hp: dict, step: int, total: int) -> float:
    base, floor = float(hp["lr"]), float(hp["min_lr"])
    if hp["schedule"] == "cosine":
        return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * step / max(1, total)))
    if hp["schedule"] == "step":  # x0.1 at 50% and 75% of training, the paper's original recipe
        return base * (0.1 ** ((step >= 0.5 * total) + (step >= 0.75 * total)))
    return base


def steps_in(n: int, batch_size: int) -> int:
    # A last batch of a single sample is dropped: BatchNorm cannot train on it.
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


class _Probes:
    """Fixed, seeded subsets used to evaluate during a run (full sets are used at the end)."""

    def __init__(self, prep: Prepared, data: data_mod.DeviceData, autocast):
        rng = np.random.default_rng(prep.spec.seed)
        size = prep.spec.probe_size

        def pick(idx):
            return np.sort(rng.choice(idx, size, replace=False)) if len(idx) > size else idx

        r, f = pick(prep.split.retain), pick(prep.split.forget)
        t = pick(test_rows(data.test_y, prep.spec.forget))
        self.sets = {"retain": (data.train_x[r], data.train_y[r]), "forget": (data.train_x[f], data.train_y[f]),
                     "test": (data.test_x[t], data.test_y[t])}
        self.autocast, self.seed = autocast, prep.spec.seed

    def evaluate(self, model) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
        out = {name: metrics.predict(model, x, autocast=self.autocast, want_features=name != "test")
               for name, (x, _) in self.sets.items()}
        (pr, zr), (pf, zf), pt = out["retain"], out["forget"], out["test"]
        yr, yf, yt = (self.sets[k][1] for k in ("retain", "forget", "test"))
        result = {"RA": metrics.accuracy(pr, yr),
                  "UA": 100.0 - metrics.accuracy(pf, yf) if len(yf) else float("nan"),
                  "TA": metrics.accuracy(pt, yt),
                  "MIA": metrics.mia_efficacy(metrics.confidence(pr, yr), metrics.confidence(pt, yt),
                                              metrics.confidence(pf, yf), seed=self.seed)}
        feats = torch.cat([zr[:EMBED_RETAIN], zf[:EMBED_FORGET]]).numpy()
        labels = torch.cat([yr[:EMBED_RETAIN], yf[:EMBED_FORGET]]).cpu().numpy()
        is_forget = np.r_[np.zeros(min(len(yr), EMBED_RETAIN), bool), np.ones(min(len(yf), EMBED_FORGET), bool)]
        return result, feats, labels, is_forget


def pca_2d(features: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    if len(features) < 2:
        return np.zeros((len(features), 2))
    xy = PCA(n_components=2, random_state=0).fit_transform(features)
    # PCA's sign is arbitrary: fix it so successive snapshots do not flip.
    signs = np.sign(xy[np.abs(xy).argmax(0), [0, 1]])
    return xy * np.where(signs == 0, 1, signs)


def _epoch_events(prep: Prepared, probes: _Probes, epoch: int) -> Iterator[Event]:
    probe_metrics, feats, labels, is_forget = probes.evaluate(prep.model)
    gap, avg = metrics.gaps(probe_metrics, prep.reference)
    yield EpochMetrics(epoch, probe_metrics, None if gap is None else {**gap, "avg": avg})
    yield Embedding(epoch, np.round(pca_2d(feats), 4).tolist(), labels.tolist(), is_forget.tolist(), feats)


def _train(prep: Prepared, cancel) -> Iterator[Event]:
    start = time.perf_counter()
    hp, device, model, method = prep.hparams, prep.device, prep.model, prep.method
    seed = prep.spec.seed
    torch.manual_seed(seed)
    data = data_mod.prepare(prep.dataset, prep.meta["mean"], prep.meta["std"], device)
    autocast = autocast_for(device, prep.spec.precision)
    model.to(memory_format=torch.channels_last).train()

    gen_order = torch.Generator().manual_seed(seed)  # batch order, on the CPU
    gen_aug = torch.Generator(device=device).manual_seed(seed + 1)  # augmentation of the main batch
    gen_cl = torch.Generator(device=device).manual_seed(seed + 2)  # CL's view 2: --cl changes nothing else
    retain = torch.from_numpy(prep.split.retain).to(device)
    forget = torch.from_numpy(prep.split.forget).to(device)
    bs = int(hp["batch_size"])
    ctx = Context(model, data, retain, forget, hp, prep.meta["num_classes"], device, autocast,
                  metrics.FlopMeter())

    # The pool of the main stream and its labels.
    labels = data.train_y
    if method.stream == "forget":
        pool = forget
    elif method.stream == "mixed":
        pool = torch.cat([retain, forget])
        labels = labels.clone()
        labels[forget] = method.relabel(ctx, labels[forget], torch.Generator(device=device).manual_seed(seed + 3))
    else:
        pool = retain
    is_retain_sample = torch.zeros(len(data.train_y), dtype=torch.bool, device=device)
    is_retain_sample[retain] = True
    steps_per_epoch = steps_in(len(pool), bs)
    ctx.steps_per_epoch = steps_per_epoch
    epochs = int(hp["epochs"])
    total = epochs * steps_per_epoch
    yield Started(method.name + ("+cl" if prep.spec.cl and not method.always_cl else ""), epochs,
                  steps_per_epoch, len(retain), len(forget), str(device), dict(hp))

    probes = _Probes(prep, data, autocast)
    yield from _epoch_events(prep, probes, 0)
    method.setup(ctx)
    params = [p for p in model.parameters()]
    opt = torch.optim.SGD(params, lr=float(hp["lr"]), momentum=float(hp["momentum"]),
                          weight_decay=float(hp["weight_decay"]))
    ctx.optimizer = opt
    cyclers = {"forget": _Cycler(forget, bs, gen_order), "retain": _Cycler(retain, bs, gen_cl)}
    images = 0

    for epoch in range(epochs):
        ctx.epoch = epoch
        order = pool[torch.randperm(len(pool), generator=gen_order).to(device)]
        for i in range(steps_per_epoch):
            if cancel is not None and cancel.is_set():
                yield Cancelled(ctx.step)
                return
            idx = order[i * bs:(i + 1) * bs]
            batch = Batch(_view(data, idx, gen_aug), labels[idx], is_retain_sample[idx])
            if method.stream == "retain+forget":
                fidx = cyclers["forget"].next()
                batch.forget_x, batch.forget_y = _view(data, fidx, gen_aug), data.train_y[fidx]
            lr = lr_at(hp, ctx.step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            signature = (tuple(batch.x.shape), None if batch.forget_x is None else tuple(batch.forget_x.shape),
                         int(batch.is_retain.sum()) if prep.use_cl else None)
            with ctx.flops.measure(signature):
                with autocast():
                    logits, z = model.forward_with_features(batch.x)
                losses = method.loss(ctx, batch, logits.float())
                if prep.use_cl:
                    losses["cl"] = float(hp["lambda"]) * _cl_term(ctx, batch, idx, z, cyclers["retain"], gen_cl)
                loss = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
            if not torch.isfinite(loss):
                yield Failed(f"loss became {loss.item()} at step {ctx.step + 1} (epoch {epoch + 1}); "
                             "lower --lr")
                return
            method.before_step(ctx)
            opt.step()
            method.after_step(ctx)
            ctx.step += 1
            images += len(idx) + (0 if batch.forget_x is None else len(batch.forget_x))
            values = {k: float(v.detach()) for k, v in losses.items()}
            values["total"] = float(loss.detach())
            yield Step(ctx.step, epoch + 1, values, lr, images, ctx.flops.total, time.perf_counter() - start)
        yield from _epoch_events(prep, probes, epoch + 1)

    final = evaluate_split(model, data, prep.split, prep.spec.forget, autocast)
    gap, avg = metrics.gaps(final, prep.reference) if len(forget) else (None, None)
    yield Done({**final, "gap": gap, "avg_gap": avg}, time.perf_counter() - start, ctx.flops.total)


def _view(data: data_mod.DeviceData, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return data_mod.augment(data.train_x[idx], data, gen).contiguous(memory_format=torch.channels_last)


def _cl_term(ctx: Context, batch: Batch, idx, z1, retain_cycler, gen) -> torch.Tensor:
    """CoUn's cross-view InfoNCE on the step's retain samples (view 1 reuses the main forward)."""
    data = ctx.data
    rows = batch.is_retain
    if int(rows.sum()) >= 2:
        ridx, z1 = idx[rows], z1[rows]
    else:  # a forget-only stream (GA): draw a retain batch of its own, both views
        ridx = retain_cycler.next()
        with ctx.autocast():
            z1 = ctx.model.features(_view(data, ridx, gen))
    with ctx.autocast():
        z2 = ctx.model.features(_view(data, ridx, gen))
    return info_nce(z1, z2, float(ctx.hparams["tau"]))


class _Cycler:
    """Endless batches from an index set, reshuffled on every pass."""

    def __init__(self, indices: torch.Tensor, batch_size: int, gen: torch.Generator):
        self.indices, self.bs, self.gen, self.order, self.pos = indices, batch_size, gen, None, 0

    def next(self) -> torch.Tensor:
        if self.order is None or self.pos + 2 > len(self.order):  # no one-sample batches
            perm = torch.randperm(len(self.indices), generator=self.gen, device=self.gen.device)
            self.order, self.pos = self.indices[perm.to(self.indices.device)], 0
        out = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return out
