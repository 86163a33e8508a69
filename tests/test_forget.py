"""Forget sets: classes, seeded fractions, index files, split.npz, and class names."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from coun_tui.engine import UserError, data
from coun_tui.engine.forget import ForgetSpec, Split, make_split, parse_classes

LABELS = np.random.default_rng(0).integers(0, 10, 500)


def _user_error(fn, *args) -> str:
    with pytest.raises(UserError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def _check_partition(split: Split, n: int):
    assert split.retain.dtype == np.int64 and split.forget.dtype == np.int64
    assert np.all(np.diff(split.retain) > 0) and np.all(np.diff(split.forget) > 0)  # sorted, unique
    assert np.intersect1d(split.retain, split.forget).size == 0
    assert np.array_equal(np.union1d(split.retain, split.forget), np.arange(n))


# --- classes ----------------------------------------------------------------------------------

def test_classes_are_exactly_the_indices_with_those_labels():
    split = make_split(ForgetSpec(classes=[3, 7]), LABELS)
    assert np.array_equal(split.forget, np.flatnonzero((LABELS == 3) | (LABELS == 7)))
    _check_partition(split, len(LABELS))
    assert set(LABELS[split.retain]) == set(range(10)) - {3, 7}


def test_no_forget_mode_forgets_nothing():
    split = make_split(ForgetSpec(), LABELS)
    assert split.forget.size == 0 and np.array_equal(split.retain, np.arange(len(LABELS)))


# --- fractions --------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction,n", [(0.1, 500), (0.123, 997), (0.5, 11), (0.01, 1437)])
def test_fraction_size_is_rounded(fraction, n):
    split = make_split(ForgetSpec(fraction=fraction, seed=0), np.zeros(n, dtype=np.int64))
    assert split.forget.size == round(fraction * n)
    _check_partition(split, n)


def test_fraction_is_deterministic_given_the_seed():
    a = make_split(ForgetSpec(fraction=0.1, seed=1), LABELS)
    b = make_split(ForgetSpec(fraction=0.1, seed=1), LABELS)
    c = make_split(ForgetSpec(fraction=0.1, seed=2), LABELS)
    assert a.same_as(b) and np.array_equal(a.forget, b.forget)
    assert not a.same_as(c) and not np.array_equal(a.forget, c.forget)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 10.0])
def test_fraction_out_of_range_is_a_user_error(fraction):
    assert "--forget-fraction" in _user_error(make_split, ForgetSpec(fraction=fraction), LABELS)


# --- index files ------------------------------------------------------------------------------

def test_indices_from_npy(tmp_path):
    path = tmp_path / "forget.npy"
    np.save(path, np.array([9, 2, 2, 40], dtype=np.int32))
    split = make_split(ForgetSpec(indices_file=str(path)), LABELS)
    assert split.forget.tolist() == [2, 9, 40]
    _check_partition(split, len(LABELS))


def test_indices_from_text(tmp_path):
    path = tmp_path / "forget.txt"
    path.write_text("5\n1, 3\n\n499 0\n")
    split = make_split(ForgetSpec(indices_file=str(path)), LABELS)
    assert split.forget.tolist() == [0, 1, 3, 5, 499]
    _check_partition(split, len(LABELS))


def test_indices_from_a_saved_split(tmp_path):
    original = make_split(ForgetSpec(fraction=0.2, seed=7), LABELS)
    original.save(tmp_path / "split.npz")
    again = make_split(ForgetSpec(indices_file=str(tmp_path / "split.npz")), LABELS)
    assert again.same_as(original)


@pytest.mark.parametrize("bad", [[0, 500], [-1, 3], [10**6]])
@pytest.mark.parametrize("fmt", ["npy", "txt", "npz"])
def test_out_of_range_indices_are_a_user_error(tmp_path, bad, fmt):
    path = tmp_path / f"forget.{fmt}"
    if fmt == "npy":
        np.save(path, np.array(bad))
    elif fmt == "txt":
        path.write_text(" ".join(map(str, bad)))
    else:
        np.savez(path, retain=np.array([], dtype=np.int64), forget=np.array(bad))
    msg = _user_error(make_split, ForgetSpec(indices_file=str(path)), LABELS)
    assert "0..499" in msg


@pytest.mark.parametrize("content", ["1 2 three", "1.5"])
def test_unreadable_indices_are_a_user_error(tmp_path, content):
    path = tmp_path / "forget.txt"
    path.write_text(content)
    _user_error(make_split, ForgetSpec(indices_file=str(path)), LABELS)


def test_missing_or_malformed_index_files_are_user_errors(tmp_path):
    _user_error(make_split, ForgetSpec(indices_file=str(tmp_path / "nope.npy")), LABELS)
    np.savez(tmp_path / "other.npz", something=np.arange(3))
    _user_error(make_split, ForgetSpec(indices_file=str(tmp_path / "other.npz")), LABELS)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _user_error(make_split, ForgetSpec(indices_file=str(tmp_path / "objects.npy")), LABELS)


@pytest.mark.parametrize("spec", [
    ForgetSpec(classes=[1], fraction=0.1),
    ForgetSpec(fraction=0.1, indices_file="x.npy"),
    ForgetSpec(classes=[1], indices_file="x.npy"),
    ForgetSpec(classes=[1], fraction=0.1, indices_file="x.npy"),
])
def test_two_modes_at_once_is_a_user_error(spec):
    assert "one of" in _user_error(make_split, spec, LABELS)


# --- split.npz --------------------------------------------------------------------------------

def test_split_save_load_roundtrip(tmp_path):
    split = make_split(ForgetSpec(classes=[0]), LABELS)
    path = tmp_path / "run" / "split.npz"
    split.save(path)
    with np.load(path) as z:
        assert set(z.files) == {"retain", "forget"}
        assert z["retain"].dtype.kind == "i" and z["forget"].dtype.kind == "i"
        assert np.array_equal(z["forget"], split.forget)
    loaded = Split.load(path)
    assert loaded.same_as(split)
    assert loaded.retain.dtype == np.int64 and loaded.forget.dtype == np.int64
    assert [p.name for p in path.parent.iterdir()] == ["split.npz"]  # no temporary left behind


def test_split_load_refuses_other_files(tmp_path):
    _user_error(Split.load, tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", retain=np.arange(3))
    _user_error(Split.load, tmp_path / "other.npz")
    np.save(tmp_path / "plain.npy", np.arange(3))
    _user_error(Split.load, tmp_path / "plain.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    _user_error(Split.load, tmp_path / "junk.npz")


# --- class names ------------------------------------------------------------------------------

def _idx(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


@pytest.fixture
def fashion(tmp_path: Path) -> data.Dataset:
    y = np.arange(20) % 10
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((20, 28, 28))))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(y))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((10, 28, 28))))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(y[:10]))
    return data.load("fashion-mnist", tmp_path)


def test_parse_classes_by_id_and_name(fashion):
    assert parse_classes("3,Coat", fashion.class_index) == [3, 4]
    assert parse_classes(" coat , BAG ", fashion.class_index) == [4, 8]
    assert parse_classes("Ankle boot,T-shirt/top", fashion.class_index) == [0, 9]
    assert parse_classes("4,Coat", fashion.class_index) == [4]
    assert parse_classes("9", fashion.class_index) == [9]
    assert parse_classes("", fashion.class_index) == [] and parse_classes(None, fashion.class_index) == []
    split = make_split(ForgetSpec(classes=parse_classes("Coat", fashion.class_index)), fashion.train_y.numpy())
    assert split.forget.tolist() == [4, 14]


@pytest.mark.parametrize("token", ["Socks", "10", "-1", "3,Sock"])
def test_unknown_class_is_a_user_error(fashion, token):
    msg = _user_error(parse_classes, token, fashion.class_index)
    assert "Coat" in msg and "0-9" in msg  # lists what would be accepted


def test_one_naming_scheme_for_forget_sets():
    assert ForgetSpec(classes=[3]).tag() == "class-3" and ForgetSpec(classes=[3, 5]).tag() == "class-3-5"
    assert ForgetSpec(fraction=0.1, seed=4).tag() == "random-10pct"
    assert ForgetSpec(indices_file="/x/my forget.npy").tag() == "indices-my_forget"
    assert ForgetSpec().tag() == "none"


def test_recorded_indices_win_over_their_file(tmp_path):
    spec = ForgetSpec.from_dict({"indices_file": str(tmp_path / "gone.npy"), "indices": [4, 2], "n_forget": 2})
    assert make_split(spec, LABELS).forget.tolist() == [2, 4]
    with pytest.raises(UserError, match="must lie in 0..499"):
        make_split(ForgetSpec(indices=[500]), LABELS)


@pytest.mark.parametrize("arr,why", [(np.array([1.0, 2.0]), "float64, not integers"),
                                     (np.array([True, False]), "boolean mask"),
                                     (np.arange(4).reshape(2, 2), "1-D"),
                                     (np.array(3), "0-D")])
def test_index_arrays_are_never_converted(tmp_path, arr, why):
    np.save(tmp_path / "i.npy", arr)
    assert why in _user_error(make_split, ForgetSpec(indices_file=str(tmp_path / "i.npy")), LABELS)


def test_spec_roundtrip_and_description():
    spec = ForgetSpec(classes=[4], seed=3)
    assert ForgetSpec.from_dict(spec.to_dict()) == spec
    assert spec.describe(data.FASHION_CLASSES) == "class Coat"
    assert ForgetSpec(fraction=0.1, seed=2).describe() == "10% random (seed 2)"
    assert ForgetSpec(indices_file="/a/b/forget.npy").describe() == "indices from forget.npy"
    assert ForgetSpec().describe() == "nothing"
