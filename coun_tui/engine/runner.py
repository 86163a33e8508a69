"""Prepare a run (load, validate) and execute it as a stream of typed events.

One loop serves every method, original training included (`coun-lab train` is Retrain with an
empty forget set): a method only supplies its loss and optional hooks (see methods/base.py).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from coun_tui.engine import UserError, checkpoint, metrics
from coun_tui.engine import data as data_mod
from coun_tui.engine import model as model_mod
from coun_tui.engine import reference as ref_mod
from coun_tui.engine.events import Cancelled, Done, Embedding, EpochMetrics, Event, Failed, Started, Step
from coun_tui.engine.forget import ForgetSpec, Split, check_seed, make_split
from coun_tui.engine.methods import Batch, Context, Method, check_hparams, check_method
from coun_tui.engine.methods.base import info_nce
from coun_tui.engine.records import METRICS, TEST_HALVES, describe_half, method_label, read_metrics

EMBED_RETAIN, EMBED_FORGET = 300, 150  # probe points drawn in the embedding scatter


@dataclass
class RunSpec:
    """Everything needed to repeat a run; saved as run.toml."""

    method: str = "coun"
    model: str | None = None  # checkpoint to unlearn; None trains a new model (`coun-lab train`)
    dataset: str | None = None  # default: the checkpoint's own dataset
    data_root: str | None = None
    subset: int | None = None  # only when training a new model; a checkpoint records its own
    subset_seed: int | None = None  # the subset's draw when training a new model (default: seed)
    forget: ForgetSpec = field(default_factory=ForgetSpec)
    cl: bool = False
    hparams: dict[str, Any] = field(default_factory=dict)  # overrides of the method's defaults
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    reference: str | None = None  # a Retrain run directory or checkpoint for the gaps
    probe_size: int = 2048  # samples per set evaluated each epoch: all of digits' (see _Probes)
    # "val" or "report": TA and the MIA's non-members on that half of the test set, split once by
    # half_seed (see half_rows); None: the whole test set
    test_half: str | None = None
    half_seed: int = 0
    # A foreign checkpoint's input normalisation, when its file does not record it (--mean/--std)
    mean: list[float] | None = None
    std: list[float] | None = None
    # Experiment trackers the run logs to, as engine/trackers.py's parse_target writes them
    log: list[str] = field(default_factory=list)


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
    reference_view: ref_mod.View | None = None  # the Retrain's reference.npz, when it kept one

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


def autocast_for(device: torch.device, precision: str) -> metrics.Autocast:
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


def merged_hparams(method_cls: type[Method], meta: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults, Retrain's from the checkpoint's recipe, then `overrides`: every value
    checked against the method's declarations (one clear line if one is out of range)."""
    hp = method_cls.all_defaults()
    if method_cls.from_scratch and isinstance(meta.get("recipe"), dict):  # Retrain = the original recipe
        recipe = {k: v for k, v in meta["recipe"].items() if k in hp}
        hp.update(check_hparams(method_cls, recipe, lambda key: f"the checkpoint's recipe {key}"))
    hp.update(check_hparams(method_cls, overrides))
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
        meta.update(checkpoint.resolve_normalisation(meta, name, spec.mean, spec.std))
    else:
        if not spec.dataset:
            raise UserError("no model and no dataset given; pass --model FILE or --dataset NAME")
        dataset = data_mod.load(spec.dataset, spec.data_root, spec.subset, _subset_seed(spec))
        mean, std = dataset.channel_stats()
        meta = {"arch": "resnet18", "stem": "cifar", "in_channels": dataset.in_channels,
                "num_classes": len(dataset.classes), "dataset": dataset.name, "subset": dataset.subset,
                "subset_seed": dataset.subset_seed, "mean": mean, "std": std,
                "normalisation": "the training split's per-channel statistics"}
        model = None
    meta["classes"] = dataset.classes
    return model, meta, dataset


def _subset_seed(spec: RunSpec) -> int:
    """A new model's subset is drawn with its own seed, unless the spec keeps one subset for many
    seeds (a population of originals retrained like a shipped subset model)."""
    return spec.seed if spec.subset_seed is None else spec.subset_seed


def _check_settings(spec: RunSpec) -> tuple[torch.device, type[Method]]:
    """What can be checked without the checkpoint or data: device, precision, method, its
    hyperparameters' names and values, the seed and the +CL rules."""
    device = resolve_device(spec.device)
    autocast_for(device, spec.precision)  # an unknown or unsupported precision fails here, not mid-run
    method_cls = check_method(spec.method, spec.cl, spec.hparams, spec.seed)  # before the model and data load
    if spec.test_half not in (None, *TEST_HALVES):
        raise UserError(f"test half {spec.test_half!r}: use val (tuning) or report (final tables)")
    check_seed(spec.half_seed)
    return device, method_cls


def _check_split(spec: RunSpec, split: Split) -> None:
    if len(split.retain) < 2:
        raise UserError("the forget set covers (almost) the whole train split: nothing left to retain")
    if spec.model and len(split.forget) == 0:
        raise UserError("nothing to forget: pass --forget-class, --forget-fraction or --forget-indices")


def _check_reference(spec: RunSpec, split: Split,
                     n_test: int) -> tuple[dict[str, float] | None, ref_mod.View | None]:
    """The Retrain run given as reference, checked against this split: (its scores, its view)."""
    if not spec.reference:
        return None, None
    from coun_tui.engine.runs import load_reference

    reference = load_reference(spec.reference, split)  # first: "not a finished run" before its halves
    _check_reference_half(spec)
    return reference, ref_mod.load_view(spec.reference, split.forget, n_test)


def _check_reference_half(spec: RunSpec) -> None:
    """A gap compares TA (and the MIA) on the same test samples: the reference must be a Retrain
    run measured on the same half of the test set, split by the same seed."""
    path = Path(spec.reference or "")
    if path.is_dir():  # its metrics.json, which a Ray task's copy of the reference carries too (run.toml not)
        ref = read_metrics(path).as_dict()
        theirs = describe_half(ref.get("test_half"), int(ref.get("half_seed") or 0))
    else:
        theirs = describe_half(None, 0)
    ours = describe_half(spec.test_half, spec.half_seed)
    if theirs != ours:
        raise UserError(f"reference {path} measures TA on {theirs} but this run on {ours}; "
                        "use a Retrain run made on the same test half")


def prepare(spec: RunSpec) -> Prepared:
    """Load and check everything a run needs; raises UserError with one clear line on bad input."""
    device, method_cls = _check_settings(spec)
    model, meta, dataset = load_source(spec)
    split = make_split(spec.forget, dataset.train_y.numpy())
    _check_split(spec, split)
    hparams = merged_hparams(method_cls, meta, spec.hparams)
    # run.toml records the run as made: the method's own name, the model's full path, typed values.
    spec = replace(spec, method=method_cls.name, model=str(Path(spec.model).resolve()) if spec.model else None,
                   hparams={key: hparams[key] for key in spec.hparams})
    if model is None or method_cls.from_scratch:
        torch.manual_seed(spec.seed)
        model = model_mod.build(meta["num_classes"], meta["in_channels"], meta["stem"])
    reference, view = _check_reference(spec, split, len(dataset.test_y))
    return Prepared(spec, model.to(device), meta, dataset, split, method_cls(hparams), hparams, device,
                    reference, view)


@functools.lru_cache(maxsize=4)
def _labels(name: str, root: str | None, subset: int | None, subset_seed: int) -> tuple[np.ndarray, int]:
    """A dataset's train labels and test size (a sweep checks many runs on one dataset)."""
    dataset = data_mod.load(name, root, subset, subset_seed)
    return dataset.train_y.numpy(), len(dataset.test_y)


def check(spec: RunSpec) -> str:
    """The checks a launcher makes before it starts a job, so that bad input is one line and
    nothing is written: what `prepare` checks (the device, the method and its hyperparameters,
    the seed, the checkpoint and its normalisation, the forget set against the dataset's labels,
    and the Retrain reference against that split) without moving anything to the device.
    Returns the device's queue name (e.g. "cpu", "cuda:0")."""
    device, method_cls = _check_settings(spec)
    meta = checkpoint.load(spec.model)[1] if spec.model else {}  # the weights too: a broken file fails here
    merged_hparams(method_cls, meta, spec.hparams)
    name = spec.dataset or meta.get("dataset")
    if spec.model and not name:
        raise UserError(f"{spec.model} does not say which dataset it was trained on; pass --dataset")
    if spec.model:  # a foreign model's normalisation, before it runs
        checkpoint.resolve_normalisation(meta, str(name), spec.mean, spec.std)
        key = (name, spec.data_root, meta.get("subset"), meta.get("subset_seed") or 0)
    elif name:
        key = (name, spec.data_root, spec.subset, _subset_seed(spec))
    else:
        raise UserError("no model and no dataset given; pass --model FILE or --dataset NAME")
    labels, n_test = _labels(*key)
    split = make_split(spec.forget, labels)
    _check_split(spec, split)
    _check_reference(spec, split, n_test)
    return f"cuda:{device.index or 0}" if device.type == "cuda" else device.type


def evaluate_checkpoint(spec: RunSpec) -> tuple[dict[str, Any], Split, dict[str, Any]]:
    """Full-set RA, UA, TA, MIA (+ gaps with a reference) of spec.model, at spec.precision.

    Without forget flags, an unlearned checkpoint is evaluated on its own recorded forget set,
    and any other checkpoint on the split of the Retrain run given as reference.
    """
    check_seed(spec.seed)
    model, meta, dataset = load_source(spec)
    if model is None:
        raise UserError("nothing to evaluate: pass --model FILE")
    forget = spec.forget
    no_flags = not (forget.classes or forget.fraction is not None or forget.indices_file or forget.indices)
    if no_flags and meta.get("forget") is not None:  # its own, indices included
        forget = ForgetSpec.from_dict(meta["forget"], f"{Path(spec.model or '').name} metadata forget")
    elif no_flags and spec.reference:
        forget = _forget_of_reference(spec.reference)
    split = make_split(forget, dataset.train_y.numpy())
    device = resolve_device(spec.device)
    data = data_mod.prepare(dataset, meta["mean"], meta["std"], device)
    model.to(device)
    reference = view = None
    if spec.reference:
        from coun_tui.engine.runs import load_reference

        reference = load_reference(spec.reference, split)
        view = ref_mod.load_view(spec.reference, split.forget, len(dataset.test_y))
    half = (spec.test_half, spec.half_seed)
    rows = probe_rows(split, len(data.test_y), spec.seed, spec.probe_size, view, half)
    result, _ = evaluate_split(model, data, split, forget, autocast_for(device, spec.precision), rows, view,
                               spec.seed, half)
    out: dict[str, Any] = dict(result)
    if reference:
        gap, avg = metrics.gaps(result, reference)
        out.update(gap=gap, avg_gap=avg)
    return out, split, meta


def _forget_of_reference(reference: str) -> ForgetSpec:
    """The forget set a Retrain reference was made on: its run's split.npz (and the recorded seed,
    which the MIA's draw uses), or its checkpoint's record."""
    import json

    path = Path(reference)
    if (path / "split.npz").is_file():
        try:
            seed = int(json.loads((path / "metrics.json").read_text())["forget"]["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            seed = 0
        return ForgetSpec(indices_file=str(path / "split.npz"), seed=seed)
    if path.is_file():
        recorded = checkpoint.read_meta(path).get("forget")
        if isinstance(recorded, dict):
            return ForgetSpec.from_dict(recorded)
    raise UserError(f"--reference {reference} records no forget set; pass --forget-class, "
                    "--forget-fraction or --forget-indices")


def half_rows(n_test: int, half: str | None, seed: int) -> np.ndarray:
    """The test samples of one half (sorted; every one when `half` is None). The test set is split
    once, by `seed`, into a validation half that tuning reads in place of the whole test set and a
    report half that the final tables read, so a tuned table never scores on what chose its
    hyperparameters."""
    if half is None:
        return np.arange(n_test)
    order = np.random.default_rng(seed).permutation(n_test)
    return np.sort(order[:n_test // 2] if half == "val" else order[n_test // 2:])


def test_rows(test_y: torch.Tensor, forget: ForgetSpec, half: str | None = None, half_seed: int = 0) -> np.ndarray:
    """Test samples that TA (and the MIA's non-members) use: those of `half` (see half_rows).

    For class-wise forgetting, only the retained classes' test samples, as in the OPTML-Group
    repos and the paper's class-wise table (where Retrain's TA is 95.1, not ~85).
    """
    labels = test_y.cpu().numpy()
    rows = half_rows(len(labels), half, half_seed)
    return rows[~np.isin(labels[rows], forget.classes)] if forget.classes else rows


def probe_rows(split: Split, n_test: int, seed: int, size: int, reference: ref_mod.View | None = None,
               half: tuple[str | None, int] = (None, 0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed, seeded subsets (retain, forget, test of every class) evaluated during a run; a
    Retrain keeps its model's view of the forget and test ones, and a run measured against it
    uses that Retrain's rows instead, so both are compared on the very same samples."""
    rng = np.random.default_rng(seed)
    rows = (ref_mod.pick(rng, split.retain, size), ref_mod.pick(rng, split.forget, size),
            ref_mod.pick(rng, half_rows(n_test, *half), size))
    return rows if reference is None else (rows[0], reference.forget_idx, reference.test_idx)


def _positions(of: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Where each value of `of` sits in `within` (every value is there)."""
    order = np.argsort(within)
    return order[np.searchsorted(within[order], of)]


def evaluate_split(model: model_mod.ResNet18, data: data_mod.DeviceData, split: Split, forget: ForgetSpec,
                   autocast: metrics.Autocast | None = None,
                   rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, reference: ref_mod.View | None = None,
                   seed: int = 0, half: tuple[str | None, int] = (None, 0)) -> tuple[dict[str, float], ref_mod.View]:
    """The final, full-set evaluation, the same for runs and `coun-lab eval`: RA, UA, TA, MIA and
    the MIA variants on the full sets, and the model's view of the `rows` of probe_rows (the
    forget and test samples a Retrain keeps), compared with `reference` when there is one.

    It runs under the run's precision: on a CPU with bf16 support, inference in fp32 is 3x slower
    (290 vs 970 img/s) and the shipped Fashion-MNIST model's TA is 90.33% either way (14 of 10,000
    predictions differ). `--precision fp32` gives a pure float32 evaluation.
    """
    device = data.train_x.device
    r, f = (torch.from_numpy(a).to(device) for a in (split.retain, split.forget))
    rows = rows or probe_rows(split, len(data.test_y), seed, 512, reference, half)
    model.to(memory_format=torch.channels_last)
    try:
        pr = metrics.predict(model, data.train_x[r], autocast=autocast)
        pf, zf = metrics.predict(model, data.train_x[f], autocast=autocast, want_features=True)
        pt, zt = metrics.predict(model, data.test_x, autocast=autocast, want_features=True)  # every class
    finally:
        model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
    keep = torch.from_numpy(test_rows(data.test_y, forget, *half))  # TA: the retained classes' test samples
    yr, yf, yt = data.train_y[r].cpu(), data.train_y[f].cpu(), data.test_y.cpu()
    result = metrics.scores(pr, yr, pf, yf, pt[keep], yt[keep], seed=forget.seed)
    at = _positions(rows[1], split.forget)
    view = ref_mod.View.of(rows[1], rows[2], pf[at], zf[at], zt[rows[2]])
    result.update(ref_mod.compare(view, reference, data.train_y.cpu().numpy(), yt.numpy()))
    return result, view


class CancelFlag(Protocol):
    """What a run polls every step to stop early (a threading.Event, or a job's cancel file)."""

    def is_set(self) -> bool: ...


def run(prep: Prepared, cancel: CancelFlag | None = None) -> Iterator[Event]:
    """Train as the spec says, yielding events; never raises for a failing run (yields Failed)."""
    try:
        yield from _train(prep, cancel)
    except UserError as exc:
        yield Failed(str(exc))
    except torch.OutOfMemoryError:
        yield Failed(f"out of memory on {prep.device}: lower --batch-size or use another device")
    except Exception as exc:  # a failing run reports its reason; the app and the sweep keep going
        yield Failed(f"{type(exc).__name__}: {exc}")


def lr_at(hp: dict[str, Any], step: int, total: int) -> float:
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
    """Fixed, seeded subsets used to evaluate during a run (full sets are used at the end).

    A set no larger than probe_size is used whole, in the final evaluation's order, and the MIA's
    first draw uses the final's seed: so on digits the last epoch's numbers are the final ones.
    The MIA also reports its spread over balanced draws (MIA_sd): a probe estimate, with its doubt.
    """

    def __init__(self, prep: Prepared, data: data_mod.DeviceData, autocast: metrics.Autocast):
        r, f, t = probe_rows(prep.split, len(data.test_y), prep.spec.seed, prep.spec.probe_size,
                             prep.reference_view, (prep.spec.test_half, prep.spec.half_seed))
        self.rows = (r, f, t)
        self.sets = {"retain": (data.train_x[r], data.train_y[r]), "forget": (data.train_x[f], data.train_y[f]),
                     "test": (data.test_x[t], data.test_y[t])}
        # TA and the MIA's non-members: the retained classes' test samples among the test rows
        self.keep = torch.from_numpy(~np.isin(data.test_y[t].cpu().numpy(), prep.spec.forget.classes))
        self.train_y, self.test_y = data.train_y.cpu().numpy(), data.test_y.cpu().numpy()
        self.autocast, self.reference = autocast, prep.reference_view
        self.seed = prep.spec.forget.seed  # the final MIA's seed

    def evaluate(self, model: model_mod.ResNet18) -> tuple[dict[str, float], dict[str, float], np.ndarray, np.ndarray,
                                                         np.ndarray]:
        out = {name: metrics.predict(model, x, autocast=self.autocast, want_features=True)
               for name, (x, _) in self.sets.items()}
        (pr, zr), (pf, zf), (pt, zt) = out["retain"], out["forget"], out["test"]
        yr, yf, yt = (self.sets[k][1].cpu() for k in ("retain", "forget", "test"))
        scores = metrics.scores(pr, yr, pf, yf, pt[self.keep], yt[self.keep], seed=self.seed)
        result = {k: scores.pop(k) for k in METRICS}
        result["MIA_sd"] = float("nan")
        if len(yf):  # the first draw is the final's MIA on sets this small; the spread is its doubt
            result["MIA"], result["MIA_sd"] = metrics.mia_spread(
                metrics.confidence(pr, yr), metrics.confidence(pt[self.keep], yt[self.keep]),
                metrics.confidence(pf, yf), seed=self.seed)
        view = ref_mod.View.of(self.rows[1], self.rows[2], pf, zf, zt)
        extra = {**scores, **ref_mod.compare(view, self.reference, self.train_y, self.test_y)}
        feats = torch.cat([zr[:EMBED_RETAIN], zf[:EMBED_FORGET]]).numpy()
        labels = torch.cat([yr[:EMBED_RETAIN], yf[:EMBED_FORGET]]).numpy()
        is_forget = np.r_[np.zeros(min(len(yr), EMBED_RETAIN), bool), np.ones(min(len(yf), EMBED_FORGET), bool)]
        return result, extra, feats, labels, is_forget


def pca_2d(features: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    if len(features) < 2:
        return np.zeros((len(features), 2))
    xy = PCA(n_components=2, random_state=0).fit_transform(features)
    # PCA's sign is arbitrary: fix it so successive snapshots do not flip.
    signs = np.sign(xy[np.abs(xy).argmax(0), [0, 1]])
    fixed: np.ndarray = xy * np.where(signs == 0, 1, signs)
    return fixed


def _epoch_events(prep: Prepared, probes: _Probes, epoch: int) -> Iterator[Event]:
    probe_metrics, extra, feats, labels, is_forget = probes.evaluate(prep.model)
    gap, avg = metrics.gaps(probe_metrics, prep.reference)
    yield EpochMetrics(epoch, probe_metrics, None if gap is None or avg is None else {**gap, "avg": avg}, extra)
    yield Embedding(epoch, np.round(pca_2d(feats), 4).tolist(), labels.tolist(), is_forget.tolist(), feats)


def _train(prep: Prepared, cancel: CancelFlag | None) -> Iterator[Event]:
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
                  metrics.FlopMeter(), seed=seed)

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
    yield Started(method_label(method.name, prep.spec.cl and not method.always_cl), epochs,
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
        method.before_epoch(ctx)
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
            batch = method.extend_batch(ctx, batch)
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
                loss = functools.reduce(torch.add, losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
            values = _read_losses(losses, loss)  # the step's one wait for the device
            if not math.isfinite(values["total"]):
                yield Failed(f"loss became {values['total']} at step {ctx.step + 1} (epoch {epoch + 1}); "
                             "lower --lr" + (" or raise --tau" if prep.use_cl else ""))
                return
            method.before_step(ctx)
            opt.step()
            method.after_step(ctx)
            ctx.step += 1
            trained = len(batch.x) + (0 if batch.forget_x is None else len(batch.forget_x))
            images += trained
            ctx.flops.count_images(trained=trained)
            yield Step(ctx.step, epoch + 1, values, lr, images, ctx.flops.total, time.perf_counter() - start)
        yield from _epoch_events(prep, probes, epoch + 1)

    final, view = evaluate_split(model, data, prep.split, prep.spec.forget, autocast, probes.rows,
                                 prep.reference_view, seed, (prep.spec.test_half, prep.spec.half_seed))
    gap, avg = metrics.gaps(final, prep.reference) if len(forget) else (None, None)
    paper = ctx.flops.paper_count(metrics.forward_flops(model, tuple(data.train_x.shape[1:])))
    yield Done({**final, "gap": gap, "avg_gap": avg}, time.perf_counter() - start, ctx.flops.total,
               paper_flops=paper, reference=view if method.from_scratch and len(forget) else None)


def _read_losses(losses: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, float]:
    """The step's loss components and total as Python floats, copied to the host in one transfer
    (a float() per component would wait for the device once each)."""
    parts = [v.detach().float().reshape(()) for v in losses.values()] + [total.detach().float().reshape(())]
    numbers = torch.stack(parts).tolist()
    return {**dict(zip(losses, numbers[:-1], strict=True)), "total": numbers[-1]}


def _view(data: data_mod.DeviceData, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return data_mod.augment(data.train_x[idx], data, gen).contiguous(memory_format=torch.channels_last)


def _cl_term(ctx: Context, batch: Batch, idx: torch.Tensor, z1: torch.Tensor, retain_cycler: _Cycler,
             gen: torch.Generator) -> torch.Tensor:
    """CoUn's cross-view InfoNCE on the step's retain samples (view 1 reuses the main forward)."""
    data = ctx.data
    rows = batch.is_retain[:len(idx)]  # rows a method appended (UNSIR's noise) are not samples
    if int(rows.sum()) >= 2:
        ridx, z1 = idx[rows], z1[:len(idx)][rows]
    else:  # a forget-only stream (GA): draw a retain batch of its own, both views
        ridx = retain_cycler.next()
        with ctx.autocast():
            z1 = ctx.model.features(_view(data, ridx, gen))
        ctx.flops.count_images(trained=len(ridx))
    with ctx.autocast():
        z2 = ctx.model.features(_view(data, ridx, gen))
    ctx.flops.count_images(forward_only=len(ridx))  # the paper counts view 2's forward only
    return info_nce(z1, z2, float(ctx.hparams["tau"]))


class _Cycler:
    """Endless batches from an index set, reshuffled on every pass."""

    def __init__(self, indices: torch.Tensor, batch_size: int, gen: torch.Generator):
        self.indices, self.bs, self.gen, self.pos = indices, batch_size, gen, 0
        self.order: torch.Tensor | None = None

    def next(self) -> torch.Tensor:
        if self.order is None or self.pos + 2 > len(self.order):  # no one-sample batches
            perm = torch.randperm(len(self.indices), generator=self.gen, device=self.gen.device)
            self.order, self.pos = self.indices[perm.to(self.indices.device)], 0
        out = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return out
