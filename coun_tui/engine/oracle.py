"""The oracle: how well does a method forget, example by example, against Retrain models?

A population of N Retrains (seeds 0..N-1, the checkpoint's recipe, on the retain set) is the
reference; each method runs N times from the given model (seeds 0..N-1). Two controls are scored
the same way: `retrain-control`, N more Retrains on disjoint seeds (the ceiling a finite
population allows), and `original`, the model before unlearning (N models trained with Retrain's
recipe on the full train split where the checkpoint records its recipe, else the one given model).
Scores are in engine/oracle_scores.py; the table and plots in engine/oracle_report.py.

Layout: OUT/oracle.json (the settings), OUT/<group>/seed-<s>/ (a lab run directory each, launched
as jobs like a sweep's runs: resumable, --jobs, --backend ray), and in every finished member
oracle-margins.npz: its margins on the forget set, computed once from its model.safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from coun_tui.engine import UserError, checkpoint
from coun_tui.engine import data as data_mod
from coun_tui.engine.events import Event
from coun_tui.engine.files import atomic_write
from coun_tui.engine.forget import ForgetSpec, Split, make_split
from coun_tui.engine.methods import check_hparams
from coun_tui.engine.methods import get as get_method
from coun_tui.engine.metrics import accuracy
from coun_tui.engine.oracle_scores import MIN_POPULATION, margins
from coun_tui.engine.records import read_metrics, read_spec
from coun_tui.engine.runner import RunSpec, load_source, resolve_device, test_rows
from coun_tui.engine.sweep import run_plan

if TYPE_CHECKING:
    from coun_tui.engine.backends import Backend
    from coun_tui.engine.runner import CancelFlag

SETTINGS_FILE = "oracle.json"
MARGINS_FILE = "oracle-margins.npz"
REFERENCE, CONTROL, ORIGINAL = "retrain", "retrain-control", "original"
CONTROL_SEED = 100_000  # the control Retrains' seeds start here: disjoint from 0..N-1 for any N
GIVEN_ORIGINAL = "original-given"  # folder of the given model's margins when no population is rebuilt


@dataclass
class Oracle:
    model: str
    methods: list[str]
    forget: ForgetSpec  # its seed is the forget set's draw, the same for every member
    population: int
    out: Path
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # method (or "*") -> overrides
    device: str = "auto"
    data_root: str | None = None
    dataset: str | None = None
    originals: bool = True  # a population of originals, where the checkpoint records its recipe

    def __post_init__(self) -> None:
        if self.population < MIN_POPULATION:
            raise UserError(f"--population {self.population}: too small to score; give at least "
                            f"{MIN_POPULATION} (the competition's scale needs ln(N - 1) > 1)")
        if not self.forget.classes and self.forget.fraction is None:
            raise UserError("an oracle needs --forget-class or --forget-fraction")

    @property
    def method_names(self) -> list[str]:
        names = [get_method(m).name for m in self.methods]  # unknown names fail before anything runs
        return [m for m in dict.fromkeys(names) if m != "retrain"]

    def meta(self) -> dict[str, Any]:
        return checkpoint.read_meta(self.model)

    def rebuilds_original(self) -> bool:
        """Originals can be retrained where the checkpoint says how it was trained, and on what."""
        meta = self.meta()
        return self.originals and isinstance(meta.get("recipe"), dict) and bool(meta.get("dataset"))

    def groups(self) -> list[str]:
        """The populations, in the table's order: the reference, the controls, then the methods."""
        return [REFERENCE, CONTROL, ORIGINAL, *self.method_names]

    def seeds(self, group: str) -> list[int]:
        base = CONTROL_SEED if group == CONTROL else 0
        return list(range(base, base + self.population))

    def members(self, group: str) -> list[Path]:
        if group == ORIGINAL and not self.rebuilds_original():
            return []
        return [self.out / group / f"seed-{s}" for s in self.seeds(group)]

    def runs(self) -> list[tuple[Path, RunSpec]]:
        """Every member's run, hyperparameters checked before anything runs."""
        plan = []
        retrain_hp = check_hparams(get_method("retrain"), self.hparams.get("retrain", {}), str)
        for group in self.groups():
            for run_dir, seed in zip(self.members(group), self.seeds(group)):
                if group == ORIGINAL:
                    spec = self._original_spec(seed)
                else:
                    method = "retrain" if group in (REFERENCE, CONTROL) else group
                    hp = retrain_hp if method == "retrain" else check_hparams(
                        get_method(method), {**self.hparams.get("*", {}), **self.hparams.get(method, {})}, str)
                    spec = RunSpec(method=method, model=self.model, dataset=self.dataset, data_root=self.data_root,
                                   forget=self.forget, hparams=hp, seed=seed, device=self.device)
                plan.append((run_dir, spec))
        return plan

    def _original_spec(self, seed: int) -> RunSpec:
        """An original trained again: Retrain's recipe (the checkpoint's, with any retrain.KEY
        override) on the full train split, its subset drawn as the checkpoint's was."""
        meta = self.meta()
        retrain = get_method("retrain")
        recipe = {k: v for k, v in meta["recipe"].items() if k in retrain.all_defaults()}
        hp = check_hparams(retrain, {**recipe, **self.hparams.get("retrain", {})}, str)
        subset = meta.get("subset")
        return RunSpec(method="retrain", dataset=meta["dataset"], data_root=self.data_root, subset=subset,
                       subset_seed=(meta.get("subset_seed") or 0) if subset else None, hparams=hp, seed=seed,
                       device=self.device)

    def settings(self) -> dict[str, Any]:
        return {"model": str(Path(self.model).resolve()), "methods": self.method_names,
                "forget": self.forget.to_dict(), "population": self.population, "hparams": self.hparams,
                "device": self.device, "data_root": self.data_root, "dataset": self.dataset,
                "originals": self.originals}

    @classmethod
    def load(cls, out: Path) -> Oracle:
        """The oracle saved in OUT/oracle.json (by a run of `coun-lab oracle`)."""
        path = Path(out) / SETTINGS_FILE
        if not path.is_file():
            raise UserError(f"{out} holds no oracle ({SETTINGS_FILE} is missing); run `coun-lab oracle "
                            f"--model M --methods ... --out {out}` first")
        try:
            d = json.loads(path.read_text())
            return cls(model=d["model"], methods=list(d["methods"]), forget=ForgetSpec.from_dict(d["forget"]),
                       population=int(d["population"]), out=Path(out), hparams=dict(d["hparams"]),
                       device=d["device"], data_root=d["data_root"], dataset=d["dataset"],
                       originals=bool(d["originals"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc}); run the oracle again") from None

    def check_settings(self) -> None:
        """A folder holding another model's or forget set's oracle is refused; one holding more
        methods keeps them (its earlier rows stay in the table)."""
        if (self.out / SETTINGS_FILE).is_file():
            old = Oracle.load(self.out)
            for key in ("model", "forget"):
                if old.settings()[key] != self.settings()[key]:
                    raise UserError(f"{self.out} holds an oracle of another {key} ({old.settings()[key]}); "
                                    "give another --out")
            self.methods = list(dict.fromkeys([*old.method_names, *self.method_names]))

    def save_settings(self) -> None:
        """OUT/oracle.json, what `--show` reads."""
        path = self.out / SETTINGS_FILE
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            json.dump(self.settings(), fh, indent=2)


@dataclass
class Member:
    """One finished member's forget-set margins and accuracies (RA on the retain set, TA)."""

    path: Path
    margins: np.ndarray
    ra: float
    ta: float


def damaged_reason(run_dir: Path) -> str | None:
    """Why a finished member cannot be used (its records or model are damaged), else None."""
    try:
        read_metrics(run_dir)
        read_spec(run_dir)
    except UserError as exc:
        return str(exc)
    if not (run_dir / "model.safetensors").is_file():
        return f"{run_dir / 'model.safetensors'} is missing"
    return None


def execute(oracle: Oracle, cancel: CancelFlag | None = None, on_start: Callable[[int, int, Path], None] | None = None,
            jobs: int = 1, backend: Backend | None = None,
            on_damaged: Callable[[Path, str], None] | None = None) -> Iterator[tuple[Path, Event]]:
    """Run the members not finished yet, as jobs (a sweep's machinery: resumable, --jobs, Ray).

    A finished member made with other settings is refused before anything runs; a damaged one is
    reported through `on_damaged`, left as it is and out of the plan (the table counts it)."""
    plan = oracle.runs()
    oracle.check_settings()
    kept = []
    for run_dir, spec in plan:
        reason = damaged_reason(run_dir) if (run_dir / "metrics.json").is_file() else None
        if reason is not None:
            if on_damaged:
                on_damaged(run_dir, reason)
            continue
        kept.append((run_dir, spec))
    yield from run_plan(kept, cancel, on_start, jobs, backend=backend, on_checked=oracle.save_settings)


def _margins_of(model_path: Path, forget_idx: np.ndarray, data: data_mod.DeviceData,
                with_accuracy: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, float, float]:
    """One fp32 forward pass of a saved model over the forget set (and, for an original, RA and TA)."""
    model, _ = checkpoint.load(model_path, data.train_x.device)
    model.eval()

    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i:i + 256]).float().cpu() for i in range(0, len(x), 256)])

    idx = torch.from_numpy(forget_idx).to(data.train_x.device)
    m = margins(logits(data.train_x[idx]).double().numpy(), data.train_y[idx].cpu().numpy())
    ra = ta = float("nan")
    if with_accuracy is not None:
        retain, test = (torch.from_numpy(a).to(data.train_x.device) for a in with_accuracy)
        ra = accuracy(logits(data.train_x[retain]), data.train_y[retain])
        ta = accuracy(logits(data.test_x[test]), data.test_y[test])
    return m, ra, ta


class Outputs:
    """Members' margins on the forget set, each cached beside its model (oracle-margins.npz, keyed
    by the forget indices and the model file's size and time) so a rescore runs no model again."""

    def __init__(self, oracle: Oracle, device: str = "cpu"):
        self.oracle, self.device = oracle, device
        self._data: tuple[data_mod.DeviceData, Split] | None = None

    def data(self) -> tuple[data_mod.DeviceData, Split]:
        """(the device data, the split) of the given model's dataset, loaded once."""
        if self._data is None:
            spec = RunSpec(model=self.oracle.model, dataset=self.oracle.dataset, data_root=self.oracle.data_root)
            _, meta, dataset = load_source(spec)
            split = make_split(self.oracle.forget, dataset.train_y.numpy())
            self._data = (data_mod.prepare(dataset, meta["mean"], meta["std"], resolve_device(self.device)), split)
        return self._data

    def member(self, run_dir: Path, model_path: Path | None = None) -> Member:
        """A member's outputs, from its cache when that is current; RA and TA from its metrics.json,
        or measured here for an original (its run's RA covers the whole train split)."""
        model_path = model_path or run_dir / "model.safetensors"
        stamp = np.array([model_path.stat().st_size, model_path.stat().st_mtime_ns], dtype=np.int64)
        cache = run_dir / MARGINS_FILE
        forget_idx = self._forget_indices()
        if cache.is_file():
            try:
                with np.load(cache) as z:
                    if np.array_equal(z["forget"], forget_idx) and np.array_equal(z["stamp"], stamp):
                        return Member(run_dir, z["margins"], float(z["ra"]), float(z["ta"]))
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is recomputed
        data, split = self.data()
        is_original = run_dir.parent.name == ORIGINAL or run_dir.name == GIVEN_ORIGINAL
        accuracy_rows = None
        if is_original:
            accuracy_rows = (split.retain, test_rows(data.test_y.cpu(), self.oracle.forget))
        margins, ra, ta = _margins_of(model_path, split.forget, data, accuracy_rows)
        if not is_original:
            record = read_metrics(run_dir)
            ra, ta = record.RA, record.TA
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache) as fh:
            np.savez(fh, forget=forget_idx, stamp=stamp, margins=margins, ra=ra, ta=ta)
        return Member(run_dir, margins, ra, ta)

    def _forget_indices(self) -> np.ndarray:
        if not hasattr(self, "_forget"):
            meta = self.oracle.meta()
            name = self.oracle.dataset or meta["dataset"]
            labels = data_mod.load(name, self.oracle.data_root, meta.get("subset"),
                                   meta.get("subset_seed") or 0).train_y.numpy()
            self._forget: np.ndarray = make_split(self.oracle.forget, labels).forget
        return self._forget


@dataclass
class Population:
    """A group's usable members (seed order) and the ones left out, with why."""

    group: str
    members: list[Member]
    damaged: list[tuple[Path, str]]
    missing: int  # planned members not finished (still running, failed, or never started)
    note: str = ""


def collect(oracle: Oracle, outputs: Outputs) -> list[Population]:
    """Every group's finished, undamaged members with their outputs."""
    out = []
    for group in oracle.groups():
        members, damaged, missing = [], [], 0
        planned = oracle.members(group)
        note = "models trained again with Retrain's recipe on the full train split" if group == ORIGINAL else ""
        if group == ORIGINAL and not planned:
            given = outputs.member(oracle.out / GIVEN_ORIGINAL, Path(oracle.model))
            members = [given] * oracle.population
            note = "the one given model (its recipe is not recorded, or --single-original)"
        for run_dir in planned:
            if not (run_dir / "metrics.json").is_file():
                missing += 1
                continue
            reason = damaged_reason(run_dir)
            if reason is None:
                try:
                    members.append(outputs.member(run_dir))
                    continue
                except (UserError, OSError) as exc:
                    reason = str(exc)
            damaged.append((run_dir, reason))
        out.append(Population(group, members, damaged, missing, note))
    return out
