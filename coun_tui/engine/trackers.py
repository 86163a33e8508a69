"""Experiment trackers fed by a run's events: TensorBoard and MLflow, both optional.

A run's spec names its trackers (`--log tensorboard[:DIR]`, `--log mlflow[:URI]`); runs.record
feeds every event it writes to them, in the process that trains (a job's worker), so the logs are
written whether or not a client follows the run. What each tracker receives:

    every step      loss/<component> (ce, cl, forget, ..., total) and lr, at the global step
    every epoch     epoch/RA, epoch/UA, epoch/TA, epoch/MIA (probe subsets), epoch/gap_* and
                    epoch/avg_gap against Retrain, and the deeper metrics, at the epoch (0 = before)
    at the end      final/RA ... final/avg_gap, final/pflops, final/seconds (full sets)
    once            the hyperparameters and the run's settings (method, forget set, seed, ...) as
                    parameters; MLflow also keeps model.safetensors and metrics.json as artifacts

A tracker whose library is missing, or that fails at any point, is dropped with one warning line;
the run itself never fails because of it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from coun_tui.engine import UserError
from coun_tui.engine.events import Done, EpochMetrics, Event, Failed, Step
from coun_tui.engine.rundir import TENSORBOARD_DIR  # inside the run, when --log tensorboard names no DIR

KINDS = ("tensorboard", "mlflow")
LIBRARY = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # the module each needs
EXTRA = {"tensorboard": "pip install 'coun-lab[tensorboard]'", "mlflow": "pip install 'coun-lab[mlflow]'"}
MLFLOW_DEFAULT = "mlflow.db"  # MLflow's own default store: a SQLite file in the working directory
MLFLOW_EXPERIMENT = "coun-lab"
ARTIFACTS = ("model.safetensors", "metrics.json")
Warn = Callable[[str], None]
Params = dict[str, str | int | float | bool]  # a run's hyperparameters and settings, as plain values


def warn_on_stderr(message: str) -> None:
    """One warning line where the run's output goes (a job's worker.log, a notebook's stderr)."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


# --- targets: what --log says, made absolute where the launcher stands -------------------------


def parse_target(text: str) -> str:
    """`tensorboard`, `tensorboard:DIR`, `mlflow` or `mlflow:URI` in the form run.toml keeps: paths
    made absolute here (the worker may run elsewhere), MLflow's default store resolved."""
    kind, _, where = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UserError(f"--log {text.strip()!r}: unknown tracker {kind!r}; use tensorboard[:DIR] or mlflow[:URI]")
    if kind == "tensorboard":
        return f"tensorboard:{Path(where).expanduser().resolve()}" if where.strip() else "tensorboard"
    return f"mlflow:{mlflow_uri(where.strip())}"


def mlflow_uri(where: str) -> str:
    """An MLflow tracking URI: as given when it has a scheme; a path to a `.db` file is a SQLite
    store, any other path a file store; nothing given is $MLFLOW_TRACKING_URI or ./mlflow.db."""
    where = where or os.environ.get("MLFLOW_TRACKING_URI", "") or MLFLOW_DEFAULT
    if re.match(r"^[a-z][a-z0-9+.-]*:", where) and not re.match(r"^[A-Za-z]:[\\/]", where):
        return where
    path = Path(where).expanduser().resolve()
    return f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store (mlartifacts/, as `mlflow
    server` does), never in the working directory of whichever process trains; a file store and a
    server choose their own (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def usable_targets(targets: list[str], warn: Warn = warn_on_stderr) -> list[str]:
    """The targets whose library is installed here; each other one is one warning line."""
    kept = []
    for target in targets:
        kind = target.partition(":")[0]
        if library_installed(LIBRARY[kind]):
            kept.append(target)
        else:
            warn(missing_text(kind))
    return kept


def library_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken package
        return False


def missing_text(kind: str) -> str:
    return f"{kind} is not installed ({EXTRA[kind]}): this run is not logged to {kind}"


def run_name(run_dir: Path) -> str:
    """The run's name in a tracker: its folder's name, and inside a sweep (…/FORGET/seed-N/NAME)
    the forget set's and seed's folders too, so a sweep's runs stay apart."""
    parts = Path(run_dir).resolve().parts
    return "/".join(parts[-3:]) if re.fullmatch(r"seed-\d+", parts[-2]) else parts[-1]


# --- what is logged, the same for every tracker -----------------------------------------------


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def scalars_of(event: Event) -> tuple[dict[str, float], int] | None:
    """The scalars an event gives and the step they belong at (None for the other events)."""
    if isinstance(event, Step):
        return {**_finite({f"loss/{k}": v for k, v in event.losses.items()}), "lr": event.lr}, event.step
    if isinstance(event, EpochMetrics):
        values = {f"epoch/{k}": v for k, v in {**event.metrics, **(event.extra or {})}.items()}
        values.update({("epoch/avg_gap" if k == "avg" else f"epoch/gap_{k}"): v for k, v in (event.gap or {}).items()})
        return _finite(values), event.epoch
    if isinstance(event, Done):
        m = event.metrics
        final: dict[str, Any] = {f"final/{k}": v for k, v in m.items() if k not in ("gap", "avg_gap")}
        final.update({f"final/gap_{k}": v for k, v in (m.get("gap") or {}).items()})
        final.update({"final/avg_gap": m.get("avg_gap"), "final/pflops": event.flops / 1e15,
                      "final/seconds": event.seconds})
        return _finite(final), 0
    return None


class Tracker(Protocol):
    """One tracker: started for a run, then fed scalars, told the end and the files to keep."""

    kind: str

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def end(self, state: str, files: list[Path]) -> None: ...


class Feed:
    """Passes a run's events to its trackers; a tracker that raises is dropped with one warning."""

    def __init__(self, trackers: list[Tracker], run_dir: Path, warn: Warn = warn_on_stderr):
        self.trackers, self.run_dir, self.warn = trackers, Path(run_dir), warn
        self.state = "died"  # until an event says how the run ended

    def __call__(self, event: Event) -> None:
        if not self.trackers:
            return
        found = scalars_of(event)
        if found is not None:
            self._each(lambda t: t.scalars(*found))
        if isinstance(event, Done):
            self.state = "done"
        elif isinstance(event, Failed):
            self.state = "failed"
        elif event.kind == "cancelled":
            self.state = "cancelled"

    def close(self) -> None:
        files = [self.run_dir / name for name in ARTIFACTS if (self.run_dir / name).is_file()]
        self._each(lambda t: t.end(self.state, files if self.state == "done" else []))
        self.trackers = []

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
                self.trackers.remove(tracker)
                self.warn(f"{tracker.kind} logging stopped: {type(exc).__name__}: {exc}")


def open_feed(targets: list[str], params: Params, run_dir: Path, warn: Warn = warn_on_stderr) -> Feed:
    """The trackers named (as parse_target writes them), started with the run's parameters; those
    that cannot start are warned about."""
    trackers: list[Tracker] = []
    for target in targets:
        kind, _, where = target.partition(":")
        try:
            trackers.append(_start(kind, where, params, Path(run_dir)))
        except ImportError:
            warn(missing_text(kind))
        except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
            warn(f"{kind} logging is off for this run: {type(exc).__name__}: {exc}")
    return Feed(trackers, run_dir, warn)


def _start(kind: str, where: str, params: Params, run_dir: Path) -> Tracker:
    if kind == "tensorboard":
        folder = Path(where) / run_name(run_dir) if where else run_dir / TENSORBOARD_DIR
        return TensorBoardTracker(folder, params)
    if kind == "mlflow":
        return MlflowTracker(where or mlflow_uri(""), run_name(run_dir), params, run_dir)
    raise UserError(f"unknown tracker {kind!r}; use tensorboard or mlflow")


# --- the trackers -----------------------------------------------------------------------------


class TensorBoardTracker:
    """Scalars through tensorboard's writer (torch's SummaryWriter), and the settings in the
    HParams dashboard, linked with the final metrics."""

    kind = "tensorboard"
    FINAL = ("final/RA", "final/UA", "final/TA", "final/MIA", "final/avg_gap")

    def __init__(self, folder: Path, params: Params):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(folder))
        assert self.writer.file_writer is not None  # the writer opens its file when created
        self.events: Any = self.writer.file_writer
        experiment, start, end = hparams(params, {k: 0.0 for k in self.FINAL})
        self._end: Any = end
        for summary in (experiment, start):
            self.events.add_summary(summary)
        self.writer.add_text("forget set", f"{params['forget']}: {params['n_forget']} samples forgotten, "
                             f"{params['n_retain']} retained")

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def end(self, state: str, files: list[Path]) -> None:
        self.writer.add_text("state", state)
        self.events.add_summary(self._end)
        self.writer.close()


class MlflowTracker:
    """One MLflow run in the `coun-lab` experiment, through MlflowClient: parameters at the start,
    metrics sent in batches (each epoch and at the end), the checkpoint and metrics.json kept as
    artifacts of a finished run."""

    kind = "mlflow"
    STATUS = {"done": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "died": "FAILED"}

    def __init__(self, uri: str, name: str, params: Params, run_dir: Path):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if uri.startswith("file:"):  # a file store the user named: MLflow 3 asks for this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment = found.experiment_id if found else self.client.create_experiment(
            MLFLOW_EXPERIMENT, artifact_location=artifact_location(uri))
        tags = {"coun_lab.run_dir": str(Path(run_dir).resolve()), "coun_lab.method": str(params.get("method"))}
        self.run_id: str = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self._pending: list[Any] = []

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(key, value, now, step) for key, value in values.items()]
        if not any(key.startswith("loss/") for key in values):  # an epoch's or the end's: send now
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=batch)

    def end(self, state: str, files: list[Path]) -> None:
        self._flush()
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, self.STATUS.get(state, "FAILED"))
