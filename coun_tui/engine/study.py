"""Studies: a folder that `coun-lab tune` fills (engine/tune.py runs it), read back by --show and
by `coun-lab sweep --from-study`.

    study.toml    the settings (model, forget set, method, budget, seeds, search space, reference):
                  a rerun must give the same ones, so one study never mixes with another's trials
    study.db      Optuna's RDB storage on SQLite (or the database that `--storage URL` names)
    retrain/      the reference Retrain, measured on the validation half (unless --reference)
    trial-NNNN/   each trial's run directory

Every check reads before anything is written: settings that differ from the folder's, a study.db
that is damaged, not Optuna's or another study's (Optuna would add its tables to any SQLite file).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tomllib
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import tomli_w
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from coun_tui.engine import UserError
from coun_tui.engine.files import atomic_write
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.methods import Search, check_hparams, searched
from coun_tui.engine.methods import get as get_method
from coun_tui.engine.records import describe_half, method_label
from coun_tui.engine.runner import RunSpec
from coun_tui.engine.sweep import Sweep

SETTINGS_FILE, DB_FILE, LOCK_FILE = "study.toml", "study.db", ".study.lock"
RETRY_OF = "retry_of"  # user attribute of a trial that reruns one whose run was cut off
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the commands report trials themselves


@dataclass
class StudySettings:
    """What a study is; a rerun into the same folder must give the same."""

    model: str
    method: str
    forget: ForgetSpec
    trials: int
    epochs: int
    cl: bool = False
    seed: int = 0
    half_seed: int = 0
    space: dict[str, Search] = field(default_factory=dict)
    reference: str | None = None  # a Retrain run on the validation half; None: retrain/ in the folder
    storage: str | None = None  # an SQLAlchemy URL; None: study.db in the folder
    dataset: str | None = None

    @property
    def label(self) -> str:
        return method_label(self.method, self.cl)

    def to_dict(self) -> dict[str, Any]:
        forget = {k: v for k, v in self.forget.to_dict().items() if v is not None}  # TOML has no null
        d = {"model": self.model, "method": self.method, "cl": self.cl, "forget": forget,
             "trials": self.trials, "epochs": self.epochs, "seed": self.seed, "half_seed": self.half_seed,
             "space": {k: {"low": s.low, "high": s.high, "log": s.log} for k, s in self.space.items()},
             "reference": self.reference, "storage": self.storage, "dataset": self.dataset}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> StudySettings:
        try:
            return cls(model=d["model"], method=d["method"], cl=bool(d.get("cl", False)),
                       forget=ForgetSpec.from_dict(d["forget"], f"{where} forget"), trials=int(d["trials"]),
                       epochs=int(d["epochs"]), seed=int(d.get("seed", 0)), half_seed=int(d.get("half_seed", 0)),
                       space={k: Search(float(s["low"]), float(s["high"]), bool(s.get("log", False)))
                              for k, s in d.get("space", {}).items()},
                       reference=d.get("reference"), storage=d.get("storage"), dataset=d.get("dataset"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{where} is damaged ({type(exc).__name__}: {exc}); "
                            "restore it, or start the study in another --out") from None


def search_space(method: str, cl: bool, ranges: dict[str, tuple[float, float, bool | None]]) -> dict[str, Search]:
    """The method's declared search space with `ranges` (key -> low, high, log or None: as
    declared) in place of declared ones; each checked against the hyperparameter's valid values."""
    cls = get_method(method)
    space = searched(cls, cl)
    declared = cls.declared()
    for key, (low, high, log) in ranges.items():
        if key not in declared:
            raise UserError(f"--range {key}: {cls.name} has no hyperparameter {key!r}; "
                            f"it searches {', '.join(space) or 'nothing'} (see `coun-lab methods`)")
        was = space.get(key) or declared[key].search
        wanted = Search(low, high, bool(was.log) if log is None and was else bool(log))
        try:
            space[key] = declared[key].check_search(wanted)
        except ValueError as exc:
            raise UserError(f"--range {key}={low:g}:{high:g}: {exc} ({key} is {declared[key].describe()})") from None
    if not space:
        raise UserError(f"{cls.name} has no hyperparameter to search; give one with --range KEY=LOW:HIGH")
    return space


def distributions(settings: StudySettings) -> dict[str, BaseDistribution]:
    declared = get_method(settings.method).declared()
    out: dict[str, BaseDistribution] = {}
    for key, s in settings.space.items():
        if declared[key].kind is int:
            out[key] = IntDistribution(int(s.low), int(s.high), log=s.log)
        else:
            out[key] = FloatDistribution(s.low, s.high, log=s.log)
    return out


def describe_space(space: dict[str, Search]) -> str:
    return ", ".join(f"{key} {s.describe()}" for key, s in space.items())


class Study:
    """A study folder, its settings, and where its trials run (device, data root: not settings)."""

    def __init__(self, folder: str | Path, settings: StudySettings, device: str = "auto",
                 data_root: str | None = None, log: list[str] | None = None):
        self.folder = Path(folder)
        self.settings = settings
        # Where it runs and which trackers its runs log to: not part of the settings.
        self.device, self.data_root, self.log = device, data_root, list(log or [])

    @property
    def reference(self) -> Path:
        return Path(self.settings.reference) if self.settings.reference else self.folder / "retrain"

    @property
    def storage_url(self) -> str:
        return self.settings.storage or f"sqlite:///{(self.folder / DB_FILE).resolve()}"

    def trial_spec(self, params: dict[str, Any]) -> RunSpec:
        s = self.settings
        hp = check_hparams(get_method(s.method), {**params, "epochs": s.epochs}, str)
        return RunSpec(method=s.method, model=s.model, dataset=s.dataset, forget=replace(s.forget, seed=s.seed),
                       cl=s.cl, hparams=hp, seed=s.seed, reference=str(self.reference), test_half="val",
                       half_seed=s.half_seed, device=self.device, data_root=self.data_root,
                       log=list(self.log))

    def retrain_spec(self) -> RunSpec:
        s = self.settings
        return RunSpec(method="retrain", model=s.model, dataset=s.dataset, forget=replace(s.forget, seed=s.seed),
                       seed=s.seed, test_half="val", half_seed=s.half_seed, device=self.device,
                       data_root=self.data_root, log=list(self.log))


def settings_path(folder: Path) -> Path:
    return folder / SETTINGS_FILE


def read_settings(folder: str | Path) -> tuple[StudySettings, str]:
    """A study folder's settings and its Optuna study name; one line if it holds no study."""
    path = settings_path(Path(folder))
    if not path.is_file():
        raise UserError(f"{folder} holds no study ({SETTINGS_FILE} is missing); start one with "
                        "`coun-lab tune --model M --method METHOD ... --out DIR`")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; restore it, or start the study in another --out") from None
    name = data.pop("name", None)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path} names no study; restore it, or start the study in another --out")
    return StudySettings.from_dict(data, str(path)), name


def _differences(old: StudySettings, new: StudySettings) -> str:
    a, b = old.to_dict(), new.to_dict()
    return ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


def check_database(folder: Path, settings: StudySettings, name: str | None) -> None:
    """Refuse, reading only, a study.db that is not SQLite, not Optuna's, or holds other studies:
    Optuna would otherwise add its tables to whatever file sits there."""
    if settings.storage:
        return
    db = folder / DB_FILE
    if not db.exists():
        if name is not None:
            raise UserError(f"{db} is missing but {SETTINGS_FILE} says a study was started; restore it, "
                            "or start the study in another --out")
        return
    try:
        with sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            names = {row[0] for row in con.execute("SELECT study_name FROM studies")} if "studies" in tables else set()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db} is not a readable SQLite database ({exc}); move it away, "
                        "or start the study in another --out") from None
    if "studies" not in tables or "version_info" not in tables:
        raise UserError(f"{db} is an SQLite database but not an Optuna study's; move it away, "
                        "or start the study in another --out")
    if name is None or name not in names:
        raise UserError(f"{db} holds another study ({', '.join(sorted(names)) or 'none'}), not this folder's; "
                        "move it away, or start the study in another --out")


def prepare(folder: str | Path, settings: StudySettings, device: str = "auto",
            data_root: str | None = None, log: list[str] | None = None) -> tuple[Study, str | None]:
    """The study, its Optuna name if it was started before (None: new), every check made before
    anything is written: settings that differ from the folder's, a foreign database, bad settings."""
    folder = Path(folder)
    name = None
    if settings_path(folder).exists():
        old, name = read_settings(folder)
        if diff := _differences(old, settings):
            raise UserError(f"{folder} holds another study ({diff}); rerun with its settings, "
                            "or give another --out")
    elif folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"--out {folder} is not empty and holds no study; give a new folder")
    check_database(folder, settings, name)
    if settings.trials < 1 or settings.epochs < 1:
        raise UserError(f"--trials {settings.trials} --epochs {settings.epochs}: give at least 1 of each")
    return Study(folder, settings, device, data_root, log), name


class StudyLock:
    """One study process per folder: it alone tells trials and retries cut-off ones."""

    def __init__(self, folder: Path):
        self.fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise UserError(f"{folder} is being tuned by another coun-lab tune (pid {holder or '?'}); "
                            "wait for it, or stop it first") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


def open_study(study: Study, name: str | None) -> optuna.Study:
    """Create the study (writing study.toml first) or load it."""
    s = study.settings
    if name is None:
        name = f"{s.label.lower()}-{uuid.uuid4().hex[:8]}"
        study.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(settings_path(study.folder), "w") as fh:
            fh.write(tomli_w.dumps({"name": name, **s.to_dict()}))
    sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=min(10, max(2, s.trials // 3)),
                                         constant_liar=True)  # several trials in flight: no duplicates
    try:
        return optuna.create_study(storage=study.storage_url, study_name=name, direction="minimize",
                                   sampler=sampler, load_if_exists=True)
    except Exception as exc:  # a URL that does not connect, a driver that is missing
        raise UserError(f"cannot open the study's storage {study.storage_url}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def load(folder: str | Path) -> tuple[Study, optuna.Study]:
    """An existing study, read-only checks first (for --show and --from-study)."""
    folder = Path(folder)
    settings, name = read_settings(folder)
    check_database(folder, settings, name)
    study = Study(folder, settings)
    try:
        return study, optuna.load_study(study_name=name, storage=study.storage_url)
    except Exception as exc:
        raise UserError(f"cannot open the study {name} in {study.storage_url}: {type(exc).__name__}") from None


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that spent the budget: finished, pruned, or failed on their own (a diverging lr
    is an outcome); a trial whose run was cut off by a killed study is retried instead."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and t.number not in retried)]


def best(ostudy: optuna.Study) -> FrozenTrial | None:
    """The finished trial of lowest Avg. Gap (None before any has finished)."""
    done = [t for t in ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def show(folder: str | Path) -> list[str]:
    """A study as text: its settings and space, every trial (number, state, params, value), the
    best parameters and each hyperparameter's importance."""
    study, ostudy = load(folder)
    s = study.settings
    trials = ostudy.get_trials(deepcopy=False)
    lines = [f"study {study.folder}: {s.label} on {Path(s.model).name}, forget {s.forget.tag()}, seed {s.seed}; "
             f"{len(counted(trials))} of {s.trials} trials of {s.epochs} epoch(s) finished",
             f"objective: Avg. Gap to Retrain with TA on {describe_half('val', s.half_seed)}",
             f"search space: {describe_space(s.space)}",
             f"{'trial':>5}  {'state':<9} {'Avg. Gap':>9}  params"]
    for t in trials:
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                      if t.intermediate_values else None)
        shown = "" if value is None else f"{value:.3f}" + ("*" if t.state == TrialState.PRUNED else "")
        state = "retried" if t.number in {u.user_attrs.get(RETRY_OF) for u in trials} else t.state.name.lower()
        lines.append(f"{t.number:>5}  {state:<9} {shown:>9}  " + ", ".join(f"{k}={v:.4g}" for k, v in t.params.items()))
    if any(t.state == TrialState.PRUNED for t in trials):
        lines.append("(* pruned: the probe Avg. Gap at the epoch it was stopped)")
    top = best(ostudy)
    lines.append("best: none finished yet" if top is None else
                 f"best: trial {top.number}, Avg. Gap {top.value:.3f}: "
                 + ", ".join(f"{k}={v:.4g}" for k, v in top.params.items()))
    lines.append(importance(ostudy))
    return lines


def importance(ostudy: optuna.Study) -> str:
    complete = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"importance: needs 2 or more finished trials ({len(complete)} so far)"
    try:
        ranked = optuna.importance.get_param_importances(ostudy)
    except (RuntimeError, ValueError) as exc:
        return f"importance: not available ({exc})"
    return "importance: " + ", ".join(f"{k} {v:.2f}" for k, v in ranked.items())


def best_settings(folder: str | Path) -> tuple[Study, FrozenTrial]:
    """A study and its best trial; one line if none has finished."""
    study, ostudy = load(folder)
    top = best(ostudy)
    if top is None:
        raise UserError(f"study {folder} has no finished trial yet; run `coun-lab tune` on it first")
    return study, top


def apply_studies(plan: Sweep, folders: list[str]) -> None:
    """Set a sweep to each study's best parameters (and its epochs), scored on the report half of
    the test split the studies tuned on; the sweep's tables say where each setting came from. A sweep
    given no forget set runs on the studies' own."""
    half_seeds = set()
    given_forgets = bool(plan.forgets)
    for folder in folders:
        study, top = best_settings(folder)
        s = study.settings
        if Path(s.model).resolve() != Path(plan.model).resolve():
            raise UserError(f"study {folder} tuned {s.model}, not the sweep's {plan.model}; "
                            "give studies of the sweep's model")
        key = s.label.lower()  # "ft", or "ft+cl" for the +CL row
        plan.hparams[key] = {**plan.hparams.get(key, {}), **top.params, "epochs": s.epochs}
        if s.method not in {get_method(m).name for m in plan.methods}:
            plan.methods.append(s.method)
        plan.cl_too = plan.cl_too or s.cl
        plan.sources[s.label] = (f"study {folder} (trial {top.number} of {len(top.params)} searched "
                                 f"hyperparameter(s), Avg. Gap {top.value:.3f} on the validation half)")
        half_seeds.add(s.half_seed)
        if not given_forgets and replace(s.forget, seed=0) not in plan.forgets:
            plan.forgets.append(replace(s.forget, seed=0))  # the studies' own (--forget-* flags replace them)
    if len(half_seeds) > 1:
        raise UserError(f"the studies split the test set by different seeds ({sorted(half_seeds)}); "
                        "give studies of one split, so no table reads a half any of them tuned on")
    plan.test_half, plan.half_seed = "report", half_seeds.pop()
