"""Summarise an lr search (scripts/tune_digits.sh): Avg. Gap per setting and lr, the mean over
settings, and each method's pick (the lowest mean). Usage: python scripts/lr_table.py DIR"""

import re
import sys
from pathlib import Path

from coun_tui.engine.methods import all_methods
from coun_tui.engine.report import load_run

root = Path(sys.argv[1])
settings = sorted(p.name for p in root.iterdir() if p.is_dir())
gaps: dict[tuple[str, float], dict[str, float]] = {}
for setting in settings:
    for run in (root / setting).iterdir():
        match = re.fullmatch(r"(.+)-lr([0-9.e-]+)", run.name)
        if match and (run / "metrics.json").is_file():
            gaps.setdefault((match[1], float(match[2])), {})[setting] = load_run(run)["avg_gap"]

print("| method | lr | " + " | ".join(f"Avg. Gap {s}" for s in settings) + " | mean |")
print("|---|---|" + "---|" * (len(settings) + 1))
for method in [m for m in all_methods() if any(name == m for name, _ in gaps)]:
    rows = sorted((lr, g) for (m, lr), g in gaps.items() if m == method and len(g) == len(settings))
    means = {lr: sum(g.values()) / len(g) for lr, g in rows}
    best = min(means, key=means.get) if means else None
    for lr, g in rows:
        mark = "**" if lr == best else ""
        cells = " | ".join(f"{g[s]:.2f}" for s in settings)
        print(f"| {method} | {mark}{lr:g}{mark} | {cells} | {mark}{means[lr]:.2f}{mark} |")
