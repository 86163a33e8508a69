"""The one definition of a forget set: which train-split indices to forget, and the rest to retain.

Indices point into the train split after `--subset`, are deterministic given the seed, and are
saved with every run as split.npz (int arrays `retain` and `forget`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coun_tui.engine import UserError


@dataclass
class ForgetSpec:
    classes: list[int] = field(default_factory=list)
    fraction: float | None = None
    seed: int = 0
    indices_file: str | None = None

    def describe(self, class_names: list[str] | None = None) -> str:
        if self.classes:
            names = [class_names[c] if class_names else str(c) for c in self.classes]
            return "class " + ",".join(names)
        if self.fraction is not None:
            return f"{self.fraction:.0%} random (seed {self.seed})"
        if self.indices_file:
            return f"indices from {Path(self.indices_file).name}"
        return "nothing"

    def to_dict(self) -> dict:
        return {"classes": self.classes, "fraction": self.fraction, "seed": self.seed,
                "indices_file": self.indices_file}

    @classmethod
    def from_dict(cls, d: dict) -> "ForgetSpec":
        return cls(list(d.get("classes") or []), d.get("fraction"), int(d.get("seed", 0)),
                   d.get("indices_file"))


@dataclass
class Split:
    retain: np.ndarray  # int64, sorted
    forget: np.ndarray  # int64, sorted

    def save(self, path: str | Path) -> None:
        from coun_tui.engine.files import atomic_write

        with atomic_write(path) as fh:
            np.savez(fh, retain=self.retain, forget=self.forget)

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        try:
            with np.load(path) as z:
                return cls(z["retain"].astype(np.int64), z["forget"].astype(np.int64))
        except (OSError, KeyError, ValueError, TypeError) as exc:  # TypeError: a .npy, not an .npz
            raise UserError(f"{path} is not a split file with int arrays 'retain' and 'forget' ({exc})")

    def same_as(self, other: "Split") -> bool:
        return np.array_equal(self.retain, other.retain) and np.array_equal(self.forget, other.forget)


def parse_classes(text: str | None, class_index) -> list[int]:
    """'3' or '3,5' or 'Coat,Bag' -> sorted class ids; class_index maps one token to an id."""
    if not text:
        return []
    return sorted({class_index(tok) for tok in text.split(",") if tok.strip()})


def make_split(spec: ForgetSpec, labels: np.ndarray) -> Split:
    labels = np.asarray(labels)
    n = len(labels)
    chosen = [bool(spec.classes), spec.fraction is not None, bool(spec.indices_file)]
    if sum(chosen) > 1:
        raise UserError("choose one of --forget-class, --forget-fraction or --forget-indices, not several")
    if spec.classes:
        forget = np.flatnonzero(np.isin(labels, spec.classes))
    elif spec.fraction is not None:
        if not 0 < spec.fraction < 1:
            raise UserError(f"--forget-fraction {spec.fraction} must be between 0 and 1 (e.g. 0.1 for 10%)")
        rng = np.random.default_rng(spec.seed)
        forget = np.sort(rng.choice(n, size=max(1, round(spec.fraction * n)), replace=False))
    elif spec.indices_file:
        forget = _read_indices(spec.indices_file, n)
    else:
        forget = np.array([], dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[forget] = True
    return Split(np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64))


def _read_indices(path: str, n: int) -> np.ndarray:
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p) as z:
                idx = z["forget"]
        elif p.suffix == ".npy":
            idx = np.load(p, allow_pickle=False)
        else:
            idx = np.array([int(t) for t in p.read_text().replace(",", " ").split()])
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read forget indices from {path} ({exc}); give a .npy, a split.npz "
                        "or a text file of integers")
    idx = np.unique(np.asarray(idx, dtype=np.int64))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise UserError(f"forget indices in {path} must lie in 0..{n - 1} (the train split after --subset)")
    return idx
