"""The one metrics module: RA, UA, TA, MIA efficacy, Avg. Gap and FLOPs, all in percent/FLOPs, and
the measures that look past the logits (agreement with Retrain, CKA, a k-NN probe, MIA variants).

Definitions follow the CoUn paper and the OPTML-Group repos (see shared/reference/coun-method.md):
RA = accuracy on the retain set, TA = accuracy on the test set, UA = 100 - accuracy on the forget
set, MIA = % of forget samples that a confidence-based SVC attack calls non-members.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

from coun_tui.engine.model import ResNet18
from coun_tui.engine.records import METRICS  # the names, defined once with the run record

# A zero-argument factory of the context a forward pass runs in (bf16 autocast, or nothing).
Autocast = Callable[[], AbstractContextManager[Any]]


@overload
def predict(model: ResNet18, x: torch.Tensor, batch_size: int | None = ..., autocast: Autocast | None = ...,
            want_features: Literal[False] = ...) -> torch.Tensor: ...
@overload
def predict(model: ResNet18, x: torch.Tensor, batch_size: int | None = ..., autocast: Autocast | None = ...,
            *, want_features: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def predict(model: ResNet18, x: torch.Tensor, batch_size: int | None = None, autocast: Autocast | None = None,
            want_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (float32, on the CPU) and optionally penultimate features."""
    # 128 is the fastest CPU batch for ResNet-18 on 28x28 (301 fp32 / 944 bf16 img/s against
    # 222 / 672 at 1024); GPUs want big batches.
    batch_size = batch_size or (128 if x.device.type == "cpu" else 1024)
    was_training = model.training
    model.eval()
    probs, feats = [], []
    for i in range(0, len(x), batch_size):
        with autocast() if autocast else nullcontext():
            logits, z = model.forward_with_features(x[i:i + batch_size])
        probs.append(F.softmax(logits.float(), dim=1).cpu())
        if want_features:
            feats.append(z.float().cpu())
    model.train(was_training)
    p = torch.cat(probs) if probs else torch.empty(0, 0)
    return (p, torch.cat(feats) if feats else torch.empty(0, 512)) if want_features else p


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return 100.0 * (probs.argmax(1) == labels.cpu()).double().mean().item()


def confidence(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """p[y]: the softmax probability of the true label, the MIA's one feature."""
    if len(labels) == 0:
        return np.empty(0)
    return probs.gather(1, labels.cpu().view(-1, 1)).squeeze(1).numpy().astype(np.float64)


def mia_efficacy(conf_retain: np.ndarray, conf_test: np.ndarray, conf_forget: np.ndarray,
                 seed: int = 0) -> float:
    """% of forget samples predicted non-member by an SVC(C=3, gamma="auto", rbf) on confidence.

    Members are retain samples and non-members test samples, balanced to the same count (a seeded
    random subset of the larger side), as in the OPTML-Group repos' SVC_MIA.
    """
    from sklearn.svm import SVC

    if len(conf_forget) == 0:
        return float("nan")
    n = min(len(conf_retain), len(conf_test))
    rng = np.random.default_rng(seed)
    members = conf_retain[rng.choice(len(conf_retain), n, replace=False)] if len(conf_retain) > n else conf_retain
    nonmembers = conf_test[rng.choice(len(conf_test), n, replace=False)] if len(conf_test) > n else conf_test
    x = np.concatenate([members, nonmembers]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return 100.0 * float((clf.predict(conf_forget.reshape(-1, 1)) == 0).mean())


MIA_DRAWS = 5  # balanced draws of the attack's training samples behind a live MIA's spread
MIA_LIVE_MEMBERS = 1024  # members (and as many non-members) per live draw: an SVC fit costs O(n^2)


def mia_spread(conf_retain: np.ndarray, conf_test: np.ndarray, conf_forget: np.ndarray, seed: int = 0,
               draws: int = MIA_DRAWS, cap: int = MIA_LIVE_MEMBERS) -> tuple[float, float]:
    """The MIA during a run: the first draw is mia_efficacy's with `seed` (the final evaluation's,
    when the balanced sets hold at most `cap` samples each), and the standard deviation over
    `draws` balanced draws of the members and non-members says how much the attack depends on
    which samples train it. On a class whose forget samples all get ~0 confidence it is
    all-or-nothing, 0 or 100 by the draw: then the spread is ~50, and so is the final's doubt."""
    values = []
    for k in range(draws):
        members, nonmembers = conf_retain, conf_test
        if min(len(members), len(nonmembers)) > cap:
            rng = np.random.default_rng(seed + k)
            members = members[rng.choice(len(members), cap, replace=False)]
            nonmembers = nonmembers[rng.choice(len(nonmembers), cap, replace=False)]
        values.append(mia_efficacy(members, nonmembers, conf_forget, seed=seed + k))
    return values[0], float(np.std(values))


def scores(probs_retain: torch.Tensor, y_retain: torch.Tensor, probs_forget: torch.Tensor, y_forget: torch.Tensor,
           probs_test: torch.Tensor, y_test: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """RA, UA, TA and MIA (percent), and the MIA variants, from softmax probabilities."""
    return {
        "RA": accuracy(probs_retain, y_retain),
        "UA": 100.0 - accuracy(probs_forget, y_forget) if len(y_forget) else float("nan"),
        "TA": accuracy(probs_test, y_test),
        "MIA": mia_efficacy(confidence(probs_retain, y_retain), confidence(probs_test, y_test),
                            confidence(probs_forget, y_forget), seed=seed),
        **mia_variants(probs_retain, y_retain, probs_test, y_test, probs_forget, y_forget, seed=seed),
    }


def entropy(probs: torch.Tensor, labels: torch.Tensor | None = None) -> np.ndarray:
    """Prediction entropy -sum p log p (0 log 0 = 0): an MIA feature of the OPTML-Group repos."""
    p = probs.double()
    return (-torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(1)).numpy()


def modified_entropy(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Song & Mittal's (2021) modified entropy, -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).

    The OPTML-Group repos' m_entropy computes this with whole-column indexing (labels select
    columns for every row); this is the per-sample definition of the paper they cite.
    """
    if len(labels) == 0:
        return np.empty(0)
    p = probs.double().clamp(1e-30, 1 - 1e-16)
    own = F.one_hot(labels.cpu(), p.shape[1]).bool()
    terms = torch.where(own, -(1 - p) * p.log(), -p * (1 - p).log())
    return terms.sum(1).numpy()


def loss_values(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-sample cross-entropy -log p_y, the loss-based MIA feature."""
    loss: np.ndarray = -np.log(np.clip(confidence(probs, labels), 1e-30, None))
    return loss


# The MIA variants beside the paper's confidence attack: (key, label, per-sample feature).
MIA_VARIANTS = (("mia_entropy", "MIA entropy", entropy),
                ("mia_m_entropy", "MIA m-entropy", modified_entropy),
                ("mia_loss", "MIA loss", loss_values))


def mia_variants(probs_retain: torch.Tensor, y_retain: torch.Tensor, probs_test: torch.Tensor, y_test: torch.Tensor,
                 probs_forget: torch.Tensor, y_forget: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """MIA efficacy (% forget called non-member) with each variant's feature in place of p[y]."""
    return {key: mia_efficacy(feature(probs_retain, y_retain), feature(probs_test, y_test),
                              feature(probs_forget, y_forget), seed=seed)
            for key, _, feature in MIA_VARIANTS}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., 2019) of two feature matrices over the same n samples:
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), columns centred. 1 for identical features."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) < 2 or len(x) != len(y):
        return float("nan")
    x, y = x - x.mean(0), y - y.mean(0)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denom) if denom > 0 else float("nan")


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """% of samples on which two models predict the same class."""
    if len(pred_a) == 0:
        return float("nan")
    return 100.0 * float((np.asarray(pred_a) == np.asarray(pred_b)).mean())


KNN_K = 5


def knn_accuracy(fit_features: np.ndarray, fit_labels: np.ndarray, features: np.ndarray,
                 labels: np.ndarray, k: int = KNN_K) -> float:
    """% of `features` whose k nearest labelled `fit_features` (cosine) vote for their true label:
    how well frozen features still separate the classes, whatever the head says."""
    from sklearn.neighbors import KNeighborsClassifier

    if len(features) == 0 or len(fit_features) == 0:
        return float("nan")
    clf = KNeighborsClassifier(n_neighbors=min(k, len(fit_features)), metric="cosine")
    clf.fit(np.asarray(fit_features, np.float32), np.asarray(fit_labels))
    return 100.0 * float((clf.predict(np.asarray(features, np.float32)) == np.asarray(labels)).mean())


def gaps(metrics: dict[str, Any], reference: dict[str, Any] | None) -> tuple[dict[str, float] | None, float | None]:
    """|metric - Retrain's| per metric and their mean, the paper's Avg. Gap (None without reference)."""
    if not reference:
        return None, None
    per = {k: abs(float(metrics[k]) - float(reference[k])) for k in METRICS}
    return per, float(np.mean(list(per.values())))


class FlopMeter:
    """FLOPs of real training steps, counted by torch.utils.flop_counter.FlopCounterMode.

    Counting every step under the counter slows it down, so the first step of each distinct
    shape signature (e.g. a full batch and the smaller last batch) is counted and reused:
    the FLOPs of a step depend only on its tensor shapes. FlopCounterMode counts 2 FLOPs per
    multiply-add, the convention of the paper's PFLOPs.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._per_signature: dict[tuple[Any, ...], float] = {}
        self.images_trained = 0  # images passed forward and backward
        self.images_forward = 0  # images passed forward only (teachers, CoUn's second view)

    def count_images(self, trained: int = 0, forward_only: int = 0) -> None:
        """Tally passes for the paper's count (FLOPs above are measured, whatever the tally)."""
        self.images_trained += int(trained)
        self.images_forward += int(forward_only)

    def paper_count(self, forward: float) -> float:
        """FLOPs as the CoUn paper counts them: 3 forward costs per image trained on (forward +
        backward at twice the forward) and 1 per image only passed forward, CoUn's second view
        included (its backward is not counted). Its PFLOPs fit this count in whole epochs:
        Retrain 182, FT 42, NegGrad+ 20 with a forget batch per step, CoUn 40 at 4 forward costs
        per retain image (45,000 images, 1.114 GFLOPs a forward; see coun-method.md)."""
        return forward * (3 * self.images_trained + self.images_forward)

    def measure(self, signature: tuple[Any, ...]) -> AbstractContextManager[object]:
        """Context manager for one step; counts it if its signature is new, else adds the cache."""
        return _Measured(self, signature)


class _Measured:
    """FlopMeter.measure's context: a plain class, not one built anew on every training step."""

    def __init__(self, meter: FlopMeter, signature: tuple[Any, ...]):
        self.meter, self.signature = meter, signature
        self.counter: Any = None

    def __enter__(self) -> _Measured:
        if self.signature not in self.meter._per_signature:
            from torch.utils.flop_counter import FlopCounterMode

            self.counter = FlopCounterMode(display=False)
            self.counter.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        meter = self.meter
        if self.counter is not None:
            self.counter.__exit__(*exc)
            if exc[0] is None:
                meter._per_signature[self.signature] = float(self.counter.get_total_flops())
        if exc[0] is None:
            meter.total += meter._per_signature[self.signature]
        return False


def forward_flops(model: ResNet18, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass for one image of input_shape (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device=param.device))
    model.train(was_training)
    return float(counter.get_total_flops())
