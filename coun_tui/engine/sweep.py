"""Sweeps: every (forget set, seed) gets its Retrain reference first, then each method (and each
baseline +CL), each in its own run directory; resumable; tables of mean ± std over seeds.

Layout: OUT/<forget>/seed-<s>/<method>[+cl]/  and  OUT/table.md, OUT/table.json.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from coun_tui.engine import UserError
from coun_tui.engine.events import Event
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.methods import get as get_method
from coun_tui.engine.report import aggregate, load_run, render
from coun_tui.engine.runner import RunSpec, prepare
from coun_tui.engine.runs import atomic_write, read_spec, record, spec_to_dict


@dataclass
class Sweep:
    model: str
    methods: list[str]
    forgets: list[ForgetSpec]  # seed is filled in per run
    seeds: list[int]
    out: Path
    cl_too: bool = False
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # method (or "*") -> overrides
    device: str = "auto"
    data_root: str | None = None
    dataset: str | None = None

    def labels(self) -> list[tuple[str, bool]]:
        names = [m for m in self.methods if m != "retrain"]
        for m in names:
            get_method(m)  # unknown names fail before anything runs
        plain = [(m, False) for m in names]
        with_cl = [(m, True) for m in names if self.cl_too and not get_method(m).always_cl]
        return [("retrain", False), *plain, *with_cl]

    def runs(self) -> list[tuple[Path, RunSpec]]:
        """Every run, the Retrain of each (forget set, seed) before the methods that need it."""
        plan = []
        for forget in self.forgets:
            for seed in self.seeds:
                base = self.out / forget_tag(forget) / f"seed-{seed}"
                for method, cl in self.labels():
                    hp = {**self.hparams.get("*", {}), **self.hparams.get(method, {}),
                          **(self.hparams.get(f"{method}+cl", {}) if cl else {})}
                    if method == "retrain":
                        hp = self.hparams.get("retrain", {})
                    spec = RunSpec(method=method, model=self.model, dataset=self.dataset,
                                   data_root=self.data_root, forget=replace(forget, seed=seed), cl=cl,
                                   hparams=hp, seed=seed, device=self.device,
                                   reference=None if method == "retrain" else str(base / "retrain"))
                    plan.append((base / (method + ("+cl" if cl else "")), spec))
        return plan


def forget_tag(forget: ForgetSpec) -> str:
    if forget.classes:
        return "class-" + "-".join(map(str, forget.classes))
    if forget.fraction is not None:
        return f"random-{forget.fraction * 100:g}pct"
    raise UserError("a sweep needs --forget-class or --forget-fraction")


def execute(sweep: Sweep, cancel=None,
            on_start: Callable[[int, int, Path], None] | None = None) -> Iterator[tuple[Path, Event]]:
    """Run what is not finished yet; a half-finished run directory is cleared and redone."""
    plan = sweep.runs()
    for run_dir, spec in plan:
        if (run_dir / "metrics.json").is_file():
            _check_same_settings(run_dir, spec)
    for i, (run_dir, spec) in enumerate(plan):
        if (run_dir / "metrics.json").is_file():
            continue
        if cancel is not None and cancel.is_set():
            return
        if run_dir.exists():
            shutil.rmtree(run_dir)
        if on_start:
            on_start(i, len(plan), run_dir)
        reference_dir = Path(spec.reference) if spec.reference else None
        if reference_dir and not (reference_dir / "metrics.json").is_file():
            continue  # its Retrain failed: no reference to measure gaps against
        for event in record(prepare(spec), run_dir, cancel):
            yield run_dir, event
        if (run_dir / "metrics.json").is_file():
            write_tables(sweep)  # so a stopped sweep's tables show every run it finished
    write_tables(sweep)


def _check_same_settings(run_dir: Path, planned: RunSpec) -> None:
    """A finished run is reused only if it was made as this sweep would make it now."""
    def settings(spec: RunSpec) -> dict[str, Any]:
        d = spec_to_dict(spec)
        for key in ("device", "data_root"):  # where it ran and where files sit do not change a run
            d.pop(key, None)
        for key in ("model", "reference"):  # the same file however the path was spelled
            if key in d:
                d[key] = str(Path(d[key]).resolve())
        return d

    done, want = settings(read_spec(run_dir)), settings(planned)
    if done != want:
        diff = ", ".join(f"{k}: {done.get(k)!r} there, {want.get(k)!r} now"
                         for k in sorted(set(done) | set(want)) if done.get(k) != want.get(k))
        raise UserError(f"{run_dir} was made with other settings ({diff}); "
                        "rerun with the same options, or give another --out")


def write_tables(sweep: Sweep) -> dict[str, Any]:
    """OUT/table.md and OUT/table.json from whatever runs have finished."""
    tables: dict[str, Any] = {}
    md = [f"# Sweep of `{Path(sweep.model).name}` — mean ± std over seeds {sweep.seeds}\n"]
    for forget in sweep.forgets:
        tag = forget_tag(forget)
        rows = []
        for method, cl in sweep.labels():
            label = method + ("+cl" if cl else "")
            done = [load_run(d) for seed in sweep.seeds
                    if ((d := sweep.out / tag / f"seed-{seed}" / label) / "metrics.json").is_file()]
            if method == "retrain":  # each seed's Retrain is its own reference: gaps are 0
                done = [{**m, "gap": {k: 0.0 for k in ("RA", "UA", "TA", "MIA")}, "avg_gap": 0.0} for m in done]
            if done:
                rows.append(aggregate(done))
        if not rows:
            continue
        tables[tag] = {r["method"]: r for r in rows}
        md += [f"## {tag}\n", render(rows, "md")]
        cl_rows = [(m, tables[tag].get(m), tables[tag].get(m + "+CL")) for m, cl in sweep.labels() if cl]
        cl_rows = [(m, a, b) for m, a, b in cl_rows if a and b and a["avg_gap"] and b["avg_gap"] is not None]
        if cl_rows:
            md += ["\nAvg. Gap without and with CoUn's CL term (the poster's Figure 4):\n",
                   "| Method | Avg. Gap | Avg. Gap +CL | Improvement |", "|---|---|---|---|"]
            md += [f"| {m} | {a['avg_gap']:.2f} | {b['avg_gap']:.2f} | "
                   f"{100 * (a['avg_gap'] - b['avg_gap']) / a['avg_gap']:+.1f}% |" for m, a, b in cl_rows]
            md.append("")
    with atomic_write(sweep.out / "table.md", "w") as fh:
        fh.write("\n".join(md) + "\n")
    with atomic_write(sweep.out / "table.json", "w") as fh:
        json.dump(tables, fh, indent=2)
    return tables
