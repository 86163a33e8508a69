"""The one definition of a forget set: which train-split indices to forget, and the rest to retain.

Indices point into the train split after `--subset`, are deterministic given the seed, and are
saved with every run as split.npz (int arrays `retain` and `forget`).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coun_tui.engine import UserError

MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds up to here


@dataclass
class ForgetSpec:
    classes: list[int] = field(default_factory=list)
    fraction: float | None = None
    seed: int = 0
    indices_file: str | None = None
    # The forget indices themselves: an unlearned checkpoint carries them when its forget set came
    # from a file, so it can be evaluated without that file (they win over indices_file).
    indices: list[int] | None = None

    def describe(self, class_names: list[str] | None = None) -> str:
        if self.classes:
            names = [class_names[c] if class_names and 0 <= c < len(class_names) else str(c) for c in self.classes]
            return "class " + ",".join(names)
        if self.fraction is not None:
            return f"{self.fraction:.0%} random (seed {self.seed})"
        if self.indices_file:
            return f"indices from {Path(self.indices_file).name}"
        if self.indices is not None:
            return f"{len(self.indices)} recorded indices"
        return "nothing"

    def tag(self) -> str:
        """The forget set in a folder name: class-3, class-3-5, random-10pct, indices-NAME, none."""
        if self.classes:
            return "class-" + "-".join(map(str, self.classes))
        if self.fraction is not None:
            return f"random-{self.fraction * 100:g}pct"
        if self.indices_file:
            return "indices-" + re.sub(r"[^A-Za-z0-9_.-]", "_", Path(self.indices_file).stem)[:40]
        return "indices" if self.indices is not None else "none"

    def to_dict(self) -> dict[str, Any]:
        d = {"classes": self.classes, "fraction": self.fraction, "seed": self.seed,
             "indices_file": self.indices_file}
        return d if self.indices is None else {**d, "indices": self.indices}

    @classmethod
    def from_dict(cls, d: Any, where: str = "forget set") -> ForgetSpec:
        """A recorded forget set (run.toml, checkpoint metadata), checked; other keys are ignored."""
        from coun_tui.engine.schema import parse_data

        return parse_data(ForgetSpec, d, where)


@dataclass
class Split:
    retain: np.ndarray  # int64, sorted
    forget: np.ndarray  # int64, sorted

    def save(self, path: str | Path) -> None:
        from coun_tui.engine.files import atomic_write

        with atomic_write(path) as fh:
            np.savez(fh, retain=self.retain, forget=self.forget)

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """A run's split.npz; RecordError (one line) if it is missing or damaged."""
        from coun_tui.engine.schema import RecordError

        fix = "it must hold 1-D int arrays 'retain' and 'forget' (a run's split.npz)"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = [_int_indices(z[k], k, fix) for k in ("retain", "forget")]
        except UserError as exc:
            raise RecordError(str(path), str(exc), fix) from None
        except (*READ_ERRORS, TypeError, AttributeError) as exc:  # TypeError, AttributeError: an .npy
            raise RecordError(str(path), _why(exc), fix) from None
        return cls(*arrays)

    def same_as(self, other: Split) -> bool:
        return np.array_equal(self.retain, other.retain) and np.array_equal(self.forget, other.forget)


def class_id(token: str, class_names: list[str], dataset: str = "the dataset") -> int:
    """A class given by id ("3") or by name ("Coat", case-insensitive)."""
    token = token.strip()
    lowered = [c.lower() for c in class_names]
    if token.lower() in lowered:
        return lowered.index(token.lower())
    if re.fullmatch(r"[0-9]{1,9}", token) and int(token) < len(class_names):
        return int(token)
    shown = ", ".join(class_names[:20]) + (" …" if len(class_names) > 20 else "")
    raise UserError(f"unknown class {token[:40]!r} for {dataset}; use an id 0-{len(class_names) - 1} "
                    f"or one of: {shown}")


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed} must lie in 0..{MAX_SEED}")


def parse_classes(text: str | None, class_index: Callable[[str], int]) -> list[int]:
    """'3' or '3,5' or 'Coat,Bag' -> sorted class ids; class_index maps one token to an id."""
    if not text:
        return []
    return sorted({class_index(tok) for tok in text.split(",") if tok.strip()})


def make_split(spec: ForgetSpec, labels: np.ndarray) -> Split:
    labels = np.asarray(labels)
    n = len(labels)
    chosen = [bool(spec.classes), spec.fraction is not None, bool(spec.indices_file) or spec.indices is not None]
    if sum(chosen) > 1:
        raise UserError("choose one of --forget-class, --forget-fraction or --forget-indices, not several")
    check_seed(spec.seed)
    if spec.classes:
        absent = [c for c in spec.classes if not np.any(labels == c)]
        if absent:
            raise UserError(f"class {absent[0]} has no samples in the train split; "
                            f"classes are 0-{int(labels.max()) if n else 0}")
        forget = np.flatnonzero(np.isin(labels, spec.classes))
    elif spec.fraction is not None:
        if not 0 < spec.fraction < 1:
            raise UserError(f"--forget-fraction {spec.fraction} must be between 0 and 1 (e.g. 0.1 for 10%)")
        rng = np.random.default_rng(spec.seed)
        forget = np.sort(rng.choice(n, size=max(1, round(spec.fraction * n)), replace=False))
    elif spec.indices is not None:
        forget = _in_range(np.unique(np.asarray(spec.indices, dtype=np.int64)), n, "the recorded forget indices")
    elif spec.indices_file:
        forget = read_indices(spec.indices_file, n)
    else:
        forget = np.array([], dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[forget] = True
    return Split(np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64))


# What reading a damaged .npy/.npz/text file can raise (BadZipFile is no OSError).
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, OverflowError, zipfile.BadZipFile)
INDEX_HINT = "give a .npy of integers, a split.npz or a text file of integers"


def read_indices(path: str, n: int) -> np.ndarray:
    """Forget indices from a .npy (1-D ints), a split.npz (its `forget`) or a text file of integers."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                idx = z["forget"]
        elif p.suffix == ".npy":
            idx = np.load(p, allow_pickle=False)
        else:
            tokens = p.read_text().replace(",", " ").split()
            bad = next((t for t in tokens if not re.fullmatch(r"-?[0-9]{1,18}", t)), None)
            if bad is not None:
                raise ValueError(f"{bad[:20]!r} is not an integer")
            idx = np.array([int(t) for t in tokens], dtype=np.int64)
    except READ_ERRORS as exc:
        raise UserError(f"cannot read forget indices from {path} ({_why(exc)}); {INDEX_HINT}") from None
    idx = _int_indices(idx, f"forget indices in {path}", INDEX_HINT)
    return _in_range(np.unique(idx), n, f"forget indices in {path}")


def _int_indices(arr: np.ndarray, what: str, hint: str) -> np.ndarray:
    """A 1-D integer array as int64: a float, boolean or 2-D array is refused, never converted."""
    if arr.dtype == bool:
        raise UserError(f"{what} are a boolean mask, not indices; save np.flatnonzero(mask) instead")
    if arr.dtype.kind not in "iu":
        raise UserError(f"{what} are {arr.dtype}, not integers; {hint}")
    if arr.ndim != 1:
        raise UserError(f"{what} form a {arr.ndim}-D array of shape {arr.shape}; save a 1-D array")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise UserError(f"{what} hold values beyond int64; {hint}")
    return arr.astype(np.int64)


def _in_range(idx: np.ndarray, n: int, what: str) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise UserError(f"{what} must lie in 0..{n - 1} (the train split after --subset)")
    return idx


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
