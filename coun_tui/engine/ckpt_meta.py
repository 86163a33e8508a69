"""A checkpoint's metadata, read without torch: the safetensors header holds it, so commands check a
model, its dataset and its classes before torch loads (checkpoint.py loads the weights)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import safetensors
from pydantic import BaseModel, ConfigDict, Field

from coun_tui.engine import UserError
from coun_tui.engine.schema import parse_data

REQUIRED_KEYS = ("arch", "stem", "in_channels", "num_classes", "dataset", "subset", "mean", "std")
TORCH_SUFFIXES = (".pt", ".pth", ".tar")
META_FIX = "re-save the checkpoint (e.g. with coun-lab train) or correct its metadata"



class CheckpointMeta(BaseModel):
    """What a checkpoint's metadata must hold for coun-lab to use it (other keys are kept)."""

    model_config = ConfigDict(extra="allow", strict=True)
    arch: str = "resnet18"
    stem: Literal["cifar", "imagenet"]
    in_channels: int = Field(ge=1)
    num_classes: int = Field(ge=1)
    dataset: str | None = None
    subset: int | None = Field(None, ge=1)
    subset_seed: int | None = Field(None, ge=0)
    mean: list[float] | None = None
    std: list[float] | None = None
    classes: list[str] | None = None
    recipe: dict[str, Any] | None = None
    forget: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    method: str | None = None
    cl: bool | None = None
    hparams: dict[str, Any] | None = None
    seed: int | None = None


def checked(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata, checked against CheckpointMeta and against itself; one line if it is damaged."""
    where = f"{path.name} metadata"
    m = parse_data(CheckpointMeta, meta, where, META_FIX)
    for key in ("mean", "std"):
        values = getattr(m, key)
        if values is None:
            continue
        if len(values) != m.in_channels:
            raise UserError(f"{where}: {key} has {len(values)} value(s) for {m.in_channels} channel(s); {META_FIX}")
        if not all(math.isfinite(v) for v in values) or (key == "std" and min(values) <= 0):
            raise UserError(f"{where}: {key} must hold finite numbers{' > 0' if key == 'std' else ''}; {META_FIX}")
    if m.classes is not None and len(m.classes) != m.num_classes:
        raise UserError(f"{where}: {len(m.classes)} class names for {m.num_classes} classes; {META_FIX}")
    return meta


def decode(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v  # foreign metadata need not be JSON
    return out


def reorder(meta: dict[str, Any]) -> dict[str, Any]:
    return {**{k: meta.get(k) for k in REQUIRED_KEYS}, **meta}


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """A coun-lab checkpoint's metadata, checked, from its safetensors header alone (numpy, never
    torch); None for a file only a full load can describe (a .pt, a foreign safetensors). A path
    that is no checkpoint is a UserError, as checkpoint.load words it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such checkpoint: {path}; check the path (`coun-lab train` makes one)")
    if path.suffix in TORCH_SUFFIXES:
        return None
    if path.suffix != ".safetensors":
        raise UserError(f"{path.name}: unsupported checkpoint type; use .safetensors, .pt, .pth or .tar")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            raw = f.metadata() or {}
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path.name} is not a valid safetensors file ({e}); re-save or re-download it") from e
    if not all(k in raw for k in REQUIRED_KEYS):
        return None
    return reorder(checked(path, {**decode(raw), "source": "coun-lab"}))
