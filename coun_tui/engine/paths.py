"""Where shipped models and saved runs live."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _models_dir() -> Path:
    """$COUN_LAB_MODELS; else the checkpoints an installed wheel carries as coun_tui/models (the
    build copies models/ there, see setup.py); else models/ beside the package in a source tree."""
    if os.environ.get("COUN_LAB_MODELS"):
        return Path(os.environ["COUN_LAB_MODELS"])
    packaged = resources.files("coun_tui") / "models"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "models"


MODELS_DIR = _models_dir()
DEFAULT_MODEL = MODELS_DIR / "resnet18-digits.safetensors"


def default_runs_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("COUN_LAB_RUNS", Path(user_data_dir("coun-lab")) / "runs"))


def shipped_models() -> list[Path]:
    return sorted(MODELS_DIR.glob("*.safetensors")) if MODELS_DIR.is_dir() else []


def saved_runs(runs_dir: Path) -> list[Path]:
    """Run directories under runs_dir (those with a run.toml), newest first, finished or not."""
    try:
        runs = [p for p in Path(runs_dir).iterdir() if (p / "run.toml").is_file()]
    except OSError:
        return []

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # deleted meanwhile
            return 0.0

    return sorted(runs, key=mtime, reverse=True)
