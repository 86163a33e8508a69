"""coun-lab from Python: load a model, choose what it forgets, unlearn, evaluate, compare.

A thin layer over the engine that the CLI and the app drive, not a second implementation: a run
is a RunSpec prepared and recorded by the job worker's own function (worker.run_job), here in this
process or, with background=True, as a job started by jobs.launch; evaluate() is `coun-lab eval`
and compare() is `coun-lab compare`. Every run lives in a run directory, so the CLI and the app
see runs made from Python (and the other way round). See docs/python-api.md.

Importing this module loads neither torch nor the app: each function loads what it needs.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coun_tui.engine import UserError, jobs
from coun_tui.engine.forget import ForgetSpec, class_id
from coun_tui.engine.rundir import read_state
from coun_tui.engine.trackers import parse_target, usable_targets

if TYPE_CHECKING:
    from torch import nn

    from coun_tui.engine.events import Event
    from coun_tui.engine.runner import RunSpec

__all__ = ["ForgetSet", "Model", "Run", "Table", "UserError", "compare", "evaluate", "load_model", "unlearn"]

MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class Model:
    """A checkpoint, loaded: `network` is torchvision's ResNet-18 (eval mode, CPU, float32) and
    `meta` what its file records (dataset, classes, normalisation, and for an unlearned model its
    forget set, method and metrics)."""

    path: Path
    network: nn.Module
    meta: dict[str, Any]

    @property
    def dataset(self) -> str | None:
        """The dataset the model was trained on (None when its file does not say)."""
        name = self.meta.get("dataset")
        return str(name) if name else None

    @property
    def classes(self) -> list[str] | None:
        """The class names, in the order of the network's outputs (None when not recorded)."""
        names = self.meta.get("classes")
        return [str(n) for n in names] if names else None

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, dataset={self.dataset!r}, classes={self.meta.get('num_classes')})"


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load a checkpoint (.safetensors, or a .pt/.pth state dict read with weights_only) or a run
    directory's model. Raises UserError, one line, for anything that is not a ResNet-18 checkpoint."""
    from coun_tui.engine import checkpoint

    file = _checkpoint_path(path)
    network, meta = checkpoint.load(file)
    return Model(file, network, meta)


@dataclass(frozen=True)
class ForgetSet:
    """What to forget, built with ForgetSet.classes(3), ForgetSet.fraction(0.1, seed=0) or
    ForgetSet.indices([...]). Class names ("Coat") are resolved against the model's classes."""

    spec: ForgetSpec
    class_tokens: tuple[str, ...] = ()

    @classmethod
    def classes(cls, *classes: int | str, seed: int = 0) -> ForgetSet:
        """Forget every training sample of these classes (ids or names); `seed` draws the MIA's samples."""
        if not classes:
            raise UserError("ForgetSet.classes() needs at least one class, e.g. ForgetSet.classes(3)")
        return cls(ForgetSpec(seed=seed), tuple(str(c) for c in classes))

    @classmethod
    def fraction(cls, fraction: float, seed: int = 0) -> ForgetSet:
        """Forget a random `fraction` (0 < f < 1) of the training samples, drawn with `seed`."""
        return cls(ForgetSpec(fraction=float(fraction), seed=seed))

    @classmethod
    def indices(cls, indices: Sequence[int] | str | os.PathLike[str], seed: int = 0) -> ForgetSet:
        """Forget these training-split indices: a list, or a .npy, .txt or split.npz file of them."""
        if isinstance(indices, (str, os.PathLike)):
            return cls(ForgetSpec(indices_file=str(Path(indices).resolve()), seed=seed))
        return cls(ForgetSpec(indices=[int(i) for i in indices], seed=seed))

    def resolve(self, class_names: Sequence[str], dataset: str = "the dataset") -> ForgetSpec:
        """The engine's ForgetSpec, with class names turned into ids."""
        if not self.class_tokens:
            return self.spec
        ids = sorted({class_id(token, list(class_names), dataset) for token in self.class_tokens})
        return replace(self.spec, classes=ids)

    def __repr__(self) -> str:
        shown = ("class " + ",".join(self.class_tokens)) if self.class_tokens else self.spec.describe()
        return f"ForgetSet({shown})"


class Run:
    """A run directory: one that unlearn() started, or any saved run (Run("runs/coun-3")).

    Everything is read from the directory, so a Run follows a job that another process started
    as well as one of its own; it is also a path (os.fspath(run) is its directory, made absolute
    so that the handle still finds it after a change of working directory)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).resolve()

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        """queued, running, done, failed, cancelled, died or damaged."""
        return read_state(self.path).state

    def events(self) -> Iterator[Event]:
        """The run's events (Started, Step, EpochMetrics, Embedding, Done, Failed, Cancelled) from the
        first: those written so far, then, while it runs, each as the worker writes it."""
        yield from jobs.stream(self.path)

    @property
    def metrics(self) -> dict[str, Any] | None:
        """metrics.json of a finished run (RA, UA, TA, MIA, gap, avg_gap, pflops, hparams, ...), else None."""
        from coun_tui.engine.records import read_metrics

        if not (self.path / "metrics.json").is_file():
            return None
        return read_metrics(self.path).as_dict()

    @property
    def checkpoint(self) -> Path | None:
        """The unlearned model's file (load it with load_model), once the run has finished."""
        path = self.path / MODEL_FILE
        return path if path.is_file() and (self.path / "metrics.json").is_file() else None

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run is over (or `timeout` seconds pass); returns its state."""
        return jobs.wait(self.path, timeout).state

    def cancel(self) -> bool:
        """Ask a queued or running job to stop (within a step); False when it is not live."""
        return jobs.cancel(self.path)


RunLike = Run | str | os.PathLike[str]


def unlearn(model: Model | str | os.PathLike[str], method: str, forget: ForgetSet, *,
            reference: RunLike | None = None, background: bool = False, out: str | os.PathLike[str] | None = None,
            seed: int | None = None, cl: bool = False, device: str = "auto", precision: str = "auto",
            log: Sequence[str] = (), **hparams: Any) -> Run:
    """Make `model` forget `forget` with `method` ("coun", "ft", "retrain", ...; see `coun-lab methods`).

    The run is kept in `out` (default: a new folder in the app's runs directory). With
    background=False it runs here and returns when it is over; with background=True it starts as
    a job (as `coun-lab unlearn --detach`) and returns at once: follow it with .events(), .wait()
    or .cancel(). `reference`: a Retrain run (or its checkpoint) of the same forget set, for the
    gaps. `seed`: training's seed (default: the forget set's). `log`: trackers, as --log takes
    them ("tensorboard", "tensorboard:DIR", "mlflow", "mlflow:URI"). Hyperparameters go by name,
    lr=0.01, epochs=5; `lambda` is spelt lambda_. Bad input raises UserError before anything is
    written."""
    from coun_tui.engine.runner import RunSpec

    source = model.path if isinstance(model, Model) else _checkpoint_path(model)
    meta = model.meta if isinstance(model, Model) else None
    spec = RunSpec(method=method, model=str(source), forget=_resolved(forget, source, meta), cl=cl,
                   hparams={key.rstrip("_"): value for key, value in hparams.items()},
                   seed=forget.spec.seed if seed is None else seed, device=device, precision=precision,
                   reference=None if reference is None else os.fspath(reference),
                   log=usable_targets([parse_target(target) for target in log]))
    run_dir = Path(out) if out is not None else _default_out(method, spec)
    if background:
        from coun_tui.engine.backends import LocalBackend

        return Run(LocalBackend().launch(spec, run_dir))
    return Run(_run_here(spec, run_dir))


def evaluate(model: Model | RunLike, forget: ForgetSet | None = None, *, reference: RunLike | None = None,
             seed: int = 0, device: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """RA, UA, TA and MIA (percent) of a model on the full sets, as `coun-lab eval --json` gives them,
    with the gaps to a Retrain `reference`. Without `forget`, an unlearned model is measured on its
    own recorded forget set (and any other on the reference's)."""
    from coun_tui.engine.runner import RunSpec, evaluate_checkpoint

    source = model.path if isinstance(model, Model) else _checkpoint_path(model)
    meta = model.meta if isinstance(model, Model) else None
    spec = RunSpec(model=str(source), forget=_resolved(forget, source, meta) if forget else ForgetSpec(seed=seed),
                   seed=seed, device=device, precision=precision,
                   reference=None if reference is None else os.fspath(reference))
    result, split, used = evaluate_checkpoint(spec)
    return {**result, "n_retain": len(split.retain), "n_forget": len(split.forget), "dataset": used.get("dataset")}


@dataclass(frozen=True)
class Table:
    """A comparison of runs, one dict per row (the columns of `coun-lab compare`), with no pandas needed."""

    rows: list[dict[str, Any]]

    @property
    def columns(self) -> list[str]:
        """Every column any row has, in the order they first appear."""
        return list(dict.fromkeys(key for row in self.rows for key in row))

    def to_markdown(self) -> str:
        """The paper's Table 1 layout, as `coun-lab compare` prints it."""
        from coun_tui.engine.report import render

        return render(self.rows, "md")

    def to_csv(self) -> str:
        """Every column as CSV, one line per row."""
        from coun_tui.engine.report import render

        return render(self.rows, "csv")

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (needs pandas)."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise UserError("Table.to_pandas() needs pandas: pip install pandas "
                            "(or use .rows, .to_csv() or .to_markdown())") from None
        return pandas.DataFrame(self.rows, columns=self.columns)

    def _repr_markdown_(self) -> str:  # a notebook shows the table
        return self.to_markdown()

    def __len__(self) -> int:
        return len(self.rows)


def compare(runs: Sequence[RunLike], *, reference: RunLike | None = None, sort: str | None = None,
            per_method: bool = False) -> Table:
    """Finished runs side by side, as `coun-lab compare`: with a Retrain `reference` every run's
    gaps are measured against it; `per_method` gives one row per method and forget set (mean ±
    std over seeds); `sort` names a column (e.g. "avg_gap")."""
    from coun_tui.engine.report import compare_rows

    if not runs:
        raise UserError("compare() needs at least one finished run")
    rows = compare_rows([Path(os.fspath(r)) for r in runs], sort,
                        None if reference is None else os.fspath(reference), per_method)
    return Table(rows)


# --- helpers ---------------------------------------------------------------------------------


def _checkpoint_path(path: RunLike) -> Path:
    """A checkpoint file, or a run directory's model."""
    file = Path(os.fspath(path))
    if file.is_dir():
        if not (file / MODEL_FILE).is_file():
            raise UserError(f"{file} holds no {MODEL_FILE}; give a checkpoint or a finished run's directory")
        return file / MODEL_FILE
    return file


def _resolved(forget: ForgetSet, source: Path, meta: dict[str, Any] | None) -> ForgetSpec:
    """The forget set with class names as ids, against the model's recorded classes."""
    if not forget.class_tokens:
        return forget.spec
    if meta is None:
        from coun_tui.engine import checkpoint

        meta = checkpoint.read_meta(source)
    names = meta.get("classes") or [str(i) for i in range(int(meta["num_classes"]))]
    return forget.resolve(names, str(meta.get("dataset") or "the model"))


def _default_out(method: str, spec: RunSpec) -> Path:
    from coun_tui.engine.paths import default_runs_dir

    return default_runs_dir() / f"{method.lower()}-{spec.forget.tag()}-{time.strftime('%Y%m%d-%H%M%S')}"


def _run_here(spec: RunSpec, out: Path) -> Path:
    """Run `spec` in this process as a job's worker runs it (worker.run_job), holding the run's
    lock so no other writer enters; an interrupt (Ctrl-C, a notebook's stop) cancels the run."""
    import tomli_w

    from coun_tui.engine.events import Cancelled, to_json
    from coun_tui.engine.files import append_line, atomic_write
    from coun_tui.engine.rundir import EVENTS_FILE, RunLock, check_out_dir, clear_for_writing, host, write_status
    from coun_tui.engine.runner import check
    from coun_tui.engine.runs import spec_to_dict
    from coun_tui.engine.worker import run_job

    device = check(spec)  # bad input: one line, nothing written
    run_dir = check_out_dir(out, spec.model)
    lock = RunLock.acquire(run_dir)
    try:
        clear_for_writing(run_dir)
        stored = replace(spec, reference=jobs.stored_reference(spec.reference, run_dir))
        with atomic_write(run_dir / "run.toml") as fh:
            fh.write(tomli_w.dumps(spec_to_dict(stored)).encode())
        write_status(run_dir, state="queued", pid=os.getpid(), host=host(), device=device, launched=time.time())
        try:
            run_job(run_dir)
        except KeyboardInterrupt:
            step = read_state(run_dir).step
            with open(run_dir / EVENTS_FILE, "ab", buffering=0) as log:
                append_line(log, to_json(Cancelled(step)))
            write_status(run_dir, state="cancelled", step=step, reason="interrupted")
            raise
    finally:
        lock.release()
    return run_dir
