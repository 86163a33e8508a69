"""Tuning: one budgeted Optuna search per method, every trial a job of the lab (a study folder:
engine/study.py).

The objective is the Avg. Gap to the study's Retrain with TA and the MIA's non-members on the
validation half of the test set (runner.half_rows); the report half is left for the final tables
(`coun-lab sweep --from-study`). Trials are asked and told (Optuna's ask/tell), so several run at
once, launched like a sweep's runs (engine/backends.py: local workers or Ray). Each reports its
probe Avg. Gap at every epoch's end and the pruner may stop it (its run is cancelled and kept). A
study process that dies leaves trials RUNNING: the next one tells those whose runs finished,
follows those still running, and retries (same parameters) those whose runs were cut off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import Trial, TrialState

from coun_tui.engine import UserError
from coun_tui.engine.events import EpochMetrics, Failed
from coun_tui.engine.jobs import Follower, cancel
from coun_tui.engine.records import describe_half, read_metrics
from coun_tui.engine.rundir import read_holder, read_state
from coun_tui.engine.study import RETRY_OF, Study, StudyLock, counted, distributions, open_study

if TYPE_CHECKING:
    from coun_tui.engine.backends import Backend

PRUNERS = ("median", "halving", "none")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":  # after 3 trials have reported: stop below the median at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner {name!r}: use {', '.join(PRUNERS)}")


@dataclass
class Active:
    """A trial in flight: its run directory and what has been read of it."""

    number: int
    run_dir: Path
    follower: Follower
    trial: Trial | None = None  # None for a trial adopted from a study process that died
    told: bool = False  # pruned: told, its run is being cancelled
    failed: str | None = None


Say = Callable[[str], None]


def _finish(study: optuna.Study, a: Active, say: Say) -> None:
    """Tell the study how a trial's run ended (unless it was pruned and told already)."""
    if a.told:
        return
    target: Trial | int = a.trial if a.trial is not None else a.number
    if (a.run_dir / "metrics.json").is_file():
        value = read_metrics(a.run_dir).avg_gap
        if value is not None and math.isfinite(value):
            study.tell(target, value)
            say(f"trial {a.number}: Avg. Gap {value:.3f}")
            return
        a.failed = "no Avg. Gap"
    if a.failed:
        study.tell(target, state=TrialState.FAIL)
        say(f"trial {a.number} failed: {a.failed}")
        return
    _retry(study, a.number, target, say)


def _retry(study: optuna.Study, number: int, target: Trial | int, say: Say) -> None:
    params = study.get_trials(deepcopy=False)[number].params
    study.enqueue_trial(params, user_attrs={RETRY_OF: number})
    study.tell(target, state=TrialState.FAIL)
    say(f"trial {number}: its run was cut off; its parameters are tried again")


def resume_left_trials(study: optuna.Study, folder: Path, say: Say) -> list[Active]:
    """Trials a dead study process left RUNNING: told if their runs finished, followed if still
    running, retried with the same parameters if cut off."""
    adopted = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = folder / str(t.user_attrs.get("run", f"trial-{t.number:04d}"))
        a = Active(t.number, run_dir, Follower(run_dir))
        events = a.follower.read()
        a.failed = next((e.reason for e in events if isinstance(e, Failed)), None)
        if read_holder(run_dir) is not None or read_state(run_dir).live:
            say(f"trial {t.number}: following its run, still going")
            adopted.append(a)
        else:
            _finish(study, a, say)
    return adopted


def _ensure_reference(study: Study, backend: Backend, own: bool, say: Say, poll: float) -> None:
    """The study's Retrain, on the validation half: run here (a job) unless it is finished."""
    ref = study.reference
    if (ref / "metrics.json").is_file():
        return
    if not own:
        raise UserError(f"--reference {ref} is not a finished run; finish it, or leave --reference out")
    say(f"reference: Retrain on {describe_half('val', study.settings.half_seed)} in {ref}")
    if read_holder(ref) is None and not read_state(ref).live:
        backend.launch(study.retrain_spec(), ref)
    while read_holder(ref) is not None or read_state(ref).live:
        time.sleep(poll)
    if not (ref / "metrics.json").is_file():
        raise UserError(f"the reference Retrain in {ref} did not finish ({read_state(ref).describe()}); "
                        "see its worker.log, then rerun")


def check(study: Study, backend: Backend, own_reference: bool = True) -> str:
    """The checks of a trial's run before anything is written (the method, +CL, the model, the forget
    set, the device; a given reference's split and test half); returns the device's queue."""
    device = backend.check(replace(study.trial_spec({}), reference=None))
    if not own_reference:
        backend.check(study.trial_spec({}))
    return device


def run(study: Study, name: str | None, jobs: int = 1, backend: Backend | None = None,
        pruner: optuna.pruners.BasePruner | None = None, say: Say = print, poll: float = 0.2,
        own_reference: bool = True) -> optuna.Study:
    """Run the study until `trials` trials are counted (see `counted`), up to `jobs` at once."""
    from coun_tui.engine.backends import LocalBackend

    if jobs < 1:
        raise UserError(f"--jobs {jobs}: run at least 1 trial at once")
    backend = backend or LocalBackend()
    device = check(study, backend, own_reference)  # bad settings: before anything is written
    ostudy = open_study(study, name)
    lock = StudyLock(study.folder)
    try:
        ostudy.pruner = pruner or make_pruner("median")
        _ensure_reference(study, backend, own_reference, say, poll)
        _loop(study, ostudy, backend, device, jobs, say, poll)
    finally:
        lock.release()
    return ostudy


def _loop(study: Study, ostudy: optuna.Study, backend: Backend, device: str, jobs: int, say: Say,
          poll: float) -> None:
    dists = distributions(study.settings)
    running = {a.number: a for a in resume_left_trials(ostudy, study.folder, say)}
    try:
        while True:
            done = len(counted(ostudy.get_trials(deepcopy=False)))
            if done + len(running) < study.settings.trials and len(running) < jobs:
                a = _start(study, ostudy, backend, device, dists, say)
                running[a.number] = a
                continue
            if not running:
                return
            quiet = True
            for a in list(running.values()):
                quiet &= not _follow(ostudy, a, say)
                if read_holder(a.run_dir) is None and not read_state(a.run_dir).live:
                    a.failed = a.failed or next((e.reason for e in a.follower.read() if isinstance(e, Failed)), None)
                    _finish(ostudy, a, say)
                    del running[a.number]
            if quiet:
                time.sleep(poll)
    except (KeyboardInterrupt, GeneratorExit):  # stopped here: the runs stop too, the trials are retried
        for a in running.values():
            cancel(a.run_dir)
        raise


def _start(study: Study, ostudy: optuna.Study, backend: Backend, device: str,
           dists: dict[str, BaseDistribution], say: Say) -> Active:
    trial = ostudy.ask(dists)
    run_dir = study.folder / f"trial-{trial.number:04d}"
    trial.set_user_attr("run", run_dir.name)
    params = dict(trial.params)
    backend.launch(study.trial_spec(params), run_dir, checked=device)
    say(f"trial {trial.number}: " + ", ".join(f"{k}={v:.4g}" for k, v in params.items()))
    return Active(trial.number, run_dir, Follower(run_dir), trial)


def _follow(ostudy: optuna.Study, a: Active, say: Say) -> bool:
    """Read a trial's new events: each epoch's probe Avg. Gap goes to the pruner. True if any."""
    events = a.follower.read()
    for event in events:
        if isinstance(event, Failed):
            a.failed = event.reason
        if not isinstance(event, EpochMetrics) or event.epoch < 1 or not event.gap or a.told or a.trial is None:
            continue
        a.trial.report(float(event.gap["avg"]), event.epoch)
        if a.trial.should_prune():
            cancel(a.run_dir)
            ostudy.tell(a.trial, state=TrialState.PRUNED)
            a.told = True
            say(f"trial {a.number} pruned at epoch {event.epoch} (probe Avg. Gap {event.gap['avg']:.3f})")
    return bool(events)
