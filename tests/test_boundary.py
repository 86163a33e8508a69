"""The engine never imports textual: checked statically and at run time."""

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "coun_tui" / "engine"


def test_no_engine_module_mentions_textual_in_imports():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("textual", "textual_plotext")]
    assert not offenders, offenders


def test_importing_and_running_the_engine_loads_no_textual():
    code = (
        "import sys, pkgutil, importlib, coun_tui.engine as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'coun_tui.engine.'): importlib.import_module(m.name)\n"
        "from coun_tui.engine.methods import all_methods; all_methods()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_the_engine_needs_no_ray_and_loads_it_only_for_the_ray_backend():
    walk = ("import sys, pkgutil, importlib, coun_tui.engine as e\n"
            "for m in pkgutil.walk_packages(e.__path__, 'coun_tui.engine.'): importlib.import_module(m.name)\n"
            "import coun_tui.cli, coun_tui.tui.app\n")
    blocked = "import sys\nsys.modules['ray'] = None  # `import ray` fails, as without Ray installed\n" + walk
    loaded = walk + "assert 'ray' not in sys.modules, 'an engine module imports ray'\n"
    for code in (blocked, loaded):
        out = subprocess.run([sys.executable, "-c", code + "print('ok')\n"], capture_output=True, text=True)
        assert out.returncode == 0 and "ok" in out.stdout, out.stderr
