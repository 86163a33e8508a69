"""`--help` of every command, `coun-lab methods` and mistakes in a command's input answer before torch
is imported (each in a fresh interpreter, as a user's command runs); scripts/startup_times.py times them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "startup_times.py"
spec = importlib.util.spec_from_file_location("startup_times", SCRIPT)
assert spec and spec.loader
startup_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(startup_times)


@pytest.mark.parametrize("name,args,code", startup_times.CASES, ids=[c[0] for c in startup_times.CASES])
def test_answers_without_importing_torch(name, args, code, tmp_path):
    rc, _, torch_loaded, said = startup_times.run_case(args, tmp_path)
    assert rc == code, said
    assert not torch_loaded, f"{name} imported torch"
    if code == 2:
        assert said.startswith("error: "), said
