"""Per-example forgetting scores against a population of Retrain models (numpy only, no torch).

Each forget example has one value per model: the margin z_y - logsumexp_{j != y} z_j, which is
the competition's "logit-scaled confidence" log(p_y / (1 - p_y)), LiRA's phi and KLOM's margin.
Arrays are [models, examples]: `unlearned` from N runs of a method, `retrained` from N Retrains.

Sources (shared/reference/forgetting-evaluation.md collects them):
- epsilon, F and the final score: the NeurIPS 2023 unlearning competition (Triantafillou et al.
  2024, arXiv 2406.09073), as its released scorer computes them (google-deepmind/
  unlearning_evaluation, metric.py: `_get_epsilons`, `compute_forget_score_from_confs`);
- KL of margin distributions: KLOM (Georgiev et al. 2024, arXiv 2410.23232, App. E.1), as
  EasyDUB's `binned_kl_divergence` computes it (easydub/EasyDUB-code, easydub/eval.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

Floats = NDArray[np.float64]

DELTA = 1e-5  # metric.py's DELTA; the organizers' report leaves delta unspecified
EPSILON_CAP = 50.0  # metric.py's EPSILON_CAP: a perfectly separated example's epsilon
THRESHOLDS_PER_UNIT = 100  # metric.py's NUM_THRESHOLDS_PER_UNIT: grid points per unit of margin
INTERVAL_BUFFER = 2.0  # metric.py's `buffer` around the peakier population in the interval attacks
PEAKY_RATIO = 0.01  # one population's range under 1% of the other's: the cap, no attack needed
BUCKET = 0.5  # compute_forget_score_from_confs's bucket_size
KL_BINS, KL_FLOOR, KL_CLIP = 20, 1e-5, 100.0  # EasyDUB's binned_kl_divergence defaults
MIN_POPULATION = 4  # max_eps = ceil(ln(N - 1)) needs N >= 3; 4 gives the smallest useful scale (4 bins)


def margins(logits: NDArray[Any], labels: NDArray[Any]) -> Floats:
    """z_y - logsumexp of the other logits, in float64: log(p_y / (1 - p_y)) without rounding.

    The competition's scorer computes log(p_y + 1e-45) - log(1 - p_y + 1e-45) from probabilities;
    the two agree to ~1e-9 while |margin| < ~100, where that guard starts to saturate.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    y = np.asarray(labels, dtype=np.int64)
    others = z.copy()
    others[rows, y] = -np.inf
    out: Floats = z[rows, y] - logsumexp(others, axis=1)
    return out


def _rates_single(pos: Floats, neg: Floats) -> tuple[Floats, Floats]:
    """Attack family A: predict "pos" iff c >= t, t on a uniform grid over the pooled range
    (metric.py `_get_single_threshold_rates`). Returns (FNR, FPR) per threshold."""
    low, high = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    t = np.linspace(low, high, int(math.ceil((high - low) * THRESHOLDS_PER_UNIT)))
    fnr: Floats = np.searchsorted(pos, t, side="left") / len(pos)  # pos below t
    fpr: Floats = 1 - np.searchsorted(neg, t, side="left") / len(neg)  # neg at or above t
    return fnr, fpr


def _rates_interval(pos: Floats, neg: Floats) -> tuple[Floats, Floats]:
    """Attack family B: predict the peakier population iff l <= c <= r, about 400 x 400 intervals
    of the peakier one's width +- the buffer (metric.py `_get_double_threshold_rates`)."""
    if np.ptp(pos) >= np.ptp(neg):  # metric.py: "pos" is the peakier (narrower) one
        pos, neg = neg, pos
    width = float(np.ptp(pos))
    low, high = pos.min() + width - INTERVAL_BUFFER, pos.max() + INTERVAL_BUFFER
    right = np.linspace(low, high, int(math.ceil((high - low) * THRESHOLDS_PER_UNIT)))
    n_left = int(math.ceil(2 * INTERVAL_BUFFER * THRESHOLDS_PER_UNIT))
    offsets = np.linspace(-width - INTERVAL_BUFFER, -width + INTERVAL_BUFFER, n_left)
    left = (right[:, None] + offsets[None, :]).ravel()
    right = np.repeat(right, n_left)

    def inside(x: Floats) -> Floats:
        share: Floats = (np.searchsorted(x, right, side="right") - np.searchsorted(x, left, side="left")) / len(x)
        return share

    return 1 - inside(pos), inside(neg)


def example_epsilon(unlearned: Floats, retrained: Floats, delta: float = DELTA) -> float:
    """The competition's epsilon of one forget example from its N values under each population.

    The larger median is "pos" (metric.py breaks a tie towards the unlearned side). Every
    threshold of both attack families gives empirical FPR and FNR over the models; FPR = FNR = 0 is
    perfect separation (epsilon = cap), a threshold with exactly one of them 0 is dropped as a
    small-sample artifact, the rest give max(ln(1-delta-FPR) - ln FNR, ln(1-delta-FNR) - ln FPR),
    a NaN term ignored and clipped below at 0. The example's epsilon is the largest, in [0, cap].
    """
    u, r = np.sort(np.asarray(unlearned, np.float64)), np.sort(np.asarray(retrained, np.float64))
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    small, large = sorted((float(np.ptp(pos)), float(np.ptp(neg))))
    if large == 0.0:  # both constant (metric.py divides 0 by 0 here): equal values cannot be told apart
        return 0.0 if pos[0] == neg[0] else EPSILON_CAP
    if small / large < PEAKY_RATIO:
        return EPSILON_CAP
    # The interval family calls its own (peakier) side positive; epsilon is symmetric in (FPR, FNR).
    fnr, fpr = (np.concatenate(pair) for pair in zip(_rates_single(pos, neg), _rates_interval(pos, neg)))
    if np.any((fnr == 0) & (fpr == 0)):
        return EPSILON_CAP
    keep = (fnr > 0) & (fpr > 0)
    if not keep.any():
        return 0.0  # metric.py asserts here; no attack has both error kinds, so none can be scored
    fnr, fpr = fnr[keep], fpr[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.stack([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)])
    finite = np.where(np.isnan(terms), -np.inf, terms).max(axis=0)
    finite = finite[np.isfinite(finite)]  # both terms NaN: metric.py drops the threshold
    return float(np.clip(finite.max(), 0.0, EPSILON_CAP)) if len(finite) else 0.0


def epsilons(unlearned: Floats, retrained: Floats, delta: float = DELTA) -> Floats:
    """Per-example epsilon of [models, examples] arrays."""
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"{u.shape[1]} examples unlearned vs {r.shape[1]} retrained")
    return np.array([example_epsilon(u[:, s], r[:, s], delta) for s in range(u.shape[1])])


def max_epsilon(n_models: int) -> float:
    """compute_forget_score_from_confs: the largest epsilon N samples can show, ceil(ln(N - 1))."""
    return float(math.ceil(math.log(n_models - 1)))


def forget_quality(eps: Floats, n_models: int) -> float:
    """F in [0, 1]: an example with epsilon in [0.5k, 0.5k + 0.5) earns 2^-k points, one at or
    beyond ceil(ln(N - 1)) earns none (so F depends on N: compare at equal N only); F is the mean."""
    if len(eps) == 0:
        return float("nan")
    top = max_epsilon(n_models)
    bucket = np.floor(np.asarray(eps) / BUCKET)
    points = np.where(bucket * BUCKET + BUCKET <= top, 0.5 ** bucket, 0.0)
    return float(points.mean())


def final_score(quality: float, ra_unlearned: float, ra_retrained: float, ta_unlearned: float,
                ta_retrained: float) -> float:
    """The competition's score: F x (RA_U / RA_R) x (TA_U / TA_R), mean accuracies over each
    population; the ratios are not capped at 1 (neither in the report's formula nor its code)."""
    return quality * (ra_unlearned / ra_retrained) * (ta_unlearned / ta_retrained)


def binned_kl(unlearned: Floats, retrained: Floats) -> float:
    """KL(unlearned || retrained) of one example's margins, KLOM's binning as EasyDUB computes it:
    both clipped to +-100, 20 equal bins over the pooled range ([v, v + 1] if it is one value),
    np.digitize into the 21 edges (so samples at the pooled maximum fall outside every bin, as in
    the published code), q floored at 1e-5 where p > 0. At most ln(1e5) = 11.5."""
    p_x = np.clip(unlearned, -KL_CLIP, KL_CLIP)
    q_x = np.clip(retrained, -KL_CLIP, KL_CLIP)
    start, end = min(p_x.min(), q_x.min()), max(p_x.max(), q_x.max())
    if start >= end:
        end = start + 1.0
    edges = np.linspace(start, end, KL_BINS + 1)
    p = np.bincount(np.digitize(p_x, edges), minlength=KL_BINS + 2)[1:KL_BINS + 1].astype(np.float64)
    q = np.bincount(np.digitize(q_x, edges), minlength=KL_BINS + 2)[1:KL_BINS + 1].astype(np.float64)
    p = p / p.sum() if p.sum() > 0 else p
    q = q / q.sum() if q.sum() > 0 else q
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], KL_FLOOR))))


def klom(unlearned: Floats, retrained: Floats) -> Floats:
    """Per-example binned KL of [models, examples] margin arrays."""
    return np.array([binned_kl(unlearned[:, s], retrained[:, s]) for s in range(unlearned.shape[1])])


def score(unlearned: Floats, retrained: Floats, ra: tuple[float, float], ta: tuple[float, float],
          ) -> dict[str, Any]:
    """Every score of one population against the Retrain one (equal sizes: F depends on N).

    `ra` and `ta` are (unlearned, retrained) mean accuracies. Returns F, the final score, the
    median epsilon, KL median and 90th percentile, and the per-example epsilons.
    """
    n = min(len(unlearned), len(retrained))
    if n < MIN_POPULATION:
        raise ValueError(f"a population of {n} is too small to score (at least {MIN_POPULATION})")
    u, r = np.asarray(unlearned[:n], np.float64), np.asarray(retrained[:n], np.float64)
    eps = epsilons(u, r)
    kl = klom(u, r)
    quality = forget_quality(eps, n)
    return {"F": quality, "score": final_score(quality, ra[0], ra[1], ta[0], ta[1]),
            "eps_median": float(np.median(eps)), "kl_median": float(np.median(kl)),
            "kl_p90": float(np.percentile(kl, 90)), "n": n, "eps": eps.tolist()}
