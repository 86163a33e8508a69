"""INSTALLED AS A TOOL (slow, ~1 min: builds the wheel and installs it into a fresh virtual environment).

The wheel carries the shipped checkpoints as package data (coun_tui/models), so `coun-lab` installed
from it, run away from the source tree, finds its default model: a one-epoch `unlearn` without
--model runs on it and says so. The venv sees the system's torch etc. (--system-site-packages);
only the built wheel is installed into it, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL_LIMIT_MB = 80  # the two shipped checkpoints (~67 MB) and the code


def _source_copy(dest: Path) -> Path:
    """The project's files a build reads, without the source tree's build/ leftovers."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "coun_tui", dest / "coun_tui", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "models").symlink_to(ROOT / "models")  # read, never copied into the source copy
    return dest


def test_the_built_wheel_runs_unlearn_on_its_default_model_away_from_the_source_tree(tmp_path):
    src = _source_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COUN_LAB_MODELS")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, env=env, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("coun_lab-*.whl")
    assert wheel.stat().st_size < WHEEL_LIMIT_MB * 2**20, f"wheel is {wheel.stat().st_size / 2**20:.0f} MB"
    assert "coun_tui/models/resnet18-digits.safetensors" in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, env=env)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, env=env, cwd=tmp_path)
    away = tmp_path / "elsewhere"
    away.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import coun_tui; print(coun_tui.__file__)"],
                           capture_output=True, text=True, env=env, cwd=away, check=True).stdout
    assert str(venv) in where, where  # the installed copy, not the source tree
    done = subprocess.run([str(venv / "bin" / "coun-lab"), "unlearn", "--method", "ft", "--forget-class", "3",
                           "--epochs", "1", "--out", "run", "--quiet"],
                          capture_output=True, text=True, env=env, cwd=away, timeout=300)
    assert done.returncode == 0, done.stderr
    packaged = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / \
        "coun_tui" / "models" / "resnet18-digits.safetensors"
    assert f"model: the default, {packaged}" in done.stderr
    assert (away / "run" / "metrics.json").is_file() and "saved run in run" in done.stdout
