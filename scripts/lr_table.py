"""Summarise an lr search (scripts/tune_lr.sh): Avg. Gap per setting and lr, the mean over
settings, and each method's pick (the lowest mean).

    python scripts/lr_table.py DIR                   the table, as markdown
    python scripts/lr_table.py DIR --picks M1 M2...  `--set M.lr=PICK` for each method, for a sweep
"""

import re
import sys
from pathlib import Path

from coun_tui.engine.methods import all_methods
from coun_tui.engine.report import load_run


def search(root: Path) -> tuple[list[str], dict[str, dict[float, dict[str, float]]]]:
    """The settings searched, and method -> lr -> setting -> Avg. Gap of every finished run."""
    settings = sorted(p.name for p in root.iterdir() if p.is_dir())
    gaps: dict[str, dict[float, dict[str, float]]] = {}
    for setting in settings:
        for run in (root / setting).iterdir():
            match = re.fullmatch(r"(.+)-lr([0-9.e-]+)", run.name)
            if match and (run / "metrics.json").is_file():
                gaps.setdefault(match[1], {}).setdefault(float(match[2]), {})[setting] = load_run(run)["avg_gap"]
    return settings, gaps


def means(per_lr: dict[float, dict[str, float]], settings: list[str]) -> dict[float, float]:
    return {lr: sum(g.values()) / len(g) for lr, g in sorted(per_lr.items()) if len(g) == len(settings)}


def table(settings, gaps) -> str:
    lines = ["| method | lr | " + " | ".join(f"Avg. Gap {s}" for s in settings) + " | mean |",
             "|---|---|" + "---|" * (len(settings) + 1)]
    for method in [m for m in all_methods() if m in gaps]:
        mean = means(gaps[method], settings)
        best = min(mean, key=mean.get) if mean else None
        for lr, value in mean.items():
            mark = "**" if lr == best else ""
            cells = " | ".join(f"{gaps[method][lr][s]:.2f}" for s in settings)
            lines.append(f"| {method} | {mark}{lr:g}{mark} | {cells} | {mark}{value:.2f}{mark} |")
    return "\n".join(lines)


def picks(root: Path, settings, gaps, methods: list[str]) -> str:
    grid_file = root / "lrs.txt"  # written by tune_lr.sh once the whole search has run
    if not grid_file.is_file():
        sys.exit(f"error: the lr search in {root} has not finished (no lrs.txt); run its tune script first")
    grid = {float(lr) for lr in grid_file.read_text().split()}
    out = []
    for method in methods:
        mean = means(gaps.get(method, {}), settings)
        if not grid <= set(mean):
            sys.exit(f"error: the lr search in {root} lacks {method} at some of {sorted(grid)}; "
                     "run its tune script first")
        out.append(f"--set {method}.lr={min(mean, key=mean.get):g}")
    return " ".join(out)


if __name__ == "__main__":
    root, rest = Path(sys.argv[1]), sys.argv[2:]
    settings, gaps = search(root)
    print(picks(root, settings, gaps, rest[1:]) if rest[:1] == ["--picks"] else table(settings, gaps))
