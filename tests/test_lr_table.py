"""scripts/lr_table.py: the search summary and the picks the reproduce scripts pass to `coun-lab sweep`."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lr_table(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "lr_table.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def finished(run_dir: Path, method: str, avg_gap: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(
        {"method": method, "cl": False, "RA": 99.0, "UA": 5.0, "TA": 95.0, "MIA": 10.0, "pflops": 0.001,
         "seconds": 1.0, "gap": {"RA": 1, "UA": 1, "TA": 1, "MIA": 1}, "avg_gap": avg_gap}))


def test_picks_the_lowest_mean_point_and_shares_couns_cl_weight(tmp_path):
    for setting, shift in (("class-3", 0.0), ("random-10pct", 1.0)):
        d = tmp_path / setting
        finished(d / "ft-lr0.01", "ft", 2.0 + shift)
        finished(d / "ft-lr0.1", "ft", 1.0 + shift)
        finished(d / "coun-lr0.01", "coun", 3.0 + shift)
        finished(d / "coun-lr0.1", "coun", 4.0 + shift)
        finished(d / "coun-lr0.01-lambda0.3", "coun", 0.5 + shift)
    (tmp_path / "class-3" / "coun-lr0.005").mkdir()  # an unfinished run (no metrics.json) counts for nothing

    refused = lr_table(tmp_path, "--picks", "ft", "coun")
    assert refused.returncode != 0 and "has not finished (no lrs.txt)" in refused.stderr

    (tmp_path / "lrs.txt").write_text("0.01 0.1\n")
    picks = lr_table(tmp_path, "--picks", "ft", "coun")
    assert picks.returncode == 0, picks.stderr
    # lambda without a method: the +CL runs of the sweep add the same term as CoUn.
    assert picks.stdout.split() == "--set ft.lr=0.1 --set coun.lr=0.01 --set lambda=0.3".split()

    table = lr_table(tmp_path).stdout
    assert "| method | lr | other | Avg. Gap class-3 | Avg. Gap random-10pct | mean |" in table
    assert "| coun | **0.01** | lambda 0.3 | 0.50 | 1.50 | **1.00** |" in table
    assert "| ft | 0.01 | default | 2.00 | 3.00 | 2.50 |" in table

    (tmp_path / "lrs.txt").write_text("0.01 0.05 0.1\n")  # a grid lr the search lacks
    lacking = lr_table(tmp_path, "--picks", "ft")
    assert lacking.returncode != 0 and "lacks ft at some of [0.01, 0.05, 0.1]" in lacking.stderr


def test_digits_search_picks_are_the_committed_ones():
    """The committed digits search gives the picks the README states."""
    picks = lr_table(ROOT / "results" / "tuning" / "digits", "--picks", "ft", "neggrad+", "l1-sparse",
                     "salun", "not", "coun")
    assert picks.stdout.split() == ("--set ft.lr=0.1 --set neggrad+.lr=0.02 --set l1-sparse.lr=0.1 "
                                    "--set salun.lr=0.01 --set not.lr=0.05 --set coun.lr=0.1").split()
