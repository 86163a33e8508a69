"""The one metrics module: RA, UA, TA, MIA efficacy, Avg. Gap and FLOPs, all in percent/FLOPs.

Definitions follow the CoUn paper and the OPTML-Group repos (see shared/reference/coun-method.md):
RA = accuracy on the retain set, TA = accuracy on the test set, UA = 100 - accuracy on the forget
set, MIA = % of forget samples that a confidence-based SVC attack calls non-members.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("RA", "UA", "TA", "MIA")


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int | None = None, autocast=None,
            want_features: bool = False):
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


def evaluate(model, x_retain, y_retain, x_forget, y_forget, x_test, y_test, autocast=None,
             seed: int = 0) -> dict[str, float]:
    """RA, UA, TA and MIA (percent) of a model on the given (already normalised) tensors."""
    pr, pf, pt = (predict(model, x, autocast=autocast) for x in (x_retain, x_forget, x_test))
    return {
        "RA": accuracy(pr, y_retain),
        "UA": 100.0 - accuracy(pf, y_forget) if len(y_forget) else float("nan"),
        "TA": accuracy(pt, y_test),
        "MIA": mia_efficacy(confidence(pr, y_retain), confidence(pt, y_test),
                            confidence(pf, y_forget), seed=seed),
    }


def gaps(metrics: dict, reference: dict | None) -> tuple[dict[str, float] | None, float | None]:
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

    def __init__(self):
        self.total = 0.0
        self._per_signature: dict[tuple, float] = {}

    def measure(self, signature: tuple):
        """Context manager for one step; counts it if its signature is new, else adds the cache."""
        from torch.utils.flop_counter import FlopCounterMode

        meter = self

        class _Ctx:
            def __enter__(self):
                self.counter = None
                if signature not in meter._per_signature:
                    self.counter = FlopCounterMode(display=False)
                    self.counter.__enter__()
                return self

            def __exit__(self, *exc):
                if self.counter is not None:
                    self.counter.__exit__(*exc)
                    if exc[0] is None:
                        meter._per_signature[signature] = float(self.counter.get_total_flops())
                if exc[0] is None:
                    meter.total += meter._per_signature[signature]
                return False

        return _Ctx()


def forward_flops(model, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass for one image of input_shape (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device=param.device))
    model.train(was_training)
    return float(counter.get_total_flops())
