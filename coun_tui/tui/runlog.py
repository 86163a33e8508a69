"""What one run has produced so far, built from engine events (live or replayed from events.jsonl).

Plain Python, no textual: the panes draw from it, and the comparison view (issue 5) can read the
same object for every open run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from coun_tui.engine.events import (
    Cancelled,
    Done,
    Embedding,
    EpochMetrics,
    Event,
    Failed,
    Started,
    Step,
    from_json,
)

METRICS = ("RA", "UA", "TA", "MIA")
# Which way is better for a metric when there is no Retrain reference to measure a gap against.
TERMINAL = ("done", "failed", "cancelled")


@dataclass
class RunLog:
    """The accumulated state of one run; `apply` each event in order."""

    title: str = ""
    run_dir: Path | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # run.toml as a dict, when known
    status: str = "preparing"  # queued | preparing | running | done | failed | cancelled | incomplete
    queue_note: str = ""  # while queued: what it waits for
    started: Started | None = None
    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)  # component -> values, aligned to steps
    last_step: Step | None = None
    epochs: list[EpochMetrics] = field(default_factory=list)
    embedding: Embedding | None = None
    done: Done | None = None
    reason: str = ""  # why it failed
    cancelled_at: int | None = None
    reference: dict[str, float] | None = None  # Retrain metrics found after the run started (gaps fill in)
    labels: dict[str, Any] = field(default_factory=lambda: {"name": None, "tags": []})  # labels.json

    def apply(self, event: Event) -> None:
        if isinstance(event, Started):
            self.started, self.status = event, "running"
        elif isinstance(event, Step):
            self.last_step = event
            self.steps.append(event.step)
            n = len(self.steps)
            for name, value in event.losses.items():
                series = self.losses.setdefault(name, [])
                series.extend([float("nan")] * (n - 1 - len(series)))  # a component that appeared late
                series.append(value)
        elif isinstance(event, EpochMetrics):
            self.epochs = [e for e in self.epochs if e.epoch != event.epoch] + [event]
        elif isinstance(event, Embedding):
            self.embedding = event
        elif isinstance(event, Done):
            self.done, self.status = event, "done"
        elif isinstance(event, Failed):
            self.reason, self.status = event.reason, "failed"
        elif isinstance(event, Cancelled):
            self.cancelled_at, self.status = event.step, "cancelled"

    # --- derived numbers ----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def total_steps(self) -> int:
        return self.started.total_steps if self.started else 0

    @property
    def step(self) -> int:
        return self.last_step.step if self.last_step else 0

    @property
    def seconds(self) -> float:
        if self.done:
            return self.done.seconds
        return self.last_step.seconds if self.last_step else 0.0

    @property
    def flops(self) -> float:
        if self.done:
            return self.done.flops
        return self.last_step.flops if self.last_step else 0.0

    @property
    def images_per_second(self) -> float:
        s = self.last_step
        return s.images / s.seconds if s and s.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        s = self.last_step
        if not s or not self.total_steps or self.finished or s.step == 0:
            return None
        return s.seconds / s.step * (self.total_steps - s.step)

    def gap(self, metrics: dict[str, float], given: dict[str, float] | None) -> dict[str, float] | None:
        """Gaps from the event when the run had a reference, else from a reference found later."""
        if given:
            return given
        if not self.reference:
            return None
        per = {k: abs(float(metrics[k]) - self.reference[k]) for k in METRICS}
        return {**per, "avg": sum(per.values()) / len(per)}

    def final_gap(self) -> dict[str, float] | None:
        if not self.done:
            return None
        m = self.done.metrics
        given = {**m["gap"], "avg": m["avg_gap"]} if m.get("gap") else None
        return self.gap(m, given)


def read_run(run_dir: str | Path, limit: int | None = None) -> RunLog:
    """Replay a saved run directory (its events.jsonl) into a RunLog; `limit` stops after N events."""
    run_dir = Path(run_dir)
    events_file = run_dir / "events.jsonl"
    if not events_file.is_file():
        raise FileNotFoundError(f"{run_dir} holds no events.jsonl; open a run directory")
    log = RunLog(run_dir=run_dir)
    toml = run_dir / "run.toml"
    if toml.is_file():
        log.spec = tomllib.loads(toml.read_text())
    log.title = describe_spec(log.spec) if log.spec else run_dir.name
    for i, line in enumerate(events_file.read_text().splitlines()):
        if limit is not None and i >= limit:
            break
        if line.strip():
            log.apply(from_json(line))
    if not log.finished and limit is None:
        log.status = "incomplete"  # no verdict written: interrupted (or still running elsewhere)
    if limit is None and log.embedding is not None:
        log.embedding.features = read_features(run_dir, len(log.embedding.xy))
    from coun_tui.engine.runs import read_labels

    log.labels = read_labels(run_dir)
    return log


EMBEDDING_FILE = "embedding.npy"  # the last Embedding's raw features, written by the app's worker


def read_features(run_dir: Path, n: int):
    """The saved features of the last embedding (for t-SNE of a reopened run), if they match."""
    import numpy as np

    try:
        feats = np.load(run_dir / EMBEDDING_FILE)
    except (OSError, ValueError):
        return None
    return feats.astype("float32") if feats.ndim == 2 and len(feats) == n else None


def forget_of(spec: dict[str, Any]) -> str:
    """What a run forgets and from which model, as a comparable key."""
    return json.dumps({"model": Path(str(spec.get("model") or "")).name, "forget": spec.get("forget") or {}},
                      sort_keys=True)


def describe_spec(spec: dict[str, Any], class_names: list[str] | None = None) -> str:
    method = str(spec.get("method", "?"))
    if spec.get("cl") and method != "coun":
        method += "+cl"
    forget = spec.get("forget") or {}
    if forget.get("classes"):
        names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in forget["classes"]]
        what = "class " + ",".join(names)
    elif forget.get("fraction") is not None:
        what = f"{float(forget['fraction']):.0%} random (seed {forget.get('seed', 0)})"
    else:
        what = "nothing"
    return f"{method} · forget {what}"


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


_SPLIT_CACHE: dict[tuple[str, float], Any] = {}


def find_reference(runs_dir: Path, dataset: str, split) -> Path | None:
    """The newest finished Retrain run in runs_dir made on exactly this split, if any."""
    from coun_tui.engine.forget import Split
    from coun_tui.engine.paths import saved_runs

    for run in saved_runs(Path(runs_dir)):
        m = read_metrics(run)
        if not m or m.get("method") != "retrain" or m.get("dataset") not in (None, dataset):
            continue
        split_file = run / "split.npz"
        try:
            key = (str(split_file), split_file.stat().st_mtime)
            if key not in _SPLIT_CACHE:
                _SPLIT_CACHE[key] = Split.load(split_file)
        except Exception:  # a damaged run directory is simply not a reference
            continue
        if _SPLIT_CACHE[key].same_as(split):
            return run
    return None


def write_features(run_dir: Path, features) -> None:
    """Keep the latest embedding's features (float16, ~0.5 MB) so t-SNE works on a reopened run."""
    import numpy as np

    from coun_tui.engine.files import atomic_write

    with atomic_write(Path(run_dir) / EMBEDDING_FILE) as fh:
        np.save(fh, np.asarray(features, dtype=np.float16))
