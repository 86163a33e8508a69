"""Datasets, loaded offline from their original on-disk formats into float tensors in [0, 1].

Every loader returns the full train and test splits; `--subset` then takes a stratified, seeded
subset of the train split. Normalisation (per-channel mean/std, stored in every checkpoint) and
augmentation happen on tensors on the run's device (see `prepare` and `augment`).
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coun_tui.engine import UserError

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "imagefolder")
DEFAULT_ROOTS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
# Horizontal flips suit natural images and clothes, not digits (a flipped 3 is not a 3).
FLIP = {"digits": False, "mnist": False, "svhn": False, "fashion-mnist": True, "cifar10": True,
        "cifar100": True, "imagefolder": True}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # float32 (N, C, H, W) in [0, 1], on the CPU
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    subset: int | None = None
    subset_seed: int | None = None

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def flip(self) -> bool:
        return FLIP.get(self.name, False)

    @property
    def crop_padding(self) -> int:
        return max(1, self.image_size // 8)  # 4 at 32x32 (the CIFAR recipe), 3 at 28, 1 at 8

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the train split, used to normalise for a new model."""
        x = self.train_x.transpose(0, 1).reshape(self.in_channels, -1).double()
        return x.mean(1).tolist(), x.std(1).clamp_min(1e-6).tolist()

    def class_index(self, name_or_id: str) -> int:
        """A class given by id ("3") or by name ("Coat", case-insensitive)."""
        from coun_tui.engine.forget import class_id

        return class_id(name_or_id, self.classes, self.name)


def load(name: str, root: str | Path | None = None, subset: int | None = None,
         subset_seed: int = 0) -> Dataset:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name != "digits":
        root = Path(root or DEFAULT_ROOTS.get(name, ""))
        if not str(root) or not root.is_dir():
            raise UserError(_missing(name, root or None))
    loader = {"digits": _digits, "fashion-mnist": _idx, "mnist": _idx, "cifar10": _cifar,
              "cifar100": _cifar, "svhn": _svhn, "imagefolder": _imagefolder}[name]
    try:
        ds = loader(name, Path(root or ""))  # digits takes no folder
    except UserError:
        raise
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"{_missing(name, root)} ({type(exc).__name__}: {exc})") from exc
    return take_subset(ds, subset, subset_seed) if subset is not None else ds


def _missing(name: str, root: str | Path | None) -> str:
    expected = {
        "fashion-mnist": "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                         "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
        "mnist": "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                 "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
        "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
        "cifar100": "cifar-100-python/ (train, test, meta)",
        "svhn": "train_32x32.mat and test_32x32.mat",
        "imagefolder": "train/<class>/*.png|jpg and test/<class>/*.png|jpg",
    }[name]
    hint = {"fashion-mnist": "; install it with `apt-get install dataset-fashion-mnist` or pass "
                             "--data-root DIR"}.get(name, "; pass --data-root DIR")
    return f"{name} dataset not found or malformed at {root}: expected {expected}{hint}"


def take_subset(ds: Dataset, size: int, seed: int) -> Dataset:
    """A stratified, seeded subset of the train split (sorted, so indices are stable)."""
    from sklearn.model_selection import train_test_split

    n = len(ds.train_y)
    if not 0 < size <= n:
        raise UserError(f"--subset {size} is out of range: {ds.name} has {n} training images")
    if size == n:
        idx = np.arange(n)
    else:
        try:
            idx, _ = train_test_split(np.arange(n), train_size=size, random_state=seed,
                                      stratify=ds.train_y.numpy())
        except ValueError as exc:  # too few images per class on either side of the split
            raise UserError(f"--subset {size} cannot be stratified over {ds.name}'s "
                            f"{len(ds.classes)} classes ({exc})") from exc
        idx = np.sort(idx)
    sel = torch.from_numpy(idx)
    return Dataset(ds.name, ds.train_x[sel], ds.train_y[sel], ds.test_x, ds.test_y, ds.classes,
                   subset=size, subset_seed=seed)


def _tensor(images: np.ndarray, labels: np.ndarray, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.asarray(images).astype(np.float32, order="C")).div_(scale)  # own, writable copy
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1))


def _digits(name: str, root: Path) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32)[:, None], bunch.target
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels)
    xtr, ytr = _tensor(images[tr], labels[tr], 16.0)
    xte, yte = _tensor(images[te], labels[te], 16.0)
    return Dataset("digits", xtr, ytr, xte, yte, [str(i) for i in range(10)])


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path.name} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path.name} is truncated: {data.size} bytes for shape {tuple(dims)}")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    # The original file names, plain or gzipped, at the root or in torchvision's <Name>/raw/.
    for folder in (root, root / "FashionMNIST" / "raw", root / "MNIST" / "raw", root / "raw"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{stem}[.gz] not found")


def _idx(name: str, root: Path) -> Dataset:
    xtr = _read_idx(_find(root, "train-images-idx3-ubyte"))
    ytr = _read_idx(_find(root, "train-labels-idx1-ubyte"))
    xte = _read_idx(_find(root, "t10k-images-idx3-ubyte"))
    yte = _read_idx(_find(root, "t10k-labels-idx1-ubyte"))
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("image and label counts differ")
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return Dataset(name, *_tensor(xtr[:, None], ytr, 255.0), *_tensor(xte[:, None], yte, 255.0), classes)


# --- CIFAR (torchvision's python pickles) -----------------------------------------------------

class _DataUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what they contain (numpy arrays), never code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        data: dict[str, Any] = _DataUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    return data


def _cifar(name: str, root: Path) -> Dataset:
    if name == "cifar10":
        base = root / "cifar-10-batches-py"
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        label_key, meta_file, names_key = "labels", "batches.meta", "label_names"
    else:
        base = root / "cifar-100-python"
        train_files, test_files = ["train"], ["test"]
        label_key, meta_file, names_key = "fine_labels", "meta", "fine_label_names"

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_unpickle(base / f) for f in files]
        data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])
        labels = np.concatenate([np.asarray(p[label_key]) for p in parts])
        return data.reshape(-1, 3, 32, 32), labels

    (xtr, ytr), (xte, yte) = read(train_files), read(test_files)
    classes = [str(c) for c in _unpickle(base / meta_file)[names_key]]
    return Dataset(name, *_tensor(xtr, ytr, 255.0), *_tensor(xte, yte, 255.0), classes)


# --- SVHN (.mat files) ------------------------------------------------------------------------

def _svhn(name: str, root: Path) -> Dataset:
    from scipy.io import loadmat

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        mat = loadmat(root / f"{split}_32x32.mat")
        x = np.transpose(mat["X"], (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
        y = mat["y"].astype(np.int64).reshape(-1) % 10  # SVHN labels digit 0 as 10
        return x, y

    (xtr, ytr), (xte, yte) = read("train"), read("test")
    return Dataset(name, *_tensor(xtr, ytr, 255.0), *_tensor(xte, yte, 255.0), [str(i) for i in range(10)])


# --- Image folders ----------------------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _imagefolder(name: str, root: Path) -> Dataset:
    from PIL import Image

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise ValueError("no class folders under train/")
    files = {split: [(f, i) for i, c in enumerate(classes)
                     for f in sorted((root / split / c).glob("*")) if f.suffix.lower() in _IMAGE_SUFFIXES]
             for split in ("train", "test")}
    if not files["train"] or not files["test"]:
        raise ValueError("train/ or test/ holds no images")

    def read(path: Path) -> Image.Image:  # decode now and close the file: lazy opens exhaust file descriptors
        with Image.open(path) as im:
            im.load()
            return im.copy()

    images = {s: [read(f) for f, _ in fs] for s, fs in files.items()}
    grey = all(im.mode in ("L", "1", "I;16") for ims in images.values() for im in ims)
    mode = "L" if grey else "RGB"
    sizes = {im.size for ims in images.values() for im in ims}
    if len(sizes) != 1:
        raise ValueError(f"images differ in size ({sorted(sizes)[:3]}...); resize them to one size")

    def stack(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        arr = np.stack([np.asarray(im.convert(mode)) for im in images[split]])
        arr = arr[:, None] if grey else arr.transpose(0, 3, 1, 2)
        return _tensor(arr, np.array([label for _, label in files[split]]), 255.0)

    return Dataset(name, *stack("train"), *stack("test"), classes)


# --- On the device ----------------------------------------------------------------------------

@dataclass
class DeviceData:
    """Normalised tensors resident on the run's device, plus what augmentation needs."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    pad_value: torch.Tensor  # per channel: the normalised value of a black pixel
    crop_padding: int
    flip: bool


def prepare(ds: Dataset, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> DeviceData:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if m.shape[1] != ds.in_channels:
        raise UserError(f"the model normalises {m.shape[1]} channels but {ds.name} has {ds.in_channels}")

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x - m) / s).to(device)

    return DeviceData(norm(ds.train_x), ds.train_y.to(device), norm(ds.test_x), ds.test_y.to(device),
                      (-m / s).view(-1).to(device), ds.crop_padding, ds.flip)


def augment(x: torch.Tensor, data: DeviceData, gen: torch.Generator) -> torch.Tensor:
    """Random crop with padding (and horizontal flip where it suits), batched on the device."""
    b, c, h, w = x.shape
    p = data.crop_padding
    padded = data.pad_value.view(1, c, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
    padded[:, :, p:p + h, p:p + w] = x
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=gen.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if data.flip:
        flip = torch.rand(b, generator=gen, device=gen.device).to(x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()
