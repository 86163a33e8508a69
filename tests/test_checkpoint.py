"""Checkpoint save/load with real files: our format, foreign layouts, refusals, atomic writes."""

from __future__ import annotations

import json
import os

import pytest
import safetensors
import safetensors.torch
import torch
import torchvision
from torch import nn

from coun_tui.engine import UserError, checkpoint
from coun_tui.engine.model import build

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]
META = {
    "arch": "resnet18", "stem": "cifar", "in_channels": 3, "num_classes": 10,
    "dataset": "cifar10", "subset": None, "mean": CIFAR_MEAN, "std": CIFAR_STD,
    "epochs": 2, "note": "original",
}


def _model(num_classes=10, stem="cifar", seed=0):
    torch.manual_seed(seed)
    m = build(num_classes, 3, stem)
    # Non-trivial BatchNorm statistics, so buffers are part of what must round-trip.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            mod.num_batches_tracked.fill_(7)
    return m.eval()


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def test_roundtrip_ours(tmp_path):
    model, path = _model(), tmp_path / "m.safetensors"
    checkpoint.save(path, model, META)
    loaded, meta = checkpoint.load(path)
    _same_state(model, loaded)
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    assert {k: meta[k] for k in META} == META
    assert meta["source"] == "coun-lab" and meta["stored_dtype"] == "float32"
    with safetensors.safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
        assert set(f.keys()) == set(model.state_dict())
    assert raw["arch"] == '"resnet18"' and raw["num_classes"] == "10" and raw["subset"] == "null"
    assert all(json.loads(v) == META[k] for k, v in raw.items() if k in META)
    assert checkpoint.read_meta(path) == meta


def test_saved_file_loads_into_plain_torchvision(tmp_path, x):
    model, path = _model(), tmp_path / "m.safetensors"
    checkpoint.save(path, model, META)
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    tv.maxpool = nn.Identity()
    tv.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    assert torch.equal(_logits(tv, x), _logits(model, x))


def test_float16_storage(tmp_path, x):
    model = _model()
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    checkpoint.save(full, model, META)
    checkpoint.save(half, model, META, dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, meta = checkpoint.load(half)
    assert meta["stored_dtype"] == "float16"
    assert all(t.dtype == torch.float32 for t in loaded.state_dict().values() if t.is_floating_point())
    assert (_logits(loaded, x) - _logits(model, x)).abs().max() < 1e-2


def test_import_torchvision_imagenet_stem(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    loaded, meta = checkpoint.load(path)
    assert (meta["stem"], meta["num_classes"], meta["in_channels"]) == ("imagenet", 1000, 3)
    assert meta["source"] == "torchvision" and meta["dataset"] is None and meta["mean"] is None
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(_logits(loaded, x), _logits(tv, x))


def test_import_optml_layout(tmp_path, x):
    ref = _model(seed=3)
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    sd["module.normalize.mean"] = torch.tensor(CIFAR_MEAN)
    sd["module.normalize.std"] = torch.tensor(CIFAR_STD)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"state_dict": sd, "epoch": 3, "best_sa": 91.5}, path)
    loaded, meta = checkpoint.load(path)
    assert meta["source"] == "optml" and meta["stem"] == "cifar" and meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx(CIFAR_MEAN) and meta["std"] == pytest.approx(CIFAR_STD)
    _same_state(ref, loaded)
    assert torch.equal(_logits(loaded, x), _logits(ref, x))


def test_import_kuangliu_layout(tmp_path, x):
    ref = _model(seed=4)
    rename = lambda k: k.replace(".downsample.", ".shortcut.").replace("fc.", "linear.")  # noqa: E731
    sd = {rename(k): v for k, v in ref.state_dict().items()}
    assert any(".shortcut." in k for k in sd) and "linear.weight" in sd
    path = tmp_path / "ckpt.pth"
    torch.save({"net": sd, "acc": 95.0, "epoch": 199}, path)
    loaded, meta = checkpoint.load(path)
    assert meta["source"] == "kuangliu" and meta["mean"] is None
    assert torch.equal(_logits(loaded, x), _logits(ref, x))
    assert checkpoint.read_meta(path) == meta


def test_import_foreign_safetensors_with_partial_metadata(tmp_path, x):
    ref = _model(seed=7)
    tensors = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / "hub.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt", "dataset": '"cifar10"'})
    loaded, meta = checkpoint.load(path)
    assert meta["source"] == "torchvision" and meta["dataset"] == "cifar10" and "format" not in meta
    assert (meta["stem"], meta["num_classes"], meta["mean"]) == ("cifar", 10, None)
    assert torch.equal(_logits(loaded, x), _logits(ref, x))
    assert checkpoint.read_meta(path) == meta


def test_refuses_resnet50(tmp_path):
    path = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(UserError, match="r50.pt is not a ResNet-18 checkpoint") as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)


def test_refuses_non_resnet(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(UserError, match="missing conv1.weight"):
        checkpoint.load(path)


class Booby:
    """Unpickling this writes a marker file: proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        with open(state["marker"], "w") as f:
            f.write("pwned")
        self.__dict__.update(state)


def test_refuses_pickled_objects_without_running_them(tmp_path):
    # Control: an unsafe load really would run the side effect.
    control_marker, control = tmp_path / "control", tmp_path / "control.pt"
    torch.save({"obj": Booby(control_marker)}, control)
    torch.load(control, weights_only=False)
    assert control_marker.exists()

    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    torch.save({"state_dict": _model().state_dict(), "obj": Booby(marker)}, path)
    with pytest.raises(UserError, match="evil.pt contains pickled Python objects") as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="pickled Python objects"):
        checkpoint.read_meta(path)
    assert not marker.exists()


def test_refuses_truncated_safetensors(tmp_path):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, _model(), META)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="m.safetensors"):
        checkpoint.load(path)
    with pytest.raises(UserError):
        checkpoint.read_meta(path)
    path.write_bytes(data[:5])  # not even a complete header length
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_refuses_garbage_pt(tmp_path):
    path = tmp_path / "junk.pt"
    for data in (b"not a checkpoint" * 10, b"PK\x03\x04" + b"0" * 64):  # bad pickle, bad zip
        path.write_bytes(data)
        with pytest.raises(UserError, match="cannot read junk.pt") as e:
            checkpoint.load(path)
        assert "\n" not in str(e.value)


def test_missing_path(tmp_path):
    for name in ("nope.safetensors", "nope.pt"):
        with pytest.raises(UserError, match=f"no such checkpoint: .*{name}"):
            checkpoint.load(tmp_path / name)


def test_atomic_save(tmp_path, monkeypatch, x):
    original, path = _model(seed=5), tmp_path / "m.safetensors"
    checkpoint.save(path, original, META)
    before = path.read_bytes()
    other = _model(seed=6)

    with pytest.raises(ValueError, match="dataset"):
        checkpoint.save(path, other, {k: v for k, v in META.items() if k != "dataset"})

    real_fdopen = os.fdopen

    def fdopen_that_fills_the_disk(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)
        real_write = fh.write

        def write(data):
            real_write(data[:100])  # part of the file reaches the disk, then the disk is full
            raise OSError("disk full")

        fh.write = write
        return fh

    monkeypatch.setattr(os, "fdopen", fdopen_that_fills_the_disk)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, other, META)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    loaded, _ = checkpoint.load(path)
    _same_state(original, loaded)

    checkpoint.save(path, other, {**META, "note": "replaced"})  # a good save does replace it
    loaded, meta = checkpoint.load(path)
    assert meta["note"] == "replaced" and torch.equal(_logits(loaded, x), _logits(other, x))
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_normalisation_is_recorded_given_or_known_never_recomputed():
    optml = {"in_channels": 3, "source": "optml", "mean": CIFAR_MEAN, "std": CIFAR_STD}
    assert checkpoint.resolve_normalisation(optml, "cifar10") == {
        "mean": CIFAR_MEAN, "std": CIFAR_STD, "normalisation": "recorded in the file"}
    kuangliu = {"in_channels": 3, "source": "kuangliu", "mean": None, "std": None}
    known = checkpoint.resolve_normalisation(kuangliu, "cifar10")
    assert known["std"] == [0.2023, 0.1994, 0.2010] and "kuangliu" in known["normalisation"]
    given = checkpoint.resolve_normalisation(kuangliu, "cifar10", [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert given["mean"] == [0.5] * 3 and given["normalisation"] == "given (--mean/--std)"
    for meta, dataset in ((kuangliu, "cifar100"), ({**kuangliu, "source": "torchvision"}, "cifar10")):
        with pytest.raises(UserError, match="does not record the normalisation.*--mean and --std"):
            checkpoint.resolve_normalisation(meta, dataset)
    with pytest.raises(UserError, match="need 3 value"):
        checkpoint.resolve_normalisation(kuangliu, "cifar10", [0.5], [0.2])


def test_imported_model_without_normalisation_is_refused_until_given(digits_model, tmp_path, capsys, cli):
    """A plain state dict of the digits model (torchvision names, nothing else) as a .pt file."""
    model, meta = checkpoint.load(digits_model)
    path = tmp_path / "digits.pt"
    torch.save(model.state_dict(), path)
    args = ["eval", "--model", path, "--dataset", "digits", "--forget-class", "3", "--json"]
    capsys.readouterr()
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not record the normalisation" in err and "--mean" in err
    mean, std = (",".join(map(str, meta[k])) for k in ("mean", "std"))
    assert cli(*args, "--mean", mean, "--std", std) == 0
    assert json.loads(capsys.readouterr().out)["TA"] > 90  # the digits model's own constants: it works
    out = tmp_path / "run"
    assert cli("unlearn", "--model", path, "--dataset", "digits", "--method", "ft", "--forget-class", "3",
               "--epochs", "1", "--mean", mean, "--std", std, "--out", out, "-q") == 0
    saved = checkpoint.read_meta(out / "model.safetensors")
    assert saved["mean"] == pytest.approx(meta["mean"]) and saved["normalisation"] == "given (--mean/--std)"
