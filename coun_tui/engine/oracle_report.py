"""The oracle's table: every population scored against the Retrain one, at equal N, and the
ranking of the methods at smaller populations (4, 8, 16, ... up to N).

Written to OUT/oracle.md and OUT/oracle-scores.json; the JSON also holds each row's per-example
epsilons (for the histogram) and a fingerprint of the outputs it was computed from, so that
`--show` on an unchanged folder reads it instead of scoring again.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from coun_tui.engine import UserError
from coun_tui.engine.files import atomic_write
from coun_tui.engine.oracle import CONTROL, ORIGINAL, REFERENCE, Oracle, Outputs, Population, collect
from coun_tui.engine.oracle_scores import MIN_POPULATION, score

SCORES_FILE = "oracle-scores.json"
TABLE_FILE = "oracle.md"
COLUMNS = ("F", "score", "eps_median", "kl_median", "kl_p90", "RA", "TA", "n")
HEADERS = ("F", "Score", "median ε", "KL median", "KL p90", "RA", "TA", "N")


def population_sizes(n: int) -> list[int]:
    """4, 8, 16, ... below n, then n itself."""
    sizes = [MIN_POPULATION * 2 ** k for k in range(int(math.log2(max(n, 1) / MIN_POPULATION)) + 1)]
    return sorted({s for s in sizes if s < n} | {n}) if n >= MIN_POPULATION else []


def _stack(pop: Population, n: int) -> tuple[np.ndarray, float, float]:
    members = pop.members[:n]
    return (np.stack([m.margins for m in members]), float(np.mean([m.ra for m in members])),
            float(np.mean([m.ta for m in members])))


def score_group(pop: Population, reference: Population, n: int,
                memo: dict[tuple[str, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One population's scores against the first n Retrains, from its first n members (kept in
    `memo`, so the ranking at the full N reuses the table's scores)."""
    if memo is not None and (pop.group, n) in memo:
        return memo[(pop.group, n)]
    u, ra_u, ta_u = _stack(pop, n)
    r, ra_r, ta_r = _stack(reference, n)
    result = {**score(u, r, (ra_u, ra_r), (ta_u, ta_r)), "RA": ra_u, "TA": ta_u}
    if memo is not None:
        memo[(pop.group, n)] = result
    return result


def _fingerprint(pops: list[Population]) -> str:
    h = hashlib.sha256()
    for pop in pops:
        h.update(f"{pop.group}:{len(pop.members)}:{len(pop.damaged)}:{pop.missing}".encode())
        for m in pop.members:
            h.update(np.ascontiguousarray(m.margins).tobytes())
            h.update(np.array([m.ra, m.ta]).tobytes())
    return h.hexdigest()


def build(oracle: Oracle, device: str = "cpu") -> dict[str, Any]:
    """Score every population (or read the saved scores when nothing changed since); writes
    oracle.md and oracle-scores.json. Damaged members are left out and counted."""
    pops = collect(oracle, Outputs(oracle, device))
    reference = pops[0]
    if len(reference.members) < MIN_POPULATION:
        raise UserError(f"{oracle.out}: {len(reference.members)} finished Retrain member(s); at least "
                        f"{MIN_POPULATION} are needed to score; run `coun-lab oracle` again to finish them")
    key = _fingerprint(pops)
    saved = oracle.out / SCORES_FILE
    if saved.is_file():
        try:
            old = json.loads(saved.read_text())
            if old.get("fingerprint") == key:
                return dict(old)
        except (OSError, ValueError):
            pass  # scored again below
    rows: list[dict[str, Any]] = []
    memo: dict[tuple[str, int], dict[str, Any]] = {}
    for pop in pops[1:]:
        n = min(len(pop.members), len(reference.members))
        row: dict[str, Any] = {"method": pop.group, "group": pop.group, "n": n,
                               "damaged": [f"{p}: {why}" for p, why in pop.damaged], "missing": pop.missing,
                               "note": pop.note}
        if n >= MIN_POPULATION:
            row.update(score_group(pop, reference, n, memo))
        rows.append(row)
    result = {"settings": oracle.settings(), "reference": {
        "n": len(reference.members), "damaged": [f"{p}: {why}" for p, why in reference.damaged],
        "missing": reference.missing, "RA": _stack(reference, len(reference.members))[1],
        "TA": _stack(reference, len(reference.members))[2]},
        "rows": rows, "ranking": ranking(pops, memo), "fingerprint": key}
    with atomic_write(saved, "w") as fh:
        json.dump(result, fh, indent=1)
    with atomic_write(oracle.out / TABLE_FILE, "w") as fh:
        fh.write(render(result))
    return result


def ranking(pops: list[Population], memo: dict[tuple[str, int], dict[str, Any]] | None = None,
            ) -> list[dict[str, Any]]:
    """The methods ranked by the final score at each population size 4, 8, 16, ... up to N (the
    first members of each population), to see whether a cheaper oracle ranks them the same."""
    reference = pops[0]
    methods = [p for p in pops if p.group not in (REFERENCE, CONTROL, ORIGINAL)]
    if not methods:
        return []
    top = min([len(reference.members), *(len(p.members) for p in methods)])
    out = []
    for n in population_sizes(top):
        scored = [(p.group, score_group(p, reference, n, memo)) for p in methods]
        scored.sort(key=lambda item: -item[1]["score"])
        out.append({"n": n, "order": [{"method": name, "score": s["score"], "F": s["F"]} for name, s in scored]})
    return out


def _cell(row: dict[str, Any], col: str) -> str:
    v = row.get(col)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if col == "n":
        return str(v)
    return f"{v:.2f}" if col in ("RA", "TA") else f"{v:.3f}"


def render(result: dict[str, Any]) -> str:
    """The table as Markdown, with the left-out members and the ranking below it."""
    s = result["settings"]
    ref = result["reference"]
    forget = s["forget"]
    what = (f"class {','.join(map(str, forget['classes']))}" if forget["classes"]
            else f"{forget['fraction']:.0%} random (seed {forget['seed']})")
    lines = [f"# Oracle of `{Path(s['model']).name}`, forget {what}: each population against "
             f"{ref['n']} Retrains (RA {ref['RA']:.2f}, TA {ref['TA']:.2f})", "",
             "| Method | " + " | ".join(HEADERS) + " | Left out |", "|---" * (len(HEADERS) + 2) + "|"]
    for row in result["rows"]:
        left = len(row["damaged"]) + row["missing"]
        left_text = f"{len(row['damaged'])} damaged, {row['missing']} unfinished" if left else ""
        lines.append(f"| {row['method']} | " + " | ".join(_cell(row, c) for c in COLUMNS) + f" | {left_text} |")
    lines += ["", "F: the competition's forgetting quality (1 = indistinguishable from Retrain at this N; "
              "it depends on N, so compare rows at equal N). retrain-control: a second Retrain population, "
              "the ceiling N models allow; original: the model before unlearning, the floor."]
    for row in result["rows"]:
        if row["note"]:
            lines.append(f"{row['method']}: {row['note']}.")
    damaged = ref["damaged"] + [d for row in result["rows"] for d in row["damaged"]]
    if damaged:
        lines += ["", "Damaged members (left out):"] + [f"- {d}" for d in damaged]
    if result["ranking"]:
        lines += ["", "Ranking by final score at smaller populations (the first N members of each):"]
        lines += ["- N = {}: {}".format(r["n"], " > ".join(f"{o['method']} {o['score']:.3f}" for o in r["order"]))
                  for r in result["ranking"]]
    return "\n".join(lines) + "\n"
