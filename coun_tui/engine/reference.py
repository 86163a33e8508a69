"""Comparing a run with its Retrain beyond RA/UA/TA/MIA: predictions and penultimate features on
fixed subsets of the forget set (D_u) and the test set.

A Retrain run keeps its own as `reference.npz` in its run directory (a few hundred kB); a run
measured against that Retrain evaluates itself on the very same samples and reports agreement
with Retrain's predictions on D_u, linear CKA with Retrain's features on D_u and on the test set,
and a k-NN probe's accuracy on D_u for both. Runs whose Retrain kept no reference.npz (made before
it existed, or with their model files gone) simply lack these metrics.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from coun_tui.engine import UserError, metrics

if TYPE_CHECKING:
    import torch

REFERENCE_FILE = "reference.npz"
# (key, label, higher is better): the per-run metrics measured against Retrain's reference.
VERSUS_RETRAIN = (("agree_forget", "Agree D_u %", True), ("cka_forget", "CKA D_u", True),
                  ("cka_test", "CKA test", True))
KNN = ("knn_forget", "knn_forget_retrain")  # the run's k-NN probe accuracy on D_u, and Retrain's


@dataclass
class View:
    """A model's predictions and penultimate features on D_u rows and test rows."""

    forget_idx: np.ndarray  # train-split indices, a subset of the forget set
    test_idx: np.ndarray  # test-split indices, drawn from every class
    forget_pred: np.ndarray  # predicted class per forget row
    forget_feat: np.ndarray  # (n_forget_rows, 512)
    test_feat: np.ndarray  # (n_test_rows, 512)

    @classmethod
    def of(cls, forget_idx: ArrayLike, test_idx: ArrayLike, probs_forget: torch.Tensor, feats_forget: torch.Tensor,
           feats_test: torch.Tensor) -> View:
        """From a model's softmax outputs and features on those rows (torch tensors)."""
        pred = probs_forget.argmax(1).numpy() if probs_forget.numel() else np.empty(0, np.int64)
        return cls(np.asarray(forget_idx), np.asarray(test_idx), pred, feats_forget.numpy(), feats_test.numpy())

    def save(self, path: str | Path) -> None:
        from coun_tui.engine.files import atomic_write

        with atomic_write(Path(path)) as fh:
            np.savez_compressed(fh, forget_idx=self.forget_idx.astype(np.int64),
                                test_idx=self.test_idx.astype(np.int64),
                                forget_pred=self.forget_pred.astype(np.int64),
                                forget_feat=self.forget_feat.astype(np.float16),
                                test_feat=self.test_feat.astype(np.float16))

    @classmethod
    def load(cls, path: str | Path, forget: np.ndarray, n_test: int) -> View:
        """Read and check a reference.npz against the split it must belong to; one line if damaged."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("forget_idx", "test_idx", "forget_pred", "forget_feat", "test_feat")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise UserError(f"{path} is damaged ({type(exc).__name__}); delete it to measure without "
                            "the comparisons with Retrain's features") from None
        view = cls(**arrays)
        n_f, n_t = len(view.forget_idx), len(view.test_idx)
        ok = (view.forget_pred.shape == (n_f,) and view.forget_feat.ndim == 2 and len(view.forget_feat) == n_f
              and view.test_feat.ndim == 2 and len(view.test_feat) == n_t
              and view.forget_feat.shape[1:] == view.test_feat.shape[1:]
              and np.isin(view.forget_idx, forget).all() and ((view.test_idx >= 0) & (view.test_idx < n_test)).all())
        if not ok:
            raise UserError(f"{path} does not match this forget set or test set; delete it to measure "
                            "without the comparisons with Retrain's features")
        return view


def pick(rng: np.random.Generator, idx: np.ndarray, size: int) -> np.ndarray:
    """A seeded subset of `size` indices (all of them when there are fewer), sorted."""
    return np.sort(rng.choice(idx, size, replace=False)) if len(idx) > size else np.asarray(idx)


def reference_dir(path: str | Path) -> Path | None:
    """The run directory of a Retrain given as a directory or as its model file."""
    p = Path(path)
    if p.is_dir():
        return p
    return p.parent if (p.parent / "metrics.json").is_file() else None


def load_view(path: str | Path, forget: np.ndarray, n_test: int) -> View | None:
    """The Retrain's reference.npz, or None when it kept none."""
    run_dir = reference_dir(path)
    if run_dir is None or not (run_dir / REFERENCE_FILE).is_file():
        return None
    return View.load(run_dir / REFERENCE_FILE, forget, n_test)


def compare(view: View, ref: View | None, train_y: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    """The run's k-NN probe on D_u, and with a reference on the same rows, agreement, CKA and
    Retrain's own k-NN probe.

    The probe: 5 nearest test samples (cosine, penultimate features, every class) vote on each
    D_u sample's class; a forgotten class that its features still separate scores high although
    the head no longer predicts it. Compare it with Retrain's, which never saw D_u.
    """
    forget_y, fit_y = train_y[view.forget_idx], test_y[view.test_idx]
    out = {KNN[0]: metrics.knn_accuracy(view.test_feat, fit_y, view.forget_feat, forget_y)}
    if ref is None or not (np.array_equal(ref.forget_idx, view.forget_idx)
                           and np.array_equal(ref.test_idx, view.test_idx)):
        return out
    out.update(agree_forget=metrics.agreement(view.forget_pred, ref.forget_pred),
               cka_forget=metrics.linear_cka(view.forget_feat, ref.forget_feat),
               cka_test=metrics.linear_cka(view.test_feat, ref.test_feat))
    out[KNN[1]] = metrics.knn_accuracy(ref.test_feat, fit_y, ref.forget_feat, forget_y)
    return out
