"""What one run has produced so far, built from engine events (live or replayed from events.jsonl).

The app's panes and its comparison draw from it; a replayed run's files are read through
engine.records, so a damaged line or file shows as `damage` instead of breaking the replay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coun_tui.engine import UserError
from coun_tui.engine.events import (
    Cancelled,
    Done,
    Embedding,
    EpochMetrics,
    Event,
    Failed,
    Started,
    Step,
    eta_seconds,
)
from coun_tui.engine.records import METRICS, RunRecord, method_label
from coun_tui.engine.runs import EMBEDDING_FILE

if TYPE_CHECKING:
    import numpy as np

    from coun_tui.engine.rundir import JobState

TERMINAL = ("done", "failed", "cancelled", "died", "damaged")


@dataclass
class RunLog:
    """The accumulated state of one run; `apply` each event in order."""

    title: str = ""
    run_dir: Path | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # run.toml as a dict, when known
    status: str = "preparing"  # queued | preparing | running | done | failed | cancelled | died | damaged
    queue_note: str = ""  # while queued: what it waits for
    started: Started | None = None
    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)  # component -> values, aligned to steps
    last_step: Step | None = None
    epochs: list[EpochMetrics] = field(default_factory=list)
    embedding: Embedding | None = None
    done: Done | None = None
    reason: str = ""  # why it failed, how it died, what is damaged
    cancelled_at: int | None = None
    reference: dict[str, float] | None = None  # Retrain metrics found after the run started (gaps fill in)
    labels: dict[str, Any] = field(default_factory=lambda: {"name": None, "tags": []})  # labels.json
    damage: list[str] = field(default_factory=list)  # damaged files or lines of a replayed run
    offset: int = 0  # bytes of events.jsonl read so far (a live job is followed from here)

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

    def apply_state(self, state: JobState) -> None:
        """The job's state as read from its directory (engine.rundir.JobState): the events say
        the rest; this adds waiting in a queue, loading, and a death or damage no event records."""
        if state.state in ("died", "damaged"):
            self.status, self.reason = state.state, state.detail
        elif self.finished:
            return
        elif state.state == "queued":
            self.status, self.queue_note = ("queued", state.detail) if state.detail else ("preparing", "")
        elif state.state == "running":
            self.status, self.queue_note = ("running" if self.started else "preparing"), ""
        elif state.state in TERMINAL:  # its final event was not read (yet): the directory says
            self.status, self.reason = state.state, state.detail
            if state.state == "cancelled" and self.cancelled_at is None:
                self.cancelled_at = state.step

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
        return None if self.finished else eta_seconds(self.last_step, self.total_steps)

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
    """Replay a saved run directory (its events.jsonl) into a RunLog; `limit` stops after N lines.
    Damaged files and lines are skipped and listed in `damage`; only a folder that is no run
    directory at all raises UserError."""
    run_dir = Path(run_dir)
    events_file = run_dir / "events.jsonl"
    if not (events_file.is_file() or (run_dir / "run.toml").is_file()):
        raise UserError(f"{run_dir} is not a run directory (no run.toml or events.jsonl)")
    record = RunRecord.read(run_dir)
    log = RunLog(run_dir=run_dir, labels=record.labels, damage=list(record.damage))
    if record.spec is not None:
        from coun_tui.engine.runs import spec_to_dict

        log.spec = spec_to_dict(record.spec)
    log.title = describe_spec(log.spec) if log.spec else run_dir.name
    from coun_tui.engine.jobs import Follower

    follower = Follower(run_dir)  # a queued job has no events.jsonl yet: no events
    events = follower.read(limit=1 << 40)
    for event in events[:limit]:
        log.apply(event)
    log.offset = follower.offset  # a live job is followed from here
    log.damage += follower.damage
    if limit is None:
        from coun_tui.engine.rundir import read_state

        log.apply_state(read_state(run_dir))
    if limit is None and log.embedding is not None:
        log.embedding.features = read_features(run_dir, len(log.embedding.xy))
        if log.embedding.features is None and (run_dir / EMBEDDING_FILE).is_file():
            log.damage.append(f"{EMBEDDING_FILE}: unreadable or not this run's features (t-SNE is not available)")
    return log


def read_features(run_dir: Path, n: int) -> np.ndarray | None:
    """The saved features of the last embedding (for t-SNE of a reopened run), if they match."""
    import numpy as np

    try:
        feats = np.load(run_dir / EMBEDDING_FILE, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if feats.ndim != 2 or len(feats) != n or feats.dtype.kind != "f" or not np.isfinite(feats).all():
        return None
    out: np.ndarray = feats.astype("float32")
    return out


def forget_of(spec: dict[str, Any]) -> str:
    """What a run forgets and from which model, as a comparable key."""
    return json.dumps({"model": Path(str(spec.get("model") or "")).name, "forget": spec.get("forget") or {}},
                      sort_keys=True)


def describe_spec(spec: dict[str, Any], class_names: list[str] | None = None) -> str:
    """A run in a few words, e.g. "ft+CL · forget class 3"."""
    from coun_tui.engine.forget import ForgetSpec

    method = method_label(str(spec.get("method", "?")), bool(spec.get("cl")) and spec.get("method") != "coun")
    try:
        what = ForgetSpec.from_dict(spec.get("forget") or {}).describe(class_names)
    except UserError:
        what = "?"
    return f"{method} · forget {what}"

