"""Sweeps: every (forget set, seed) gets its Retrain reference first, then each method (and each
baseline +CL) at every point of its grid, each in its own run directory; resumable; tables of
mean ± std over seeds (and original models: `models`, one recipe trained with several seeds).

Layout: OUT/<forget>/seed-<s>/<method>[+cl][-<key><value>...]/ (<model stem>-seed-<s> with several
models) and OUT/table.md, OUT/table.json.
A grid axis (e.g. epochs = [1, 5, 10]) names its runs by key and value (ft-epochs5); an axis value
may be a table that sets several hyperparameters together, the axis key naming the run
({epochs = 10, l1_epochs = 4} -> l1-sparse-epochs10). An experiment file (experiments/*.toml, run by
`coun-lab sweep --spec FILE`) holds the same settings as the command-line options.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
import tomllib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
from pydantic import BaseModel, ConfigDict

from coun_tui.engine import UserError
from coun_tui.engine.events import Event
from coun_tui.engine.files import atomic_write
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.methods import check_hparams
from coun_tui.engine.methods import get as get_method
from coun_tui.engine.metrics import gaps
from coun_tui.engine.records import METRICS, describe_half, method_label, read_metrics, read_spec
from coun_tui.engine.report import aggregate, legend, load_run, render
from coun_tui.engine.runner import CancelFlag, RunSpec
from coun_tui.engine.runs import spec_to_dict, write_json
from coun_tui.engine.schema import RecordError, parse_data

if TYPE_CHECKING:
    from coun_tui.engine.backends import Backend


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
    # method (or "*") -> hyperparameter -> values: one run per point of the product of the axes.
    grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    # Other sweep folders whose finished runs with the same settings are copied instead of rerun.
    reuse: list[Path] = field(default_factory=list)
    # Experiment trackers every run logs to (--log; see engine/trackers.py)
    log: list[str] = field(default_factory=list)
    # TA on one half of the test set ("report" after tuning; see runner.half_rows), None: all of it
    test_half: str | None = None
    half_seed: int = 0
    # Where a method's settings came from, for the tables: method -> e.g. "study tune/ft (trial 7)"
    sources: dict[str, str] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # several originals (one recipe, other seeds)

    def replicates(self) -> list[tuple[str, int, str]]:
        """(original model, seed, folder) of each repetition: every seed on every original model."""
        models = self.models or [self.model]
        if len(models) == 1:
            return [(models[0], seed, f"seed-{seed}") for seed in self.seeds]
        stems = [Path(m).stem for m in models]
        if len(set(stems)) < len(stems):
            raise UserError(f"the sweep's models must have distinct file names: {', '.join(models)}")
        return [(m, seed, f"{stem}-seed-{seed}") for m, stem in zip(models, stems) for seed in self.seeds]

    def spread(self) -> str:
        """What a table's mean ± std is over, in words."""
        models = [f"`{Path(m).name}`" for m in self.models or [self.model]]
        if len(models) == 1:
            return f"mean ± std over unlearning seeds {self.seeds} of one original model {models[0]}"
        return (f"mean ± std over {len(models)} original models ({', '.join(models)}) × unlearning seeds "
                f"{self.seeds}: the spread of original training and of unlearning together")

    def labels(self) -> list[Label]:
        """Every row of the tables: Retrain, then each method at each grid point, then +CL."""
        # Unknown names fail before anything runs; "CoUn" is coun, as its run.toml will say.
        names = [get_method(m).name for m in self.methods]
        names = [m for m in dict.fromkeys(names) if m != "retrain"]
        rows = [Label("retrain", False, {}, "")]
        for cl in (False, True):
            for m in names:
                if cl and (not self.cl_too or get_method(m).always_cl or get_method(m).cl_refusal):
                    continue
                rows += [Label(m, cl, hp, suffix) for hp, suffix in grid_points(self.grid, m)]
        return rows

    def runs(self) -> list[tuple[Path, RunSpec]]:
        """Every run, the Retrain of each (forget set, seed) before the methods that need it; every
        hyperparameter is checked against its method's declaration before anything runs."""
        plan = []
        for forget in self.forgets:
            for model, seed, folder in self.replicates():
                base = self.out / forget_tag(forget) / folder
                for label in self.labels():
                    method, cl = label.method, label.cl
                    hp = {**self.hparams.get("*", {}), **self.hparams.get(method, {}),
                          **(self.hparams.get(method_label(method, True).lower(), {}) if cl else {}),
                          **label.hparams}
                    if method == "retrain":
                        hp = self.hparams.get("retrain", {})
                    hp = check_hparams(get_method(method), hp, str)
                    spec = RunSpec(method=method, model=model, dataset=self.dataset,
                                   data_root=self.data_root, forget=replace(forget, seed=seed), cl=cl,
                                   hparams=hp, seed=seed, device=self.device, log=list(self.log),
                                   reference=None if method == "retrain" else str(base / "retrain"),
                                   test_half=self.test_half, half_seed=self.half_seed)
                    plan.append((base / label.name, spec))
        return plan

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Sweep:
        """An experiment file (TOML): the sweep's options as keys, see experiments/README.md."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"cannot read experiment file {path}: {exc}") from None
        try:
            data = parse_data(ExperimentFile, data, str(path)).model_dump()
        except RecordError as exc:  # a file a person wrote: a mistake in it, not damage
            raise UserError(f"{path}: {exc.detail}; see experiments/README.md") from None
        forgets = [ForgetSpec(classes=sorted(item["classes"]), fraction=item["fraction"]) for item in data["forget"]]
        hparams: dict[str, dict[str, Any]] = {}
        for key, value in data.get("set", {}).items():
            if isinstance(value, dict):
                hparams.setdefault(key, {}).update(value)
            else:
                hparams.setdefault("*", {})[key] = value
        grid: dict[str, dict[str, list[Any]]] = {}
        for key, value in data.get("grid", {}).items():
            if isinstance(value, dict):
                grid[key] = value
            else:
                grid.setdefault("*", {})[key] = value
        for axes in grid.values():
            for key, values in axes.items():
                if not isinstance(values, list) or not values:
                    raise UserError(f"{path}: grid axis {key!r} must be a non-empty list of values")
        if data["picks"]:  # each method's best point of a finished search, beneath [set]
            for method, hp in picks(Sweep.from_file(data["picks"])).items():
                hparams[method] = {**hp, **hparams.get(method, {})}
        models = data["models"]
        if not data["model"] and not models:
            raise UserError(f"{path}: give `model` (the checkpoint to unlearn) or `models` (several)")
        settings = dict(model=data["model"] or models[0], models=models, methods=data["methods"], forgets=forgets,
                        seeds=data["seeds"], out=Path(data["out"]), cl_too=data["cl_too"], hparams=hparams,
                        device=data["device"],
                        data_root=data["data_root"], dataset=data["dataset"], grid=grid,
                        reuse=[Path(p) for p in data["reuse"]])
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)


class ForgetEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    classes: list[int] = []
    fraction: float | None = None


class ExperimentFile(BaseModel):
    """What an experiment file may hold (the sweep's options); values are checked when read."""

    model_config = ConfigDict(strict=True, extra="forbid")
    model: str | None = None
    models: list[str] = []
    methods: list[str]
    out: str
    forget: list[ForgetEntry]
    seeds: list[int] = [0]
    cl_too: bool = False
    set: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    reuse: list[str] = []
    picks: str | None = None
    device: str = "auto"
    data_root: str | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class Label:
    """One row of a sweep's tables: a method, with or without CL, at one grid point."""

    method: str
    cl: bool
    hparams: dict[str, Any]
    suffix: str  # "-epochs5-lambda0.3": the grid point, as named in the run directory

    @property
    def name(self) -> str:
        return method_label(self.method, self.cl).lower() + self.suffix

    @property
    def row(self) -> str:
        return method_label(self.method, self.cl) + self.suffix


def grid_points(grid: dict[str, dict[str, list[Any]]], method: str) -> list[tuple[dict[str, Any], str]]:
    """(hyperparameters, run-name suffix) of every point of a method's grid, in the file's order.

    A method's own axis replaces the axis of the same key given for every method ("*").
    """
    axes = {**grid.get("*", {}), **grid.get(method, {})}
    points: list[tuple[dict[str, Any], str]] = []
    for values in itertools.product(*axes.values()):
        hp: dict[str, Any] = {}
        suffix = ""
        for key, value in zip(axes, values):
            if isinstance(value, dict):  # several hyperparameters set together; `key` names the run
                if key not in value:
                    raise UserError(f"grid axis {key!r}: each table value must set {key!r} itself")
                hp.update(value)
                value = value[key]
            else:
                hp[key] = value
            suffix += f"-{key}{value:g}" if isinstance(value, float) else f"-{key}{value}"
        points.append((hp, suffix))
    return points or [({}, "")]


def forget_tag(forget: ForgetSpec) -> str:
    if not forget.classes and forget.fraction is None:
        raise UserError("a sweep needs --forget-class or --forget-fraction")
    return forget.tag()


def execute(sweep: Sweep, cancel: CancelFlag | None = None, on_start: Callable[[int, int, Path], None] | None = None,
            jobs: int = 1, poll: float = 0.2, backend: Backend | None = None) -> Iterator[tuple[Path, Event]]:
    """Run what is not finished yet, as jobs, up to `jobs` at once (within each device's limit);
    a half-finished run directory is cleared and redone. A method's run starts only once its
    Retrain has finished (and is skipped if that Retrain failed). Yields every job's events.

    `backend` (engine/backends.py; default local): one that schedules runs itself (Ray) gets every
    run at once, each method chained to its Retrain, and `jobs` does not apply."""
    completed = yield from run_plan(sweep.runs(), cancel, on_start, jobs, poll, backend,
                                    reuse=lambda run_dir, spec: reuse_finished(sweep, run_dir, spec),
                                    on_finished=lambda: write_tables(sweep))
    if completed:  # a cancelled sweep's tables hold only the runs it finished (written as they did)
        write_tables(sweep)


def run_plan(plan: list[tuple[Path, RunSpec]], cancel: CancelFlag | None = None,
             on_start: Callable[[int, int, Path], None] | None = None, jobs: int = 1, poll: float = 0.2,
             backend: Backend | None = None, reuse: Callable[[Path, RunSpec], bool] | None = None,
             on_finished: Callable[[], Any] | None = None,
             on_checked: Callable[[], Any] | None = None) -> Generator[tuple[Path, Event], None, bool]:
    """The jobs of `execute`, for any plan of (run directory, spec): finished runs are kept (and
    refused if made with other settings), the rest launched; `reuse` may fill a run directory
    from elsewhere instead (True if it did), `on_finished` is called after each finished run and
    `on_checked` once every run has passed its checks, before anything is written. Returns False
    if it was cancelled."""
    from coun_tui.engine import jobs as job_api
    from coun_tui.engine.backends import LocalBackend
    from coun_tui.engine.rundir import read_holder, read_state

    backend = backend or LocalBackend()
    finished = on_finished or (lambda: None)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: run at least 1 job at once")
    todo = []
    for run_dir, spec in plan:
        if not (run_dir / "metrics.json").is_file():
            todo.append((run_dir, spec))
            continue
        read_metrics(run_dir)  # a damaged finished run stops the sweep before anything runs
        if diff := differences(run_dir, spec):
            raise UserError(f"{run_dir} was made with other settings ({diff}); "
                            "rerun with the same options, or give another --out")
    devices = {}
    for run_dir, spec in todo:  # bad settings or another writer: refused before anything runs
        devices[run_dir] = backend.check(replace(spec, reference=None))  # its Retrain may not exist yet
        if (holder := read_holder(run_dir)) is not None:
            from coun_tui.engine.rundir import describe_holder

            raise UserError(f"{run_dir} is being written by {describe_holder(holder)}; wait for that sweep "
                            "to finish, or give another --out")
    if on_checked is not None:
        on_checked()
    running: dict[Path, job_api.Follower] = {}
    index = {run_dir: i for i, (run_dir, _) in enumerate(plan)}
    try:
        while todo or running:
            if cancel is not None and cancel.is_set():
                for run_dir in running:
                    job_api.cancel(run_dir)
                for run_dir, follower in running.items():
                    job_api.wait(run_dir)
                    for event in follower.read():
                        yield run_dir, event
                return False  # the tables hold what finished before
            for run_dir, spec in list(todo):
                if len(running) >= jobs and not backend.schedules:
                    break
                ref = Path(spec.reference) if spec.reference else None
                after = None
                if ref is not None and not (ref / "metrics.json").is_file():
                    if ref in running and backend.schedules:
                        after = ref  # the backend starts it when its Retrain has finished
                    elif ref in running or any(ref == d for d, _ in todo):
                        continue  # its Retrain has not finished yet
                    else:
                        todo.remove((run_dir, spec))  # its Retrain failed: no reference to measure gaps against
                        continue
                todo.remove((run_dir, spec))
                if on_start:
                    on_start(index[run_dir], len(plan), run_dir)
                if reuse is not None and reuse(run_dir, spec):
                    finished()
                    continue
                running[run_dir] = job_api.Follower(backend.launch(spec, run_dir, after=after,
                                                                         checked=devices[run_dir]))
            quiet = True
            for run_dir, follower in list(running.items()):
                events = follower.read()
                for event in events:
                    quiet = False
                    yield run_dir, event
                if not events and read_holder(run_dir) is None and not read_state(run_dir).live:
                    for event in follower.read():
                        yield run_dir, event
                    del running[run_dir]
                    if (run_dir / "metrics.json").is_file():
                        finished()  # so a stopped sweep's tables show every run it finished
            if quiet:
                time.sleep(poll)
    except (KeyboardInterrupt, GeneratorExit):  # Ctrl-C, or the caller stopped: no orphans
        for run_dir in running:
            job_api.cancel(run_dir)
        raise
    return True


# What does not change a run's results: where it ran, where files sit, its reference (always the
# Retrain beside it, compared by its own settings), the probe subsets' size (live estimates
# only; the final metrics are on the full sets), and the trackers it logged to.
_NOT_SETTINGS = ("device", "data_root", "reference", "hparams", "probe_size", "log")


def differences(run_dir: Path, planned: RunSpec) -> str:
    """How a finished run's settings differ from a planned run's ("" if they are the same).

    Hyperparameters are compared as the run used them (metrics.json records them with every
    default filled in), so a run made before a default changed is not mistaken for a new one.
    """
    def settings(spec: RunSpec) -> dict[str, Any]:
        d = {k: v for k, v in spec_to_dict(spec).items() if k not in _NOT_SETTINGS}
        if "model" in d:  # the same file however the path was spelled
            d["model"] = str(Path(d["model"]).resolve())
        return d

    done, want = settings(read_spec(run_dir)), settings(planned)
    diffs = [f"{k}: {done.get(k)!r} there, {want.get(k)!r} now"
             for k in sorted(set(done) | set(want)) if done.get(k) != want.get(k)]
    used = load_run(run_dir).get("hparams")
    if isinstance(used, dict):
        now = _full_hparams(planned)
        diffs += [f"hparams {k}: {used.get(k)!r} there, {now.get(k)!r} now"
                  for k in sorted(set(used) | set(now)) if used.get(k) != now.get(k)]
    elif (old := read_spec(run_dir).hparams) != planned.hparams:
        diffs.append(f"hparams: {old!r} there, {planned.hparams!r} now")
    return ", ".join(diffs)


def _full_hparams(spec: RunSpec) -> dict[str, Any]:
    from coun_tui.engine import checkpoint
    from coun_tui.engine.runner import merged_hparams

    meta = checkpoint.read_meta(spec.model) if spec.model else {}
    return merged_hparams(get_method(spec.method), meta, spec.hparams)


def find_reusable(sweep: Sweep, run_dir: Path, spec: RunSpec) -> Path | None:
    """A finished run with the same settings in one of the sweep's `reuse` folders, if any."""
    tag, seed = run_dir.parent.parent.name, run_dir.parent.name
    for folder in sweep.reuse:
        candidates = sorted({*folder.glob(f"{tag}/{seed}/*/metrics.json"), *folder.glob(f"{tag}/*/metrics.json")})
        for found in (c.parent for c in candidates):
            if not differences(found, spec):
                return found
    return None


def reuse_finished(sweep: Sweep, run_dir: Path, spec: RunSpec) -> bool:
    """Copy a reusable run into run_dir, its gaps measured again against this sweep's own Retrain."""
    found = find_reusable(sweep, run_dir, spec)
    if found is None:
        return False
    from coun_tui.engine.jobs import stored_reference

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a half-finished run nobody writes (execute checked)

    shutil.copytree(found, run_dir, ignore=shutil.ignore_patterns(".*"))
    with atomic_write(run_dir / "run.toml") as fh:
        stored = replace(spec, reference=stored_reference(spec.reference, run_dir))
        fh.write(tomli_w.dumps(spec_to_dict(stored)).encode())
    m = load_run(run_dir)
    m.pop("name", None)
    if spec.reference:
        ref = load_run(spec.reference)
        m["reference"] = {k: ref[k] for k in METRICS}
        m["gap"], m["avg_gap"] = gaps(m, ref)
    write_json(run_dir / "metrics.json", m)
    return True


def write_tables(sweep: Sweep) -> dict[str, Any]:
    """OUT/table.md and OUT/table.json from whatever runs have finished.

    Each run is measured against its own seed's Retrain: a row's Avg. Gap is the paper's (gap of
    the means over its seeds to the mean of those seeds' Retrains), its seed mean is kept beside it.
    """
    tables: dict[str, Any] = {}
    md = [f"# Sweep — {sweep.spread()}\n"]
    folders = [folder for _, _, folder in sweep.replicates()]
    if sweep.test_half:  # a tuned sweep: which half of the test set its TA read
        md.append(f"TA and the MIA's non-members: {describe_half(sweep.test_half, sweep.half_seed)}.\n")
    if sweep.sources:
        md += ["Settings from: " + "; ".join(f"{m}: {where}" for m, where in sweep.sources.items()) + "\n"]
    all_rows = []
    for forget in sweep.forgets:
        tag = forget_tag(forget)
        retrains = {folder: load_run(d) for folder in folders
                    if ((d := sweep.out / tag / folder / "retrain") / "metrics.json").is_file()}
        rows: list[dict[str, Any]] = []
        finished: dict[str, dict[str, dict[str, Any]]] = {}
        for label in sweep.labels():
            done = finished[label.row] = {}
            for folder in folders:
                if ((d := sweep.out / tag / folder / label.name) / "metrics.json").is_file():
                    m = load_run(d)
                    ref = retrains.get(folder)
                    m["reference"] = {k: ref[k] for k in METRICS} if ref else None
                    if label.method == "retrain":  # each seed's Retrain is its own reference: gaps are 0
                        m.update(gap={k: 0.0 for k in METRICS}, avg_gap=0.0)
                    done[folder] = m
            if done:
                rows.append({**aggregate(list(done.values())), "method": label.row})
        if not rows:
            continue
        all_rows += rows
        tables[tag] = {r["method"]: r for r in rows}
        md += [f"## {tag}\n", render(rows, "md", with_legend=False)]
        pairs = [(lb.method + lb.suffix, lb.row) for lb in sweep.labels() if lb.cl]
        cl_rows = [row for base, cl in pairs if (row := _with_and_without_cl(finished[base], finished[cl], base))]
        if cl_rows:
            md += ["Avg. Gap (the paper's, gap of means) without and with CoUn's CL term (the poster's Figure 4):\n",
                   "| Method | Avg. Gap | Avg. Gap +CL | Improvement |", "|---|---|---|---|"]
            md += [f"| {m} | {a['avg_gap']:.2f} | {b['avg_gap']:.2f} | "
                   f"{100 * (a['avg_gap'] - b['avg_gap']) / a['avg_gap']:+.1f}% |" for m, a, b in cl_rows]
            md.append("")
    if all_rows:
        md.append(legend(all_rows))
    with atomic_write(sweep.out / "table.md", "w") as fh:
        fh.write("\n".join(md) + "\n")
    with atomic_write(sweep.out / "table.json", "w") as fh:
        json.dump(tables, fh, indent=2)
    return tables


def _with_and_without_cl(base: dict[str, dict[str, Any]], cl: dict[str, dict[str, Any]], name: str,
                         ) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """A baseline's and its +CL's rows over the seeds both have finished, so that an unfinished
    sweep never sets one seed's +CL against three seeds' baseline; the seeds are named then."""
    seeds = [folder for folder in base if folder in cl]
    if not seeds:
        return None
    a, b = (aggregate([runs[s] for s in seeds]) for runs in (base, cl))
    if not a["avg_gap"] or b["avg_gap"] is None:
        return None
    if len(seeds) < max(len(base), len(cl)):
        shown = [s.removeprefix("seed-") for s in seeds]
        name += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(shown)})"
    return name, a, b


def curves(sweep: Sweep, axis: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each method's rows of the sweep's tables along one grid axis, e.g. Avg. Gap against epochs.

    forget tag -> series name (the method, +CL and the other grid values) -> points sorted by the
    axis, each {axis: value, **the table row}. Points that have not finished are left out.
    """
    tables = write_tables(sweep)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for tag, rows in tables.items():
        series: dict[str, list[dict[str, Any]]] = {}
        for label in sweep.labels():
            if axis not in label.hparams or label.row not in rows:
                continue
            value = label.hparams[axis]
            name = method_label(label.method, label.cl) + label.suffix.replace(
                f"-{axis}{value:g}" if isinstance(value, float) else f"-{axis}{value}", "", 1)
            series.setdefault(name, []).append({axis: value, **rows[label.row]})
        out[tag] = {name: sorted(points, key=lambda p: p[axis]) for name, points in series.items()}
    return out


def picks(search: Sweep) -> dict[str, dict[str, Any]]:
    """Each method's hyperparameters at its best point of a finished search: the lowest Avg. Gap,
    averaged over the search's forget sets; read from that run's run.toml."""
    plan = search.runs()
    finished = [d for d, _ in plan if (d / "metrics.json").is_file()]
    if len(finished) < len(plan):
        raise UserError(f"the search in {search.out} has {len(finished)} of {len(plan)} runs finished; "
                        "finish it first (rerun its coun-lab sweep --spec command)")
    tables = write_tables(search)
    best: dict[str, tuple[float, Label]] = {}
    for label in search.labels():
        if label.method == "retrain" or label.cl:
            continue
        scores = [rows[label.row]["avg_gap"] for rows in tables.values() if label.row in rows]
        if scores and all(s is not None for s in scores):
            score = sum(scores) / len(scores)
            if label.method not in best or score < best[label.method][0]:
                best[label.method] = (score, label)
    tag = forget_tag(search.forgets[0])
    first = search.replicates()[0][2]
    return {method: read_spec(search.out / tag / first / label.name).hparams
            for method, (_, label) in best.items()}
