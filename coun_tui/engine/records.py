"""Run records: the files of a run directory, read and checked in one place.

Every reader of a run (`coun-lab compare`, the sweep's resume, Retrain references, the app's
history, panes and session) goes through here. A damaged file raises RecordError (one line: the
file, where in it, what is wrong and the fix) from the strict readers, and `RunRecord.read` turns
it into a visible state ("damaged: metrics.json line 1: ...") instead of an exception. Extra fields
are kept and optional ones may be missing, so records of newer or older versions still read.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from coun_tui.engine import UserError
from coun_tui.engine.events import Cancelled, Done, Embedding, EpochMetrics, Event, Failed, Started, Step
from coun_tui.engine.schema import RecordError, parse_data, parse_json

if TYPE_CHECKING:
    from coun_tui.engine.forget import Split
    from coun_tui.engine.runner import RunSpec

METRICS = ("RA", "UA", "TA", "MIA")  # the unlearning metrics, in the paper's order
RUN_FIX = "rerun that run or delete its directory"
LABELS_FILE = "labels.json"


# The halves of the test set a run's TA can read (engine/runner.py half_rows): tuning reads "val",
# the final tables "report"; a run without one reads the whole test set.
TEST_HALVES = ("val", "report")


def describe_half(half: str | None, seed: int) -> str:
    if half is None:
        return "the whole test set"
    return f"the {'validation' if half == 'val' else 'report'} half of the test set (split seed {seed})"


def method_label(method: str, cl: bool) -> str:
    """How a run's method is shown: "ft", or "ft+CL" for a baseline with CoUn's term added."""
    return f"{method}+CL" if cl else method


class Scores(BaseModel):
    """RA, UA, TA and MIA in percent (NaN where undefined); other fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    RA: float
    UA: float
    TA: float
    MIA: float

    def scores(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in METRICS}


class FinalScores(Scores):
    """A run's final metrics (Done event): the scores and their gaps to Retrain, if it had one."""

    gap: dict[str, float] | None = None
    avg_gap: float | None = None


class Metrics(FinalScores):
    """metrics.json: a finished run's final metrics, cost and settings."""

    method: Annotated[str, Field(min_length=1)]
    cl: bool = False
    pflops: float | None = None
    seconds: float | None = None
    dataset: str | None = None
    seed: int | None = None
    forget: dict[str, Any] = {}
    hparams: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return method_label(self.method, self.cl)

    def as_dict(self) -> dict[str, Any]:
        """The record as read (fields it did not hold stay absent, extra ones are kept)."""
        return self.model_dump(exclude_unset=True)


class Status(BaseModel):
    """status.json: the run writer's small status record: its state (under "status" or "state")
    and whatever else the writer keeps there."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    status: Annotated[str, Field(min_length=1)] | None = None
    state: Annotated[str, Field(min_length=1)] | None = None

    @property
    def value(self) -> str:
        return str(self.status or self.state)


class Labels(BaseModel):
    """labels.json: a run's name and tags as a person gave them."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str | None = None
    tags: list[str] = []


# --- strict readers: a value or a RecordError -------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RecordError(str(path), f"cannot be read ({exc.strerror or exc})", RUN_FIX) from None


def read_metrics(run_dir: str | Path) -> Metrics:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished run (no metrics.json); give a finished run's directory")
    return parse_json(Metrics, _read_bytes(path), str(path), RUN_FIX)


def read_status(run_dir: str | Path) -> Status | None:
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return None
    status = parse_json(Status, _read_bytes(path), str(path), RUN_FIX)
    if status.status is None and status.state is None:
        raise RecordError(str(path), "holds no status", RUN_FIX)
    return status


def read_spec(run_dir: str | Path) -> RunSpec:
    path = Path(run_dir) / "run.toml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no run.toml)")
    try:
        data = tomllib.loads(_read_bytes(path).decode())
    except UnicodeDecodeError:
        raise RecordError(str(path), "is not UTF-8 text", RUN_FIX) from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"(.*) \(at line (\d+), column \d+\)", str(exc))
        detail = f"line {m.group(2)}: {m.group(1).lower()}" if m else str(exc)
        raise RecordError(str(path), f"{detail} (not valid TOML)", RUN_FIX) from None
    return spec_from_dict(data, str(path))


def spec_from_dict(data: Any, where: str = "run spec") -> RunSpec:
    from coun_tui.engine.runner import RunSpec

    spec = parse_data(RunSpec, data, where, RUN_FIX)
    if not spec.method:
        raise RecordError(where, "method is empty", RUN_FIX)
    return spec


def read_labels_checked(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / LABELS_FILE
    if not path.is_file():
        return {"name": None, "tags": []}
    labels = parse_json(Labels, _read_bytes(path), str(path), "rename or tag the run again")
    return {"name": labels.name or None, "tags": labels.tags}


def read_labels(run_dir: str | Path) -> dict[str, Any]:
    """A run's name and tags; {"name": None, "tags": []} if it has none (or they are damaged)."""
    try:
        return read_labels_checked(run_dir)
    except RecordError:
        return {"name": None, "tags": []}


# --- events ----------------------------------------------------------------------------------

EVENT_TYPES: dict[str, type] = {cls.kind: cls for cls in (Started, Step, EpochMetrics, Embedding, Done, Failed,
                                                           Cancelled)}


def read_event(line: str | bytes, where: str = "event") -> Event:
    """One line of events.jsonl as its typed event, checked; RecordError otherwise."""
    try:
        data = json.loads(line)
    except ValueError:  # not JSON: parse_json says where
        data = None
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        parse_json(dict[str, Any], line, where)  # raises for broken JSON or a non-object
        raise RecordError(where, f"kind {kind!r} is not one of {', '.join(EVENT_TYPES)}")
    event: Event = parse_json(EVENT_TYPES[kind], line, where)
    problem = _event_problem(event)
    if problem:
        raise RecordError(where, problem)
    return replace(event, features=None) if isinstance(event, Embedding) else event


def _event_problem(event: Event) -> str | None:
    """What the types alone do not say: the fields a reader indexes must be there and agree."""
    if isinstance(event, Started):
        if min(event.epochs, event.steps_per_epoch, event.n_retain, event.n_forget) < 0:
            return "negative counts"
    elif isinstance(event, EpochMetrics):
        if set(METRICS) - set(event.metrics):
            return f"metrics lack {', '.join(sorted(set(METRICS) - set(event.metrics)))}"
        if event.gap is not None and (set(METRICS) | {"avg"}) - set(event.gap):
            return "gap lacks a metric or avg"
    elif isinstance(event, Embedding):
        n = len(event.xy)
        if len(event.labels) != n or len(event.forget) != n:
            return "xy, labels and forget differ in length"
        if any(len(p) != 2 or not all(abs(v) < 1e30 for v in p) for p in event.xy):
            return "xy must be finite (x, y) pairs"
        if any(label < 0 for label in event.labels):
            return "negative class labels"
    elif isinstance(event, Done):
        try:
            parse_data(FinalScores, event.metrics, "metrics")
        except RecordError as exc:
            return f"metrics: {exc.detail}"
    return None


def read_events(path: str | Path, limit: int | None = None) -> tuple[list[Event], list[str]]:
    """The events of an events.jsonl (its first `limit` lines), and one note per damaged line;
    a damaged line is skipped, the rest still read."""
    path = Path(path)
    events: list[Event] = []
    damage: list[str] = []
    for i, line in enumerate(_read_bytes(path).splitlines(), 1):
        if limit is not None and i > limit:
            break
        if line.strip():
            try:
                events.append(read_event(line))
            except RecordError as exc:
                damage.append(f"{path.name} line {i}: {exc.detail}")
    return events, damage


# --- a run directory as a whole ---------------------------------------------------------------


@dataclass
class RunRecord:
    """What a run directory holds, each file checked; damage is listed, never raised."""

    path: Path
    spec: RunSpec | None = None
    metrics: Metrics | None = None
    status: Status | None = None
    labels: dict[str, Any] = field(default_factory=lambda: {"name": None, "tags": []})
    damage: list[str] = field(default_factory=list)  # "metrics.json line 1: ...", one per damaged file

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        rec = cls(Path(run_dir))
        from coun_tui.engine.forget import Split

        readers = (("run.toml", "spec", read_spec), ("metrics.json", "metrics", read_metrics),
                   ("status.json", "status", read_status), (LABELS_FILE, "labels", read_labels_checked),
                   ("split.npz", None, lambda run: Split.load(run / "split.npz")))
        for name, attr, reader in readers:
            if (rec.path / name).is_file():
                try:
                    value = reader(rec.path)
                except RecordError as exc:
                    rec.damage.append(exc.state.removeprefix("damaged: "))
                    continue
                if attr:
                    setattr(rec, attr, value)
        return rec

    @property
    def state(self) -> str:
        """done, the writer's state from status.json (failed, cancelled, ...), damaged, or
        incomplete (no verdict written: interrupted, or still running elsewhere)."""
        if self.metrics is not None:
            return "done"
        if (self.path / "metrics.json").is_file():
            return "damaged"
        if self.status is not None:
            return self.status.value
        return "damaged" if (self.path / "status.json").is_file() else "incomplete"

    @property
    def state_text(self) -> str:
        return f"damaged: {self.damage[0]}" if self.damage else self.state


_SPLIT_CACHE: dict[tuple[str, float], Any] = {}


def find_reference(runs_dir: str | Path, dataset: str, split: Split) -> Path | None:
    """The newest finished Retrain run in runs_dir made on exactly this split, if any; damaged
    runs are never references."""
    from coun_tui.engine.forget import Split
    from coun_tui.engine.paths import saved_runs

    for run in saved_runs(Path(runs_dir)):
        try:
            m = read_metrics(run)
            split_file = run / "split.npz"
            key = (str(split_file), split_file.stat().st_mtime)
            if m.method != "retrain" or m.dataset not in (None, dataset):
                continue
            if key not in _SPLIT_CACHE:
                _SPLIT_CACHE[key] = Split.load(split_file)
        except (UserError, OSError):
            continue
        if _SPLIT_CACHE[key].same_as(split):
            return run
    return None
