"""Comparison tables of finished runs (the paper's Table 1 layout) as Markdown, CSV or JSON.

One place builds them for `coun-lab compare`, `coun-lab sweep` and the app.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from coun_tui.engine import UserError

METRICS = ("RA", "UA", "TA", "MIA")
COLUMNS = ("RA", "UA", "TA", "MIA", "avg_gap", "pflops", "seconds")
LOWER_IS_BETTER = {"avg_gap", "pflops", "seconds"}


def run_label(m: dict[str, Any]) -> str:
    return m["method"] + ("+CL" if m.get("cl") else "")


def load_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished run (no metrics.json)")
    m = json.loads(path.read_text())
    m.setdefault("name", Path(run_dir).name)
    return m


def row_of(m: dict[str, Any]) -> dict[str, Any]:
    """One table row: the metrics, their gaps, Avg. Gap, PFLOPs and time of one run."""
    gap = m.get("gap") or {}
    return {"run": m.get("name", ""), "method": run_label(m), **{k: m[k] for k in METRICS},
            **{f"gap_{k}": gap.get(k) for k in METRICS}, "avg_gap": m.get("avg_gap"),
            "pflops": m["pflops"], "seconds": m["seconds"]}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every numeric column (n = number of runs)."""
    rows = [row_of(m) for m in runs]
    out: dict[str, Any] = {"method": rows[0]["method"], "n": len(rows)}
    for key in [k for k in rows[0] if k not in ("run", "method")]:
        values = [r[key] for r in rows if r[key] is not None and not _nan(r[key])]
        out[key] = float(np.mean(values)) if values else None
        out[f"{key}_std"] = float(np.std(values)) if values else None
    return out


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def best_per_column(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Index of the best row per column: the smallest gap for RA/UA/TA/MIA (Retrain excluded),
    the lowest Avg. Gap, PFLOPs and time."""
    best = {}
    candidates = [i for i, r in enumerate(rows) if not r["method"].startswith("retrain")] or list(range(len(rows)))
    for col in COLUMNS:
        key = f"gap_{col}" if col in METRICS else col
        scored = [(rows[i][key], i) for i in candidates if rows[i].get(key) is not None and not _nan(rows[i][key])]
        if scored:
            best[col] = min(scored)[1]
    return best


def _fmt(row: dict, col: str, with_std: bool) -> str:
    value = row.get(col)
    if value is None or _nan(value):
        return "-"
    spec = ".3g" if col == "pflops" else ".1f" if col == "seconds" else ".2f"
    text = f"{value:{spec}}"
    if with_std and row.get(f"{col}_std") is not None:
        text += f" ± {row[f'{col}_std']:{spec}}"
    if col in METRICS and row.get(f"gap_{col}") is not None:
        text += f" ({row[f'gap_{col}']:.2f})"
    return text


def render(rows: list[dict[str, Any]], fmt: str = "md") -> str:
    """Rows from row_of (one run each) or aggregate (mean ± std over seeds)."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt != "md":
        raise UserError(f"unknown format {fmt!r}; use md, csv or json")
    with_std = any("n" in r for r in rows)
    best = best_per_column(rows)
    head = ["Method", "RA (Δ)", "UA (Δ)", "TA (Δ)", "MIA (Δ)", "Avg. Gap ↓", "PFLOPs ↓", "Time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        cells = [f"{r['method']}" + (f" (n={r['n']})" if with_std else f" `{r.get('run', '')}`")]
        for col in COLUMNS:
            text = _fmt(r, col, with_std)
            cells.append(f"**{text}**" if best.get(col) == i and text != "-" else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(run_dirs: list[str | Path], fmt: str = "md", sort: str | None = None,
            reference: str | Path | None = None) -> str:
    """The runs as one table; with a Retrain `reference`, every run's gaps are measured against it
    (for runs made before their Retrain existed, which recorded no gaps)."""
    runs = [load_run(d) for d in run_dirs]
    if reference is not None:
        from coun_tui.engine.forget import Split
        from coun_tui.engine.metrics import gaps
        from coun_tui.engine.runs import load_reference

        for run_dir, m in zip(run_dirs, runs):
            ref = load_reference(reference, Split.load(Path(run_dir) / "split.npz"))
            m["gap"], m["avg_gap"] = gaps(m, ref)
    rows = [row_of(m) for m in runs]
    if sort:
        if sort not in rows[0]:
            raise UserError(f"cannot sort by {sort!r}; use one of: {', '.join(rows[0])}")
        rows.sort(key=lambda r: (r[sort] is None, r[sort]))
    return render(rows, fmt)
