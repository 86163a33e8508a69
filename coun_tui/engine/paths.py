"""Where shipped models and saved runs live."""

from __future__ import annotations

import json
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
    """Run directories under runs_dir, newest first (finished or not)."""
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if (p / "run.toml").is_file()]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def run_status(run_dir: Path) -> str:
    """done, failed, cancelled, or running/interrupted (no verdict written)."""
    if (run_dir / "metrics.json").is_file():
        return "done"
    status = run_dir / "status.json"
    if status.is_file():
        return json.loads(status.read_text()).get("status", "failed")
    return "incomplete"
