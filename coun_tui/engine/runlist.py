"""What `coun-lab runs` lists and `coun-lab compare` names: a run's identity (method, forget set)
read from one place, and one row per run however damaged its files are.

A finished run's identity is its metrics.json (written by the run when it ended, from what it
actually ran); an unfinished one's is its run.toml. When both are there and disagree (run.toml
edited after the run), the row says so instead of silently showing one of them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coun_tui.engine.files import open_for_reading
from coun_tui.engine.jobs import find_runs, read_spec_dict
from coun_tui.engine.rundir import JobState, as_number, as_text, read_state

FORGET_KEYS = ("classes", "fraction", "seed", "indices_file")  # what makes two forget sets the same


@dataclass
class RunIdentity:
    method: str = "?"
    cl: bool = False
    forget: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # metrics.json or run.toml ("" when neither could be read)
    conflict: str = ""  # how run.toml and metrics.json disagree, one line ("" when they agree)

    @property
    def label(self) -> str:
        return self.method + ("+cl" if self.cl and self.method != "coun" else "")

    def forget_words(self) -> str:
        f = self.forget
        classes, fraction = f.get("classes"), as_number(f.get("fraction"))
        if isinstance(classes, list) and classes:
            return "class " + ",".join(as_text(c) for c in classes)
        if fraction is not None:
            return f"{fraction:.0%} s{as_text(f.get('seed', 0))}"
        return "indices" if f.get("indices_file") else "-"


def _metrics_dict(run_dir: Path) -> dict[str, Any]:
    try:
        with open_for_reading(run_dir / "metrics.json") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _facts(record: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
    given = record.get("forget")
    forget: dict[str, Any] = given if isinstance(given, dict) else {}
    kept = {k: forget[k] for k in FORGET_KEYS if forget.get(k) is not None}
    return as_text(record.get("method")) or "?", record.get("cl") is True, kept


def identity(run_dir: str | Path) -> RunIdentity:
    """The run's method and forget set from metrics.json when it finished, else from run.toml."""
    run_dir = Path(run_dir)
    spec, metrics = read_spec_dict(run_dir), _metrics_dict(run_dir)
    chosen, source = (metrics, "metrics.json") if metrics.get("method") else (spec, "run.toml" if spec else "")
    method, cl, forget = _facts(chosen)
    found = RunIdentity(method, cl, forget, source)
    if spec and metrics.get("method"):
        planned, done = _facts(spec), _facts(metrics)
        names = ("method", "cl", "forget")
        differ = [f"{n} {as_text(a)} in run.toml, {as_text(b)} in metrics.json"
                  for n, a, b in zip(names, planned, done) if a != b]
        if differ:
            found.conflict = "run.toml and metrics.json disagree: " + "; ".join(differ) + " (metrics.json is shown)"
    return found


def _age(seconds: float) -> str:
    return (f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else
            f"{seconds / 3600:.0f}h" if seconds < 172800 else f"{seconds / 86400:.0f}d")


def run_row(run: Path, state: JobState | None = None) -> dict[str, Any]:
    """One line of `coun-lab runs` (its --json record): never an exception, whatever the files hold."""
    state = state or read_state(run)
    who = identity(run)
    progress = f"{state.step}/{state.total}" if state.total else ("-" if state.state != "done" else "done")
    try:
        age = time.time() - (state.updated or run.stat().st_mtime)
    except OSError:
        age = 0.0
    detail = "; ".join(filter(None, [state.detail, who.conflict]))
    return {"run": str(run), "state": state.state, "detail": detail, "method": who.label,
            "forget": who.forget_words(), "progress": progress, "step": state.step, "total": state.total,
            "age": _age(max(0.0, age)), "identity_from": who.source}


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """A row for every run under `root`; a damaged run is one row with its note, never a crash."""
    return [run_row(run) for run in find_runs(root)]
