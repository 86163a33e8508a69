"""Where shipped models and saved runs live."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path(os.environ.get("COUN_LAB_MODELS", Path(__file__).resolve().parents[2] / "models"))
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
