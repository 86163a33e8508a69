"""How far a run's live numbers at its last epoch are from its final full-set ones, on digits.

Runs every method on the shipped digits model (class 3 and a random 10% forgotten, seed 0; 2
epochs, Retrain 3) into OUT, skipping runs already finished there, then compares each run's last
EpochMetrics event in events.jsonl (the probe estimate the lab shows live) with its metrics.json
(the full-set evaluation). Prints one row per run, the largest gap per metric, and the largest
spread of the live MIA over its draws at that epoch. With run directories as arguments, it only
compares those.

    python scripts/live_vs_final.py [--out runs/live-vs-final]
    python scripts/live_vs_final.py RUN_DIR...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = ("RA", "UA", "TA", "MIA")
METHODS = ("retrain", "ft", "ga", "rl", "neggrad+", "l1-sparse", "salun", "not", "coun")
FORGETS = {"class-3": {"classes": [3]}, "random-10pct": {"fraction": 0.1}}


def make_runs(out: Path) -> list[Path]:
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.paths import DEFAULT_MODEL
    from coun_tui.engine.runner import RunSpec, prepare
    from coun_tui.engine.runs import record

    dirs = []
    for tag, forget in FORGETS.items():
        for method in METHODS:
            run_dir = out / tag / method
            dirs.append(run_dir)
            if (run_dir / "metrics.json").is_file():
                continue
            spec = RunSpec(method=method, model=str(DEFAULT_MODEL), forget=ForgetSpec(**forget, seed=0),
                           hparams={"epochs": 3 if method == "retrain" else 2})
            print(f"{tag}/{method}", flush=True)
            for _ in record(prepare(spec), run_dir):
                pass
    return dirs


def last_epoch(run_dir: Path) -> dict | None:
    last = None
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") == "epoch":
            last = event
    return last["metrics"] if last else None


def compare(dirs: list[Path]) -> None:
    worst = dict.fromkeys(METRICS, 0.0)
    spreads = []
    print("| run | " + " | ".join(f"{k} live / final" for k in METRICS) + " | live MIA ± |")
    print("|---|" + "---|" * (len(METRICS) + 1))
    for d in dirs:
        if not (d / "metrics.json").is_file() or (live := last_epoch(d)) is None:
            continue
        final = json.loads((d / "metrics.json").read_text())
        cells = []
        for k in METRICS:
            worst[k] = max(worst[k], abs(live[k] - final[k]))
            cells.append(f"{live[k]:.2f} / {final[k]:.2f}")
        spreads.append(live.get("MIA_sd", float("nan")))
        print(f"| {d.parent.name}/{d.name} | " + " | ".join(cells) + f" | {spreads[-1]:.1f} |")
    print(f"\n{len(spreads)} runs; largest |live - final| at the last epoch: "
          + ", ".join(f"{k} {v:.2f}" for k, v in worst.items())
          + f"; largest spread of the live MIA at that epoch: ±{max(spreads, default=0):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories to compare (default: make them)")
    parser.add_argument("--out", type=Path, default=Path("runs/live-vs-final"))
    args = parser.parse_args()
    compare(args.runs or make_runs(args.out))


if __name__ == "__main__":
    main()
