"""The checks of a run's settings that need no torch: the model file and its metadata, the method,
its hyperparameters and +CL, the seed, the device's and precision's spelling. Commands call them
before they import torch, so a mistake is one line within a second; the runner calls them too
(then checks what needs torch: that the device exists, that bf16 runs on it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from coun_tui.engine import UserError, ckpt_meta
from coun_tui.engine.methods import check_method

PRECISIONS = ("auto", "bf16", "fp32")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device_name(name: str) -> None:
    if not _DEVICE.fullmatch(name):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda:N")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use auto, bf16 or fp32")


def check_model(path: str | Path | None) -> dict[str, Any] | None:
    """The checkpoint exists and is of a kind coun-lab reads; its metadata when its header holds it."""
    return ckpt_meta.read_meta(path) if path else None


def check_run(model: str | None, method: str, cl: bool, hparams: dict[str, Any], seed: int, device: str,
              precision: str) -> dict[str, Any] | None:
    """Every check above, for one run; the model's metadata (None when only a full load can read it)."""
    check_device_name(device)
    check_precision(precision)
    check_method(method, cl, hparams, seed)
    return check_model(model)
