"""Checkpoints: our safetensors files, plus imports of common foreign ResNet-18 layouts.

Our format is a safetensors file whose tensor names are torchvision's ResNet-18 names and whose
metadata values are JSON strings (safetensors metadata is str -> str). Foreign `.pt`/`.pth`/`.tar`
files are read only with `torch.load(weights_only=True)`, so no pickled code ever runs.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from . import UserError, ckpt_meta
from .ckpt_meta import REQUIRED_KEYS, TORCH_SUFFIXES, checked, decode, reorder
from .files import atomic_write
from .model import ResNet18

STORED_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# Keys under which training scripts commonly nest the state dict (OPTML, kuangliu, generic).
WRAPPER_KEYS = ("state_dict", "net", "model", "model_state_dict")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
PREFIXES = ("module.", "_orig_mod.")
EXPECTED = "expected torchvision/OPTML/kuangliu ResNet-18 names"
RESAVE = "give a .safetensors, or a .pt saved with torch.save(model.state_dict(), ...)"
def save(path: str | Path, model: torch.nn.Module, meta: dict[str, Any], dtype: str = "float32") -> None:
    """Write `model` and `meta` atomically: a crash or error never leaves a half-written file."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta is missing required keys: {', '.join(missing)}")
    if dtype not in STORED_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(STORED_DTYPES)}, not {dtype!r}")
    # "source" describes a file's layout and is set by load(), so it is not stored.
    encoded = {str(k): json.dumps(v) for k, v in meta.items() if k not in ("source", "stored_dtype")}
    encoded["stored_dtype"] = json.dumps(dtype)
    # Clones on cpu: safetensors needs contiguous, unshared tensors; ints (num_batches_tracked) stay.
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(STORED_DTYPES[dtype])
        tensors[name] = t.contiguous().clone()

    # Serialised in memory, then written atomically: the old file survives any failure.
    blob = safetensors.torch.save(tensors, metadata=encoded)
    with atomic_write(path) as fh:
        fh.write(blob)


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[ResNet18, dict[str, Any]]:
    """Load any supported checkpoint as (float32 eval-mode ResNet18 on `device`, metadata)."""
    path = Path(path)
    state, file_meta, source = _read(path)
    defaults = {"dataset": None, "subset": None, "mean": None, "std": None}
    # Shapes are the truth about the network; metadata cannot override them.
    meta = {**defaults, **file_meta, **_detect(path, state), "source": source}
    meta = checked(path, meta)
    model = ResNet18(meta["num_classes"], meta["in_channels"], meta["stem"])
    _check_keys(path, model, state)
    _check_types(path, model, state)
    model.load_state_dict(state, strict=True)  # copies into float32 params, so fp16 files load as float32
    _check_finite(path, model)
    return model.to(device).eval(), reorder(meta)


def read_meta(path: str | Path) -> dict[str, Any]:
    """Metadata only; cheap for our safetensors files (header read, see ckpt_meta), a full load otherwise."""
    meta = ckpt_meta.read_meta(path)
    return meta if meta is not None else load(path)[1]


# --- reading -------------------------------------------------------------------------------


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Return (state dict with torchvision names, metadata found in the file, layout name)."""
    if not path.is_file():
        raise UserError(f"no such checkpoint: {path}; check the path (`coun-lab train` makes one)")
    if path.suffix == ".safetensors":
        with _open_safetensors(path) as f:
            raw = f.metadata() or {}
            try:
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle is not iterable
            except safetensors.SafetensorError as e:
                raise UserError(f"{path.name} is corrupt or truncated ({e}); re-save or re-download it") from e
        file_meta = decode(raw)
        if all(k in raw for k in REQUIRED_KEYS):
            return state, file_meta, "coun-lab"
        state, found_meta, source = _normalise(path, state)
        # Only keys we understand: foreign headers carry things like {"format": "pt"}.
        return state, {k: v for k, v in {**file_meta, **found_meta}.items() if k in REQUIRED_KEYS}, source
    if path.suffix in TORCH_SUFFIXES:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch words every failure "Weights only load failed"; only these name a refused class.
            if not re.search(r"GLOBAL|allowlist", str(e)):
                raise UserError(f"cannot read {path.name}: not a PyTorch checkpoint, or corrupt; {RESAVE}") from e
            raise UserError(
                f"{path.name} contains pickled Python objects, which coun-lab refuses to execute; "
                "re-save it as a plain state_dict (torch.save(model.state_dict(), ...)) or as safetensors"
            ) from e
        except Exception as e:  # zip/format errors; torch's own text is long and multi-line
            raise UserError(f"cannot read {path.name}: not a PyTorch checkpoint, or corrupt; {RESAVE}") from e
        return _normalise(path, obj)
    raise UserError(f"{path.name}: unsupported checkpoint type; use .safetensors, .pt, .pth or .tar")


def _open_safetensors(path: Path) -> Any:  # safetensors ships no type information
    try:
        return safetensors.safe_open(str(path), framework="pt", device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path.name} is not a valid safetensors file ({e}); re-save or re-download it") from e


def _normalise(path: Path, obj: object) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Unwrap, strip prefixes and rename a foreign state dict to torchvision names."""
    for _ in range(3):  # wrappers can nest, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise UserError(f"{path.name} is not a ResNet-18 checkpoint: it holds a {type(obj).__name__}, not a state dict")
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = str(k)
        while k.startswith(PREFIXES):
            k = k.split(".", 1)[1]
        state[k] = v
    if not state:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise UserError(f"{path.name} is not a ResNet-18 checkpoint: no tensors found (top-level keys: {keys})")

    meta, source = {}, "torchvision"
    # OPTML repos keep their NormalizeByChannelMeanStd buffers inside the model.
    if "normalize.mean" in state or "normalize.std" in state:
        source = "optml"
        for stat in ("mean", "std"):
            t = state.pop(f"normalize.{stat}", None)
            meta[stat] = None if t is None else [float(x) for x in t.flatten()]
    # kuangliu/pytorch-cifar: shortcut -> downsample, linear -> fc.
    if any(".shortcut." in k or k.startswith("linear.") for k in state):
        source = "kuangliu"
        state = {re.sub(r"^linear\.", "fc.", re.sub(r"\.shortcut\.", ".downsample.", k)): v for k, v in state.items()}
    return state, meta, source


def _detect(path: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """arch/stem/in_channels/num_classes from conv1 and fc shapes."""
    conv1, fc = state.get("conv1.weight"), state.get("fc.weight")
    for name, t, ndim in (("conv1.weight", conv1, 4), ("fc.weight", fc, 2)):
        if t is None or t.dim() != ndim:
            what = "missing" if t is None else f"wrong shape {tuple(t.shape)} for"
            raise UserError(f"{path.name} is not a ResNet-18 checkpoint: {what} {name} "
                            f"(found {len(state)} tensors; {EXPECTED})")
    assert conv1 is not None and fc is not None  # both checked just above
    stems = {3: "cifar", 7: "imagenet"}
    if conv1.shape[-1] not in stems:
        side = conv1.shape[-1]
        raise UserError(f"{path.name} is not a ResNet-18 checkpoint: conv1 kernel is {side}x{side}, "
                        "expected 3x3 (CIFAR stem) or 7x7 (ImageNet stem)")
    return {"arch": "resnet18", "stem": stems[conv1.shape[-1]], "in_channels": int(conv1.shape[1]),
            "num_classes": int(fc.shape[0])}


def _check_keys(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """One clear line instead of load_state_dict's multi-line error; fills old files' counters."""
    expected = model.state_dict()
    for k, v in expected.items():  # very old checkpoints lack BatchNorm's num_batches_tracked
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v.clone()
    why = None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        why = f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    elif unexpected:
        why = f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
    else:
        bad = next((k for k in expected if state[k].shape != expected[k].shape), None)
        if bad is not None:
            why = f"{bad} has shape {tuple(state[bad].shape)}, expected {tuple(expected[bad].shape)}"
    if why:
        raise UserError(f"{path.name} is not a ResNet-18 checkpoint: {why} (found {len(state)} tensors; {EXPECTED})")


def _check_types(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Weights must be floating point: integer "weights" would load as numbers that mean nothing."""
    for k, want in model.state_dict().items():
        got = state[k]
        if want.is_floating_point() and not got.is_floating_point():
            raise UserError(f"{path.name}: {k} is stored as {str(got.dtype).removeprefix('torch.')}, not as "
                            "floating-point weights, so it is no trained model; give a checkpoint of float weights")


def _check_finite(path: Path, model: torch.nn.Module) -> None:
    for k, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{path.name}: {k} holds NaN or infinite values (a diverged or damaged "
                            "model); use another checkpoint")


# Normalisation constants of foreign layouts whose training scripts are public, by (layout, dataset).
KNOWN_NORMALISATION = {
    # kuangliu/pytorch-cifar, main.py: transforms.Normalize((0.4914, 0.4822, 0.4465),
    # (0.2023, 0.1994, 0.2010)) for training and test (the std is not CIFAR-10's pixel std, ~0.247).
    ("kuangliu", "cifar10"): ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010],
                             "kuangliu/pytorch-cifar's CIFAR-10 constants (main.py)"),
}


def resolve_normalisation(meta: dict[str, Any], dataset: str, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> dict[str, Any]:
    """The per-channel mean/std a model must be fed with, and where they came from.

    Given values (--mean/--std) win; then what the file records (ours always does; OPTML
    checkpoints carry NormalizeByChannelMeanStd buffers); then a known layout's documented
    constants. Anything else is refused: statistics recomputed from the data would differ from
    those the model was trained with (kuangliu's std is 0.20, CIFAR-10's 0.25).
    """
    channels = int(meta["in_channels"])
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise UserError("give both --mean and --std (one value per channel, comma-separated)")
        how = "given (--mean/--std)"
    elif meta.get("mean") is not None and meta.get("std") is not None:
        mean, std = meta["mean"], meta["std"]
        how = meta.get("normalisation") or ("recorded in the file" if meta.get("source") != "coun-lab"
                                            else "the training split's statistics, recorded by coun-lab")
    elif (str(meta.get("source")), dataset) in KNOWN_NORMALISATION:
        mean, std, how = KNOWN_NORMALISATION[(str(meta.get("source")), dataset)]
    else:
        raise UserError(f"{meta.get('source') or 'this'} checkpoint does not record the normalisation it was "
                        f"trained with; pass --mean and --std ({channels} comma-separated value(s) each, as in "
                        "its training script's transforms.Normalize)")
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UserError(f"--mean/--std need {channels} value(s) each (std > 0) for this {channels}-channel model; "
                        f"got mean {mean}, std {std}")
    return {"mean": mean, "std": std, "normalisation": how}
