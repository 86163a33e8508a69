"""Comparison tables of finished runs (the paper's Table 1 layout) as Markdown, CSV or JSON.

One place builds them for `coun-lab compare`, `coun-lab sweep` and the app.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coun_tui.engine import UserError
from coun_tui.engine.metrics import MIA_VARIANTS
from coun_tui.engine.records import METRICS, describe_half, method_label, read_metrics
from coun_tui.engine.reference import KNN, VERSUS_RETRAIN
from coun_tui.engine.runlist import identity

# Beyond the paper's table, measured on D_u against Retrain (see engine/reference.py) and the MIA
# variants; shown only when some row has them (runs made before they existed lack them).
DEEPER = (*[(key, label) for key, label, _ in VERSUS_RETRAIN], (KNN[0], "kNN D_u % (Retrain)"),
          *[(key, label) for key, label, _ in MIA_VARIANTS])
HIGHER_IS_BETTER = {key for key, _, higher in VERSUS_RETRAIN if higher}
COST = ("pflops", "pflops_epoch", "pflops_paper", "seconds")
COLUMNS = ("RA", "UA", "TA", "MIA", "avg_gap", "avg_gap_seeds", *COST, *(k for k, _ in DEEPER))
LOWER_IS_BETTER = {"avg_gap", "avg_gap_seeds", *COST}
HEADERS = {"RA": "RA (Δ)", "UA": "UA (Δ)", "TA": "TA (Δ)", "MIA": "MIA (Δ)", "avg_gap": "Avg. Gap ↓",
           "avg_gap_seeds": "Avg. Gap, seed mean", "pflops": "PFLOPs ↓", "pflops_epoch": "PFLOPs/epoch",
           "pflops_paper": "PFLOPs, paper's count", "seconds": "Time (s)", **dict(DEEPER)}
ALWAYS = ("RA", "UA", "TA", "MIA", "avg_gap", "pflops", "pflops_epoch", "seconds")  # other columns: when filled

PER_RUN = ("Avg. Gap: mean over RA, UA, TA, MIA of |metric - Retrain's| (Δ), each run against the Retrain "
           "of its own split (for one run, the paper's Avg. Gap).")
OVER_SEEDS = ("Avg. Gap: the paper's, the mean over RA, UA, TA, MIA of |mean over seeds - Retrain's mean over "
              "the same seeds| (Δ); seed mean: each seed's own Avg. Gap averaged (± std), never smaller.")


def legend(rows: list[dict[str, Any]]) -> str:
    """What the columns of these rows mean, beyond the Avg. Gap caption of each table."""
    shown = _shown_columns(rows)
    lines = ["PFLOPs: measured on the real training steps, every forward and backward pass; per epoch: "
             "total / epochs."]
    if "pflops_paper" in shown:
        lines.append("PFLOPs, paper's count: 3 forward costs per image trained on and 1 per image only passed "
                     "forward (CoUn's second view, teachers), the count the CoUn paper's PFLOPs fit.")
    if any(k in shown for k, _ in DEEPER):
        lines.append("On the forget set D_u against Retrain's reference samples: Agree D_u, % predicted as "
                     "Retrain predicts them; CKA, linear CKA of penultimate features with Retrain's (on D_u, "
                     "on the test set); kNN D_u, accuracy of a 5-NN probe (test-set features, cosine) on D_u's "
                     "features, Retrain's in brackets. MIA entropy / m-entropy / loss: the MIA with that "
                     "feature in place of the confidence; the Avg. Gap uses the confidence MIA.")
    return "\n".join(lines) + "\n"


def run_label(m: dict[str, Any]) -> str:
    return method_label(str(m.get("method", "?")), bool(m.get("cl")))


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's metrics.json, checked, as a dict (with its folder's name as "name")."""
    if not os.path.isdir(run_dir):  # (never raises, even on a name too long)
        raise UserError(f"{run_dir}: no such directory; give finished run directories")
    return {"name": Path(run_dir).name, **read_metrics(run_dir).as_dict()}


def row_of(m: dict[str, Any]) -> dict[str, Any]:
    """One table row: the metrics, their gaps, Avg. Gap, cost and time of one run, and the deeper
    metrics when it has them."""
    gap = m.get("gap") or {}
    row: dict[str, Any] = {"run": m.get("name") or "", "method": run_label(m), **{k: m.get(k) for k in METRICS},
           **{f"gap_{k}": gap.get(k) for k in METRICS}, "avg_gap": m.get("avg_gap")}
    row.update({k: m.get(k) for k in COST})
    if row["pflops_epoch"] is None and row["pflops"] is not None and (m.get("hparams") or {}).get("epochs"):
        row["pflops_epoch"] = row["pflops"] / int(m["hparams"]["epochs"])  # runs made before it was recorded
    row.update({k: m.get(k) for k, _ in DEEPER})
    row["knn_forget_retrain"] = m.get(KNN[1])
    return row


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every numeric column (n = number of runs), and
    the paper's Avg. Gap: each metric's |mean over the runs - mean of their Retrains| (each run's
    `reference`: its Retrain's RA, UA, TA, MIA), averaged; the mean of the runs' own Avg. Gaps is
    kept as avg_gap_seeds."""
    rows = [row_of(m) for m in runs]
    out: dict[str, Any] = {"method": rows[0]["method"], "n": len(rows)}
    for key in [k for k in rows[0] if k not in ("run", "method")]:
        values = [r[key] for r in rows if r[key] is not None and not _nan(r[key])]
        out[key] = float(np.mean(values)) if values else None
        out[f"{key}_std"] = float(np.std(values)) if values else None
    out["avg_gap_seeds"], out["avg_gap_seeds_std"] = out.pop("avg_gap"), out.pop("avg_gap_std")
    for k in METRICS:
        out.pop(f"gap_{k}_std")
        out[f"gap_{k}"] = None
    refs = [m["reference"] for m in runs if m.get("reference")]
    out["avg_gap"] = None
    if len(refs) == len(runs):
        per = {k: abs(float(np.mean([m[k] for m in runs])) - float(np.mean([r[k] for r in refs])))
               for k in METRICS}
        if not any(math.isnan(v) for v in per.values()):
            out.update({f"gap_{k}": v for k, v in per.items()}, avg_gap=float(np.mean(list(per.values()))))
    return out


def _nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _score(row: dict[str, Any], col: str) -> float | None:
    """What "best" ranks for a column (lower is better), or None."""
    if col in METRICS:
        return row.get(f"gap_{col}")
    value: float | None = row.get(col)
    if value is None or _nan(value):
        return None
    if col in HIGHER_IS_BETTER:
        return -value
    if col == KNN[0]:  # closest to Retrain's probe
        ref = row.get(KNN[1])
        return None if ref is None or _nan(ref) else abs(value - ref)
    return value if col in LOWER_IS_BETTER else None


def best_per_column(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Index of the best row per column: the smallest gap for RA/UA/TA/MIA (Retrain excluded),
    the lowest Avg. Gap, PFLOPs and time, the highest agreement and CKA, the k-NN probe closest
    to Retrain's. A Retrain row is the reference the others are measured against, never a
    competitor, on cost either: with no other row, nothing is marked."""
    best = {}
    candidates = [i for i, r in enumerate(rows) if not r["method"].startswith("retrain")]
    for col in COLUMNS:
        scored = [(s, i) for i in candidates if (s := _score(rows[i], col)) is not None and not _nan(s)]
        if scored:
            best[col] = min(scored)[1]
    return best


def _fmt(row: dict[str, Any], col: str, with_std: bool) -> str:
    value = row.get(col)
    if value is None or _nan(value):
        return "-"
    spec = ".3g" if col.startswith("pflops") else ".1f" if col in ("seconds", KNN[0]) or col.startswith("mia_") \
        else ".3f" if col.startswith("cka") else ".2f"
    text = f"{value:{spec}}"
    if with_std and row.get(f"{col}_std") is not None:
        std = row[f"{col}_std"]
        text += f" ± {std if abs(std) > 1e-6 * abs(value) else 0:{spec}}"  # float noise of equal runs: 0
    if col in METRICS and row.get(f"gap_{col}") is not None:
        text += f" ({row[f'gap_{col}']:.2f})"
    if col == KNN[0] and row.get(KNN[1]) is not None and not _nan(row[KNN[1]]):
        text += f" ({row[KNN[1]]:.1f})"
    return text


def _shown_columns(rows: list[dict[str, Any]], only: Sequence[str] | None = None) -> list[str]:
    with_std = any("n" in r for r in rows)
    wanted = set(ALWAYS) | ({"avg_gap_seeds"} if with_std else set())
    shown = [c for c in COLUMNS if c in wanted or any(_fmt(r, c, False) != "-" for r in rows)]
    return shown if only is None else [c for c in only if c in shown]


def table_cells(rows: list[dict[str, Any]], columns: Sequence[str] | None = None,
                ) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """The table as text cells: header, one list of cells per row (the method first), and the
    (row, column) positions of the best value per column; Markdown and the figures draw from it.
    `columns`: only these (in this order), e.g. the poster's Table 1 columns."""
    with_std = any("n" in r for r in rows)
    best = best_per_column(rows)
    shown = _shown_columns(rows, columns)
    head = ["Method", *(HEADERS[c] for c in shown)]
    body, marked = [], set()
    for i, r in enumerate(rows):
        cells = [_md(r["method"]) + (f" (n={r['n']}{_repeats(r)})" if with_std else f" `{_md(r.get('run', ''))}`")]
        for j, col in enumerate(shown, start=1):
            cells.append(text := _fmt(r, col, with_std))
            if best.get(col) == i and text != "-":
                marked.add((i, j))
        body.append(cells)
    return head, body, marked


def render(rows: list[dict[str, Any]], fmt: str = "md", with_legend: bool = True,
           columns: Sequence[str] | None = None) -> str:
    """Rows from row_of (one run each) or aggregate (mean ± std over seeds). Markdown says under
    the table which Avg. Gap it shows, and then (with_legend) what its other columns mean."""
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
    head, body, best = table_cells(rows, columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, cells in enumerate(body):
        lines.append("| " + " | ".join(f"**{c}**" if (i, j) in best else c for j, c in enumerate(cells)) + " |")
    with_std = any("n" in r for r in rows)
    text = "\n".join(lines) + "\n\n" + (OVER_SEEDS if with_std else PER_RUN) + "\n"
    return text + "\n" + legend(rows) if with_legend else text


def _repeats(row: dict[str, Any]) -> str:
    """", repeats counted once: B = A" for a row whose runs repeat a seed and its settings."""
    return f", repeats counted once: {_md(', '.join(row['repeats']))}" if row.get("repeats") else ""


def _md(text: str) -> str:
    """Text for a Markdown table cell: a | or a line break would end the cell or the row."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")


def group_by_method(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs of the same method on the same forget set (any seed), in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in runs:
        forget = {k: v for k, v in (m.get("forget") or {}).items() if k in ("classes", "fraction", "indices_file")}
        key = json.dumps([m.get("dataset"), forget, run_label(m)], sort_keys=True)
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def split_repeats(group: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of a group with distinct seeds and settings, and the names of the others: a run
    that repeats an earlier one's seed and hyperparameters is the same trial again, not a new seed,
    so it counts once (as "B = A")."""
    seen: dict[str, dict[str, Any]] = {}
    repeats = []
    for m in group:
        key = json.dumps([m.get("seed"), m.get("hparams") or {}], sort_keys=True, default=str)
        if key in seen:
            repeats.append(f"{m.get('name') or '?'} = {seen[key].get('name') or '?'}")
        else:
            seen[key] = m
    return list(seen.values()), repeats


def per_method_row(group: list[dict[str, Any]]) -> dict[str, Any]:
    """aggregate() over the group's distinct seeds, naming the repeats it left out."""
    kept, repeats = split_repeats(group)
    row = aggregate(kept)
    if repeats:
        row["repeats"] = repeats
    return row


def reference_of(run_dir: str | Path, m: dict[str, Any],
                 reference: str | Path | None = None) -> dict[str, float] | None:
    """The Retrain metrics a run is measured against: `reference` when given, else the one it
    recorded, else its run.toml's Retrain run (None when there is none to be found)."""
    from coun_tui.engine.forget import Split
    from coun_tui.engine.records import read_spec
    from coun_tui.engine.runs import load_reference
    from coun_tui.engine.schema import RecordError

    if m.get("method") == "retrain":
        return {k: m[k] for k in METRICS}
    if reference is None and m.get("reference"):
        recorded: dict[str, float] = m["reference"]
        return recorded
    if reference is None:
        try:
            reference = read_spec(run_dir).reference
        except (UserError, RecordError):  # no run.toml, or a damaged one: no Retrain to be found
            return None
        from coun_tui.engine.jobs import resolved_reference

        # relative to the run directory, or (runs made before that) to where the sweep ran
        found = [p for p in (resolved_reference(reference, Path(run_dir)), reference)
                 if p and (Path(p) / "metrics.json").is_file()]
        if not found:
            return None
        reference = found[0]
    return load_reference(reference, Split.load(Path(run_dir) / "split.npz"))


def compare(run_dirs: Sequence[str | Path], fmt: str = "md", sort: str | None = None,
            reference: str | Path | None = None, per_method: bool = False) -> str:
    """The runs as one table; with a Retrain `reference`, every run's gaps are measured against it
    (for runs made before their Retrain existed, which recorded no gaps). `per_method`: one row per
    method and forget set, mean ± std over its runs (seeds) with the paper's Avg. Gap."""
    rows = compare_rows(run_dirs, sort, reference, per_method)
    if fmt != "md":
        return render(rows, fmt)
    return render(rows, fmt) + half_note(run_dirs) + identity_notes(run_dirs)


def compare_rows(run_dirs: Sequence[str | Path], sort: str | None = None, reference: str | Path | None = None,
                 per_method: bool = False) -> list[dict[str, Any]]:
    """The rows of compare's table (see compare), before they are rendered."""
    runs = [load_run(d) for d in run_dirs]
    if reference is not None:
        from coun_tui.engine.metrics import gaps

        for run_dir, m in zip(run_dirs, runs):
            m["reference"] = reference_of(run_dir, m, reference)
            m["gap"], m["avg_gap"] = gaps(m, m["reference"])
    if per_method:
        for run_dir, m in zip(run_dirs, runs):
            m["reference"] = reference_of(run_dir, m)
        rows = [per_method_row(group) for group in group_by_method(runs)]
    else:
        rows = [row_of(m) for m in runs]
    if sort:
        if sort not in rows[0]:
            raise UserError(f"cannot sort by {sort!r}; use one of: {', '.join(rows[0])}")
        rows.sort(key=lambda r: (r[sort] is None, r[sort]))
    return rows


def identity_notes(run_dirs: Sequence[str | Path]) -> str:
    """A line under the table for each run whose run.toml and metrics.json disagree on what it is
    (the table shows metrics.json, as `coun-lab runs` does)."""
    notes = [f"Note: {Path(d).name}: {identity(d).conflict}" for d in run_dirs if identity(d).conflict]
    return "\n" + "\n".join(notes) + "\n" if notes else ""


def half_note(run_dirs: Sequence[str | Path]) -> str:
    """For tuned runs, the line that says which half of the test set their TA read."""
    runs = [load_run(d) for d in run_dirs]
    if not any(m.get("test_half") for m in runs):
        return ""
    halves = sorted({describe_half(m.get("test_half"), int(m.get("half_seed") or 0)) for m in runs})
    return f"TA on {' and '.join(halves)}.\n"
