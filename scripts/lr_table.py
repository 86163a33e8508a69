"""Summarise an lr search (scripts/tune_lr.sh): Avg. Gap per setting and searched point, the mean
over settings, and each method's pick (the lowest mean).

A point is a run directory named METHOD-lrLR, optionally followed by -KEYVALUE for other
hyperparameters searched with it (e.g. coun-lr0.01-lambda0.1).

    python scripts/lr_table.py DIR                   the table, as markdown
    python scripts/lr_table.py DIR --picks M1 M2...  `--set M.KEY=PICK` for each method, for a sweep

CoUn's CL-term hyperparameters (lambda, tau) are picked as `--set KEY=VALUE` for every method: the
+CL runs add the same term as CoUn (the poster's Figure 4), and methods without CL ignore them.
"""

import re
import sys
from pathlib import Path

from coun_tui.engine.methods import all_methods
from coun_tui.engine.report import load_run

NUMBER = r"\d[0-9.]*(?:e-?\d+)?"
POINT = re.compile(rf"(.+?)-lr({NUMBER})((?:-[a-z_]+{NUMBER})*)")
CL_TERM = ("lambda", "tau")

Point = tuple[tuple[str, float], ...]  # (("lr", 0.01), ("lambda", 0.1)): lr first, then as named


def point_of(name: str) -> tuple[str, Point] | None:
    match = POINT.fullmatch(name)
    if not match:
        return None
    rest = tuple((k, float(v)) for k, v in re.findall(rf"-([a-z_]+)({NUMBER})", match[3]))
    return match[1], (("lr", float(match[2])), *rest)


def search(root: Path) -> tuple[list[str], dict[str, dict[Point, dict[str, float]]]]:
    """The settings searched, and method -> point -> setting -> Avg. Gap of every finished run."""
    settings = sorted(p.name for p in root.iterdir() if p.is_dir())
    gaps: dict[str, dict[Point, dict[str, float]]] = {}
    for setting in settings:
        for run in (root / setting).iterdir():
            found = point_of(run.name)
            if found and (run / "metrics.json").is_file():
                method, point = found
                gaps.setdefault(method, {}).setdefault(point, {})[setting] = load_run(run)["avg_gap"]
    return settings, gaps


def means(per_point: dict[Point, dict[str, float]], settings: list[str]) -> dict[Point, float]:
    return {p: sum(g.values()) / len(g) for p, g in sorted(per_point.items()) if len(g) == len(settings)}


def table(settings, gaps) -> str:
    others = any(len(p) > 1 for per in gaps.values() for p in per)  # a column for them only if any
    lines = ["| method | lr | " + ("other | " if others else "")
             + " | ".join(f"Avg. Gap {s}" for s in settings) + " | mean |",
             "|---|---|" + ("---|" if others else "") + "---|" * (len(settings) + 1)]
    for method in [m for m in all_methods() if m in gaps]:
        mean = means(gaps[method], settings)
        best = min(mean, key=mean.get) if mean else None
        for point, value in mean.items():
            mark = "**" if point == best else ""
            cells = " | ".join(f"{gaps[method][point][s]:.2f}" for s in settings)
            other = (" ".join(f"{k} {v:g}" for k, v in point[1:]) or "default") + " | " if others else ""
            lines.append(f"| {method} | {mark}{point[0][1]:g}{mark} | {other}{cells} | {mark}{value:.2f}{mark} |")
    return "\n".join(lines)


def picks(root: Path, settings, gaps, methods: list[str]) -> str:
    grid_file = root / "lrs.txt"  # written by the tune script once the whole search has run
    if not grid_file.is_file():
        sys.exit(f"error: the lr search in {root} has not finished (no lrs.txt); run its tune script first")
    grid = {float(lr) for lr in grid_file.read_text().split()}
    out = []
    for method in methods:
        mean = means(gaps.get(method, {}), settings)
        if not grid <= {p[0][1] for p in mean if len(p) == 1}:
            sys.exit(f"error: the lr search in {root} lacks {method} at some of {sorted(grid)}; "
                     "run its tune script first")
        for key, value in min(mean, key=mean.get):
            scope = "" if method == "coun" and key in CL_TERM else f"{method}."
            out.append(f"--set {scope}{key}={value:g}")
    return " ".join(out)


if __name__ == "__main__":
    root, rest = Path(sys.argv[1]), sys.argv[2:]
    settings, gaps = search(root)
    print(picks(root, settings, gaps, rest[1:]) if rest[:1] == ["--picks"] else table(settings, gaps))
