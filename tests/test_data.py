"""Dataset loaders on real files written in each original on-disk format, subsets and augmentation."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from coun_tui.engine import UserError, data

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _user_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"a UserError is one line: {msg!r}"
    return msg


# --- digits -----------------------------------------------------------------------------------

def test_unknown_dataset_lists_the_choices():
    msg = _user_error(data.load, "imagenet")
    assert "imagenet" in msg
    for name in data.DATASETS:
        assert name in msg


def test_digits_split_and_scale_match_sklearn():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = data.load("digits")
    bunch = load_digits()
    tr, te = train_test_split(np.arange(1797), test_size=0.2, random_state=0, stratify=bunch.target)
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.train_x.min().item() == 0.0 and ds.train_x.max().item() == 1.0  # 16/16
    assert torch.equal(ds.train_x, torch.from_numpy(bunch.images[tr][:, None] / 16).float())
    assert torch.equal(ds.test_x, torch.from_numpy(bunch.images[te][:, None] / 16).float())
    assert ds.train_y.tolist() == bunch.target[tr].tolist()
    assert ds.test_y.tolist() == bunch.target[te].tolist()
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.in_channels == 1 and ds.image_size == 8 and not ds.flip
    assert ds.subset is None


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------

def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    # magic: two zero bytes, 0x08 (unsigned byte), number of dims; then big-endian u32 dims
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _write_idx_set(folder: Path, gz: bool, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 255
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        raw = _idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


def test_idx_header_is_the_real_magic():
    raw = _idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (2).to_bytes(4, "big")
    assert _idx_bytes(np.zeros(7, np.uint8))[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x07"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("layout", ["root", "torchvision"])
def test_idx_loads(tmp_path, name, gz, layout):
    sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    folder = tmp_path if layout == "root" else tmp_path / sub / "raw"
    arrays = _write_idx_set(folder, gz)
    ds = data.load(name, tmp_path)
    assert ds.name == name
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"][:, None].astype(np.float32)) / 255
    assert torch.equal(ds.train_x, expected)
    assert ds.train_x.max().item() == 1.0
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    if name == "fashion-mnist":
        assert ds.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                              "Shirt", "Sneaker", "Bag", "Ankle boot"]
        assert ds.flip
    else:
        assert ds.classes == [str(i) for i in range(10)] and not ds.flip


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_idx_truncated_file_is_a_user_error(tmp_path, gz):
    _write_idx_set(tmp_path, gz)
    stem = "train-images-idx3-ubyte"
    path = tmp_path / (f"{stem}.gz" if gz else stem)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    msg = _user_error(data.load, "mnist", tmp_path)
    assert stem in msg and str(tmp_path) in msg


def test_idx_truncated_header_and_bad_magic_are_user_errors(tmp_path):
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    assert "train-labels-idx1-ubyte" in _user_error(data.load, "mnist", tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx at all")
    msg = _user_error(data.load, "mnist", tmp_path)
    assert "IDX" in msg


def test_idx_count_mismatch_is_a_user_error(tmp_path):
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4, np.uint8)))
    _user_error(data.load, "fashion-mnist", tmp_path)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    msg = _user_error(data.load, "fashion-mnist", tmp_path / "nowhere")
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "train-images-idx3-ubyte" in msg
    # an existing folder without the files: same advice, naming the missing file
    msg = _user_error(data.load, "fashion-mnist", tmp_path)
    assert "apt-get install dataset-fashion-mnist" in msg and "not found" in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "imagefolder"])
def test_missing_root_names_what_was_expected(tmp_path, name):
    msg = _user_error(data.load, name, tmp_path / "nowhere")
    assert name in msg and "--data-root" in msg and "expected" in msg
    assert "apt-get" not in msg


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_loads_from_the_default_root():
    ds = data.load("fashion-mnist")  # no root: the Debian package's path
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert len(ds.train_y) == 60000 and len(ds.test_y) == 10000
    assert ds.train_x.max().item() == 1.0 and ds.train_x.min().item() == 0.0
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert ds.classes[4] == "Coat"


# --- CIFAR (python pickles) -------------------------------------------------------------------

class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for CIFAR: every str as a byte string (BINSTRING),
    numpy's reconstructor under numpy.core. Loaded with encoding='latin1' they come back as str."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)


def _dump(obj, path: Path, style: str):
    with open(path, "wb") as fh:
        if style == "py2":
            _Py2Pickler(fh, protocol=2).dump(obj)
        else:
            pickle.dump(obj, fh, protocol=2)


def _cifar_images(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_cifar10(root: Path, style="py3", per_batch=3, n_test=4):
    rng = np.random.default_rng(1)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = _cifar_images(rng, per_batch)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        if b == 1:
            x[0] = 0
            x[0, 2 * 32 + 3] = 255  # R plane (first 1024 bytes), row 2, column 3
        _dump({"batch_label": f"training batch {b} of 5", "labels": y, "data": x,
               "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]}, base / f"data_batch_{b}", style)
        train_x.append(x)
        train_y += y
    test_x, test_y = _cifar_images(rng, n_test), [int(v) for v in rng.integers(0, 10, n_test)]
    _dump({"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x,
           "filenames": [f"test_{i}.png" for i in range(n_test)]}, base / "test_batch", style)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump({"num_cases_per_batch": 10000, "label_names": names, "num_vis": 3072}, base / "batches.meta", style)
    return np.concatenate(train_x), train_y, test_x, test_y, names


@pytest.mark.parametrize("style", ["py3", "py2"])
def test_cifar10_loads(tmp_path, style):
    train_x, train_y, test_x, test_y, names = _write_cifar10(tmp_path, style)
    ds = data.load("cifar10", tmp_path)
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_y.tolist() == train_y and ds.test_y.tolist() == test_y
    assert ds.classes == names
    expected = torch.from_numpy(train_x.reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    assert torch.equal(ds.train_x, expected)
    assert torch.equal(ds.test_x, torch.from_numpy(test_x.reshape(-1, 3, 32, 32).astype(np.float32)) / 255)
    # the pixel written into the R plane is in channel 0 at (row 2, column 3), nowhere else
    first = ds.train_x[0]
    assert first[0, 2, 3].item() == 1.0 and first.sum().item() == 1.0
    assert ds.in_channels == 3 and ds.image_size == 32 and ds.flip and ds.crop_padding == 4


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    # the payload works: plain pickle.load would run it
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Evil(proof), protocol=2))
    assert proof.exists()

    _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _dump({"data": _Evil(marker), "labels": [0]}, tmp_path / "cifar-10-batches-py" / "data_batch_1", "py3")
    msg = _user_error(data.load, "cifar10", tmp_path)
    assert "system" in msg
    assert not marker.exists()


def test_cifar_non_pickle_is_a_user_error(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02}q\x01(U\x04da")
    _user_error(data.load, "cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    assert "data_batch_5" in _user_error(data.load, "cifar10", tmp_path)


@pytest.mark.parametrize("style", ["py3", "py2"])
def test_cifar100_loads(tmp_path, style):
    rng = np.random.default_rng(2)
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    splits = {}
    for split, n in (("train", 7), ("test", 3)):
        x, fine = _cifar_images(rng, n), [int(v) for v in rng.integers(0, 100, n)]
        _dump({"filenames": [f"{split}{i}.png" for i in range(n)], "batch_label": f"{split} batch",
               "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": x}, base / split, style)
        splits[split] = (x, fine)
    fine_names = [f"class{i:02d}" for i in range(100)]
    _dump({"fine_label_names": fine_names, "coarse_label_names": [f"super{i}" for i in range(20)]},
          base / "meta", style)
    ds = data.load("cifar100", tmp_path)
    assert ds.train_x.shape == (7, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist() == splits["train"][1] and ds.test_y.tolist() == splits["test"][1]
    assert ds.classes == fine_names
    expected = torch.from_numpy(splits["train"][0].reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    assert torch.equal(ds.train_x, expected)


# --- SVHN (.mat) ------------------------------------------------------------------------------

def test_svhn_loads(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    mats = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # (H, W, C, N) as in the originals
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 meaning digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        mats[split] = (x, y)
    x, y = mats["train"]
    x[5, 7, 0, 2] = 255  # image 2, row 5, column 7, red
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    ds = data.load("svhn", tmp_path)
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_y.tolist() == [1, 2, 3, 4, 5, 6] and ds.test_y.tolist() == [1, 2, 3, 4]
    assert ds.train_x[2, 0, 5, 7].item() == 1.0
    assert torch.equal(ds.train_x, torch.from_numpy(x.transpose(3, 2, 0, 1).astype(np.float32)) / 255)
    assert ds.classes == [str(i) for i in range(10)] and not ds.flip

    y10 = np.array([[10], [1], [10], [9]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": mats["test"][0], "y": y10})
    assert data.load("svhn", tmp_path).test_y.tolist() == [0, 1, 0, 9]


def test_svhn_missing_split_is_a_user_error(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((2, 1))})
    assert "test_32x32.mat" in _user_error(data.load, "svhn", tmp_path)


# --- image folders ----------------------------------------------------------------------------

def _write_folder(root: Path, mode: str, size=(6, 5), per_class=2, classes=("cat", "dog")):
    from PIL import Image

    rng = np.random.default_rng(4)
    written = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(root / split / c / f"{i}.png")
                written[(split, c, i)] = arr
    return written


def test_imagefolder_rgb(tmp_path):
    written = _write_folder(tmp_path, "RGB")
    ds = data.load("imagefolder", tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert ds.train_x.shape == (4, 3, 5, 6) and ds.test_x.shape == (4, 3, 5, 6)  # (N, C, H, W)
    assert ds.train_y.tolist() == [0, 0, 1, 1]
    img = written[("train", "dog", 1)]
    assert torch.equal(ds.train_x[3], torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)) / 255)
    # channel order: red is channel 0
    assert ds.train_x[3, 0, 1, 2].item() == pytest.approx(img[1, 2, 0] / 255)
    assert ds.flip


def test_imagefolder_greyscale_has_one_channel(tmp_path):
    written = _write_folder(tmp_path, "L", size=(4, 4))
    ds = data.load("imagefolder", tmp_path)
    assert ds.train_x.shape == (4, 1, 4, 4) and ds.in_channels == 1
    assert torch.equal(ds.test_x[0, 0], torch.from_numpy(written[("test", "cat", 0)].astype(np.float32)) / 255)


def test_imagefolder_mixed_modes_become_rgb(tmp_path):
    from PIL import Image

    _write_folder(tmp_path, "L", size=(4, 4))
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "train" / "cat" / "red.png")
    ds = data.load("imagefolder", tmp_path)
    assert ds.in_channels == 3 and ds.train_x.shape[0] == 5


def test_imagefolder_mixed_sizes_is_a_user_error(tmp_path):
    from PIL import Image

    _write_folder(tmp_path, "RGB")
    Image.new("RGB", (9, 9)).save(tmp_path / "test" / "dog" / "big.png")
    assert "size" in _user_error(data.load, "imagefolder", tmp_path)


def test_imagefolder_empty_is_a_user_error(tmp_path):
    (tmp_path / "train").mkdir()
    _user_error(data.load, "imagefolder", tmp_path)


def test_imagefolder_does_not_hold_every_file_open(tmp_path):
    resource = pytest.importorskip("resource")
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(100):
                Image.new("L", (2, 2), i).save(tmp_path / split / c / f"{i}.png")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    limit = in_use + 100  # fewer than the 400 images
    if soft != resource.RLIM_INFINITY and soft < limit:
        pytest.skip("file descriptor limit already low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        ds = data.load("imagefolder", tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert ds.train_x.shape == (200, 1, 2, 2)


# --- --subset ---------------------------------------------------------------------------------

def _indexed_mnist(root: Path, n=240):
    """Train image i carries its index in pixel (0, 0) and classes are unbalanced."""
    root.mkdir(parents=True, exist_ok=True)
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 0, 0] = np.arange(n)
    y = np.concatenate([np.full(k, c) for c, k in enumerate([60, 40, 40, 30, 20, 20, 10, 10, 5, 5])])
    y = np.random.default_rng(0).permutation(y).astype(np.uint8)
    (root / "train-images-idx3-ubyte").write_bytes(_idx_bytes(x))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(y))
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(x[:10]))
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(y[:10]))
    return y


def _picked(ds) -> list[int]:
    return torch.round(ds.train_x[:, 0, 0, 0] * 255).long().tolist()


def test_subset_is_stratified_seeded_and_sorted(tmp_path):
    y = _indexed_mnist(tmp_path)
    full = np.bincount(y, minlength=10)
    a = data.load("mnist", tmp_path, subset=60, subset_seed=3)
    assert len(a.train_y) == 60 and a.subset == 60 and a.subset_seed == 3
    idx = _picked(a)
    assert idx == sorted(idx) and len(set(idx)) == 60
    assert a.train_y.tolist() == y[idx].tolist()
    counts = np.bincount(a.train_y.numpy(), minlength=10)
    assert np.all(np.abs(counts - full * 60 / len(y)) <= 1), counts
    assert len(a.test_y) == 10  # the test split is untouched
    b = data.load("mnist", tmp_path, subset=60, subset_seed=3)
    assert _picked(b) == idx and torch.equal(a.train_x, b.train_x)
    c = data.load("mnist", tmp_path, subset=60, subset_seed=4)
    assert _picked(c) != idx
    whole = data.load("mnist", tmp_path, subset=len(y))
    assert _picked(whole) == list(range(len(y)))


def test_digits_subset_is_stratified():
    full = data.load("digits")
    sub = data.load("digits", subset=200, subset_seed=0)
    expected = np.bincount(full.train_y.numpy()) * 200 / 1437
    assert np.all(np.abs(np.bincount(sub.train_y.numpy()) - expected) <= 1)
    assert sub.train_x.shape == (200, 1, 8, 8)


@pytest.mark.parametrize("size", [0, -1, 241, 5, 238])
def test_subset_out_of_range_is_a_user_error(tmp_path, size):
    _indexed_mnist(tmp_path)
    assert "--subset" in _user_error(data.load, "mnist", tmp_path, subset=size)


# --- normalisation and augmentation -----------------------------------------------------------

def test_prepare_normalises_per_channel(tmp_path):
    _write_cifar10(tmp_path)
    ds = data.load("cifar10", tmp_path)
    mean, std = ds.channel_stats()
    assert len(mean) == len(std) == 3
    dev = data.prepare(ds, mean, std, "cpu")
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(dev.train_x, (ds.train_x - m) / s)
    assert torch.allclose(dev.pad_value, (-m / s).view(-1))  # a black pixel, normalised
    assert dev.flip and dev.crop_padding == 4
    assert dev.train_x.double().mean(dim=(0, 2, 3)).abs().max() < 1e-5
    with pytest.raises(UserError):
        data.prepare(ds, [0.5], [0.5], "cpu")


def _crops(x, pad_value, p):
    """Every shifted crop of the padded input: (K, B, C, H, W) with K = (2p+1)^2."""
    b, c, h, w = x.shape
    padded = pad_value.view(1, c, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
    padded[:, :, p:p + h, p:p + w] = x
    return torch.stack([padded[:, :, dy:dy + h, dx:dx + w]
                        for dy in range(2 * p + 1) for dx in range(2 * p + 1)])


def _match(out, crops):
    """(K, B) bool: which crops each output image equals exactly."""
    return (crops == out[None]).flatten(2).all(-1)


def _tiny(flip, p=2, b=300):
    x = torch.arange(b * 2 * 4 * 5, dtype=torch.float32).view(b, 2, 4, 5)  # every value unique
    pad = torch.tensor([-7.0, -9.0])
    return x, data.DeviceData(x, torch.zeros(b, dtype=torch.long), x, torch.zeros(b, dtype=torch.long),
                              pad, p, flip)


def test_augment_is_a_shifted_crop_of_the_padded_input():
    x, dev = _tiny(flip=False)
    out = data.augment(x, dev, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.is_contiguous()
    m = _match(out, _crops(x, dev.pad_value, 2))
    assert m.any(0).all()  # each image is one of the 25 crops...
    assert m.any(1).all()  # ...and every shift occurs over 300 images
    # the padding holds the per-channel pad value
    shifted = m[0].nonzero().flatten()[0]  # crop (0, 0): the top-left padding is visible
    assert torch.all(out[shifted, 0, :2, :] == -7.0) and torch.all(out[shifted, 1, :, :2] == -9.0)


def test_augment_flips_only_when_the_data_allows():
    x, dev = _tiny(flip=True)
    out = data.augment(x, dev, torch.Generator().manual_seed(0))
    crops = _crops(x, dev.pad_value, 2)
    plain, flipped = _match(out, crops).any(0), _match(out, crops.flip(-1)).any(0)
    assert torch.all(plain | flipped) and not torch.any(plain & flipped)
    assert 0.3 < flipped.float().mean().item() < 0.7


def test_augment_is_deterministic_for_a_seed():
    x, dev = _tiny(flip=True)
    a = data.augment(x, dev, torch.Generator().manual_seed(5))
    b = data.augment(x, dev, torch.Generator().manual_seed(5))
    c = data.augment(x, dev, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_digits_are_never_flipped():
    ds = data.load("digits")
    assert not ds.flip and ds.crop_padding == 1
    mean, std = ds.channel_stats()
    dev = data.prepare(ds, mean, std, "cpu")
    assert not dev.flip
    x = dev.train_x
    crops = _crops(x, dev.pad_value, 1)
    gen = torch.Generator().manual_seed(0)
    asymmetric = ~torch.stack([(c == c.flip(-1)).flatten(1).all(-1) for c in crops]).any(0)
    assert asymmetric.sum() > 1000
    for _ in range(5):
        out = data.augment(x, dev, gen)
        assert out.shape == x.shape
        assert _match(out, crops).any(0).all()  # all unflipped crops, for all 1437 images


def test_flip_per_dataset():
    assert data.FLIP["digits"] is False and data.FLIP["mnist"] is False and data.FLIP["svhn"] is False
    assert data.FLIP["fashion-mnist"] and data.FLIP["cifar10"] and data.FLIP["cifar100"]
    assert set(data.FLIP) == set(data.DATASETS)
