"""How long the CLI takes to answer `--help`, `methods` and a mistake, and whether torch loaded for it.

    python scripts/startup_times.py [--repeat N]

Each case runs in a fresh interpreter (as a user's command does); torch must load for none of them.
tests/test_startup.py runs the same cases and asserts that torch stays out."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "unlearn", "runs", "eval", "methods", "tui", "serve", "compare", "sweep", "curve", "bench")
NOPE = "/nonexistent/nope.safetensors"
FT = ["unlearn", "--method", "ft", "--out", "{tmp}/o", "--forget-class"]  # + a class and the mistake
# (what it shows, the arguments, the exit code expected)
CASES: list[tuple[str, list[str], int]] = [
    ("--help", ["--help"], 0),
    *((f"{c} --help", [c, "--help"], 0) for c in COMMANDS),
    ("methods", ["methods"], 0),
    ("unlearn: no such model", ["unlearn", "--model", NOPE, *FT[1:], "3"], 2),
    ("unlearn: unknown method", ["unlearn", "--method", "nosuch", "--out", "{tmp}/o", "--forget-class", "3"], 2),
    ("unlearn: unknown class", [*FT, "11"], 2),
    ("unlearn: lr out of range", [*FT, "3", "--lr", "-1"], 2),
    ("unlearn: unknown device", [*FT, "3", "--device", "gpu"], 2),
    ("unlearn: --cl on coun", ["unlearn", "--method", "coun", "--cl", "--out", "{tmp}/o", "--forget-class", "3"], 2),
    ("unlearn: --out is a file", ["unlearn", "--method", "ft", "--out", "{tmp}/file", "--forget-class", "3"], 2),
    ("sweep: unknown method", ["sweep", "--methods", "ft,nosuch", "--out", "{tmp}/s", "--forget-class", "3"], 2),
    ("sweep: --set out of range", ["sweep", "--methods", "ft", "--out", "{tmp}/s", "--forget-class", "3",
                                   "--set", "lr=-1"], 2),
    ("eval: no such model", ["eval", "--model", NOPE], 2),
]
# Runs the CLI as `coun-lab` does and says on stderr's last line whether torch was imported.
DRIVER = """import sys
from coun_tui.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch loaded" if "torch" in sys.modules else "torch not loaded", file=sys.stderr)
sys.exit(code)
"""


def run_case(args: list[str], tmp: Path) -> tuple[int, float, bool, str]:
    """(exit code, seconds, whether torch loaded, the last line before the torch verdict)."""
    (tmp / "file").touch()
    argv = [a.replace("{tmp}", str(tmp)) for a in args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DRIVER, *argv], capture_output=True, text=True, env=env, cwd=tmp,
                          timeout=120)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    shown = lines[:-1] if done.returncode else done.stdout.splitlines()  # the error, or the answer's start
    said = next((ln.strip() for ln in (reversed(shown) if done.returncode else shown) if ln.strip()), "")
    return done.returncode, seconds, lines[-1:] == ["torch loaded"], said


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    print(f"{'case':<28} {'rc':>3} {'median s':>9} {'torch':>6}  said")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args, _ in CASES:
            results = [run_case(args, Path(tmp)) for _ in range(repeat)]
            rc, _, torch_loaded, said = results[-1]
            median = statistics.median(r[1] for r in results)
            print(f"{name:<28} {rc:>3} {median:>9.2f} {'yes' if torch_loaded else 'no':>6}  {said[:70]}")


if __name__ == "__main__":
    main()
