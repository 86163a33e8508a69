"""A method from an installed package, found through the `coun_tui.methods` entry points."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1"

[tool.setuptools]
py-modules = ["{module}"]

[project.entry-points."coun_tui.methods"]
{entry}
"""

PLUGIN = '''\
import torch.nn.functional as F

from coun_tui.engine.methods import Method, Param


class ScaledFT(Method):
    name = "scaled-ft"
    summary = "fine-tune on the retain set with the cross-entropy scaled by --scale"
    params = {"epochs": 1, "scale": Param(0.5, "factor on the cross-entropy", gt=0)}

    def loss(self, ctx, batch, logits):
        return {"ce": self.hp["scale"] * F.cross_entropy(logits, batch.y)}


def make():  # a factory: the entry point may name one instead of the class
    return ScaledFT
'''


def _package(where: Path, name: str, module: str, source: str, entry: str) -> Path:
    pkg = where / name
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT.format(name=name, module=module, entry=entry))
    (pkg / f"{module}.py").write_text(source)
    return pkg


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """Two packages really installed (pip, offline, into a folder of their own): a working plugin
    given as a factory, and a broken one whose module does not import."""
    tmp = tmp_path_factory.mktemp("plugins")
    site = tmp / "site"
    good = _package(tmp, "coun-lab-scaled-ft", "scaled_ft", PLUGIN, 'scaled-ft = "scaled_ft:make"')
    bad = _package(tmp, "coun-lab-broken", "broken_plugin", "import no_such_module_here\n",
                   'broken = "broken_plugin:Thing"')
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(good), str(bad)], check=True, cwd=tmp)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), "OMP_NUM_THREADS": "1"}
    return env, tmp


def _lab(env, *args, cwd):
    return subprocess.run([sys.executable, "-m", "coun_tui", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_an_installed_plugin_is_listed_and_a_broken_one_is_one_warning(plugin_env):
    env, tmp = plugin_env
    listed = _lab(env, "methods", cwd=tmp)
    assert listed.returncode == 0, listed.stderr
    assert "scaled-ft" in listed.stdout and "factor on the cross-entropy" in listed.stdout
    warnings = [line for line in listed.stderr.splitlines() if "plugin" in line]
    assert len(warnings) == 1 and "coun-lab-broken" in warnings[0] and "no_such_module_here" in warnings[0]
    helped = _lab(env, "unlearn", "--help", cwd=tmp)
    assert "--scale" in helped.stdout


def test_a_plugin_method_runs_through_unlearn(plugin_env, digits_model):
    env, tmp = plugin_env
    out = tmp / "run"
    done = _lab(env, "unlearn", "--model", digits_model, "--method", "scaled-ft", "--forget-class", "3",
                "--scale", "0.8", "--out", out, "--quiet", cwd=tmp)
    assert done.returncode == 0, done.stderr + done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "scaled-ft" and metrics["hparams"]["scale"] == 0.8
    assert metrics["hparams"]["epochs"] == 1 and metrics["pflops"] > 0
