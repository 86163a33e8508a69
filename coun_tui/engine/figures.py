"""The poster's figures as data, from sweep folders (the `out` of an experiment file): the
representation panels of Figures 1 and 3, Table 1 and Figure 4's +CL gains by forget ratio.

coun_tui/figure_plots.py draws them; `coun-lab figure` runs both. Every figure reads only finished
runs and refuses, in one line, a folder that lacks what it needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from coun_tui.engine import UserError
from coun_tui.engine.forget import Split
from coun_tui.engine.records import read_spec
from coun_tui.engine.reference import KNN, pick
from coun_tui.engine.report import load_run

EMBEDDING_RUNS = ("retrain", "coun", "ft", "neggrad+")  # Retrain first: the others are measured against it
TABLE1_COLUMNS = ("RA", "UA", "TA", "MIA", "avg_gap", "pflops")  # the poster's Table 1, in its order
TABLE1_FORGET = "random-10pct"
MODEL_FILE = "model.safetensors"
RATIO = re.compile(r"random-(\d+(?:\.\d+)?)pct$")


@dataclass
class Panel:
    """One model's view of the chosen samples: t-SNE positions (retain rows, then forget rows)."""

    run: str
    xy: np.ndarray
    forget_nearest: np.ndarray  # per forget sample: the class of its nearest retain-class centroid
    same_as_retrain: float  # % of forget samples whose nearest centroid's class is Retrain's
    knn_forget: float | None  # the run's 5-NN probe on D_u (its metrics.json), and Retrain's
    knn_forget_retrain: float | None


@dataclass
class Embedding:
    """Figures 1 and 3 for one forget set: every model on the same retain and forget samples."""

    title: str
    classes: list[str]
    forgotten: list[int]  # the forgotten classes (empty for random forgetting)
    retain_y: np.ndarray
    forget_y: np.ndarray
    panels: list[Panel]


def seed_folders(folder: Path, seed: int) -> list[Path]:
    """The folders holding one seed's runs: `folder` itself (OUT/<forget>/seed-<s>), or in a sweep
    folder each forget set's seed-<seed>."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such directory; give a sweep folder (an experiment file's `out`)")
    if (folder / "retrain").is_dir() or folder.name.startswith("seed-"):
        return [folder]
    found = sorted(p for p in folder.glob(f"*/seed-{seed}") if p.is_dir())
    if not found:
        raise UserError(f"{folder}: no runs of seed {seed} (expected {folder}/<forget>/seed-{seed}/retrain); "
                        "run its sweep first, or give another --seed")
    return found


def finished_models(folder: Path, runs: tuple[str, ...]) -> list[Path]:
    """The run directories of `runs` in one seed's folder, each finished with its model file."""
    if not runs or runs[0] != "retrain":
        raise UserError("--runs must start with retrain: every panel is compared with Retrain's")
    for run in runs:
        if not (folder / run / "metrics.json").is_file():
            raise UserError(f"{folder}: no finished {run!r} run; the embedding needs {', '.join(runs)} "
                            "there (--runs picks others): run the sweep first")
        if not (folder / run / MODEL_FILE).is_file():
            raise UserError(f"{folder / run}: no {MODEL_FILE} (model files are not committed); rerun its "
                            "sweep here to make it")
    return [folder / run for run in runs]


def embedding(folder: Path, runs: tuple[str, ...] = EMBEDDING_RUNS, n_retain: int = 500, n_forget: int = 100,
              seed: int = 0) -> Embedding:
    """Penultimate features of each run's model on the same seeded retain and forget samples,
    t-SNE per model (fixed seed), and how each places the forget samples: the class of the nearest
    retain-class centroid (cosine), compared with Retrain's."""
    run_dirs = finished_models(folder, runs)
    split = Split.load(run_dirs[0] / "split.npz")
    for run_dir in run_dirs[1:]:
        if not split.same_as(Split.load(run_dir / "split.npz")):
            raise UserError(f"{run_dir} forgot other samples than {run_dirs[0]}; give runs of one forget set")
    rng = np.random.default_rng(seed)
    retain_idx, forget_idx = pick(rng, split.retain, n_retain), pick(rng, split.forget, n_forget)
    feats, dataset = [], None
    for run_dir in run_dirs:
        z, dataset = _features(run_dir, np.concatenate([retain_idx, forget_idx]))
        feats.append(z)
    assert dataset is not None  # runs is not empty
    labels = dataset.train_y.numpy()
    retain_y, forget_y = labels[retain_idx], labels[forget_idx]
    nearest = [nearest_centroid(z[:len(retain_idx)], retain_y, z[len(retain_idx):]) for z in feats]
    panels = []
    for run_dir, z, near in zip(run_dirs, feats, nearest):
        m = load_run(run_dir)
        knn_retrain = m.get(KNN[1]) if run_dir != run_dirs[0] else m.get(KNN[0])
        panels.append(Panel(run_dir.name, tsne(z, seed), near, _share(near, nearest[0]), m.get(KNN[0]), knn_retrain))
    forget = read_spec(run_dirs[0]).forget
    return Embedding(f"{folder.parent.name}, {folder.name}", list(dataset.classes), list(forget.classes),
                     retain_y, forget_y, panels)


def _share(a: np.ndarray, b: np.ndarray) -> float:
    return 100.0 * float((a == b).mean()) if len(a) else float("nan")


def _features(run_dir: Path, rows: np.ndarray) -> tuple[np.ndarray, Any]:
    """A run's model's penultimate features of train rows, with the model's dataset."""
    from coun_tui.engine import data as data_mod
    from coun_tui.engine import metrics
    from coun_tui.engine.runner import load_source

    spec = replace(read_spec(run_dir), model=str(run_dir / MODEL_FILE), dataset=None)
    model, meta, dataset = load_source(spec)
    assert model is not None  # a model file was given
    picked = replace(dataset, train_x=dataset.train_x[rows], train_y=dataset.train_y[rows])
    data = data_mod.prepare(picked, meta["mean"], meta["std"], "cpu")
    _, z = metrics.predict(model, data.train_x, want_features=True)
    return z.numpy(), dataset


def nearest_centroid(retain: np.ndarray, retain_y: np.ndarray, forget: np.ndarray) -> np.ndarray:
    """The class of each forget feature's nearest retain-class centroid, by cosine as the k-NN
    probe measures (the mean of each class's unit-length features)."""
    def unit(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return out

    if not len(forget):
        return np.empty(0, np.int64)
    classes = np.unique(retain_y)
    centroids = unit(np.stack([unit(retain)[retain_y == c].mean(0) for c in classes]))
    nearest: np.ndarray = classes[(unit(forget) @ centroids.T).argmax(1)]
    return nearest


def tsne(features: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(features)
    xy: np.ndarray = TSNE(n_components=2, init="pca", random_state=seed,
                          perplexity=min(30.0, max(2.0, (n - 1) / 3))).fit_transform(features)
    return xy


def read_tables(folder: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """A sweep's table.json: forget tag -> row name -> row (engine/sweep.py writes it)."""
    path = folder / "table.json"
    try:
        tables: dict[str, dict[str, dict[str, Any]]] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no sweep table here; give a sweep folder (an experiment file's `out`) "
                        "whose sweep has finished runs") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}); rerun its sweep to rewrite it") from None
    if not isinstance(tables, dict) or not all(isinstance(rows, dict) for rows in tables.values()):
        raise UserError(f"{path} is not a sweep table; rerun its sweep to rewrite it")
    return tables


def table1(folder: Path, forget: str = TABLE1_FORGET) -> list[dict[str, Any]]:
    """The poster's Table 1 rows: Retrain, the baselines, CoUn last; no +CL rows."""
    tables = read_tables(folder)
    if forget not in tables:
        raise UserError(f"{folder}: no finished runs on {forget} (it has {', '.join(tables) or 'none'}); "
                        "pick one with --forget")
    rows = tables[forget]
    if "retrain" not in rows:
        raise UserError(f"{folder}: no finished retrain run on {forget}; Table 1 measures every row against it")
    plain = [r for name, r in rows.items() if not name.endswith("+CL") and name not in ("retrain", "coun")]
    return [rows["retrain"], *plain, *([rows["coun"]] if "coun" in rows else [])]


@dataclass(frozen=True)
class Gain:
    """Figure 4: a baseline's Avg. Gap without and with CoUn's CL term, at one forget ratio."""

    method: str
    ratio: float  # % of the training set forgotten at random
    gap: float
    gap_cl: float
    n: int  # seeds behind both

    @property
    def improvement(self) -> float:
        return 100.0 * (self.gap - self.gap_cl) / self.gap


def cl_gains(folders: list[Path]) -> list[Gain]:
    """Every baseline whose +CL row sits beside it, under random forgetting, over the same number
    of seeds; sorted by ratio. With several folders, each method is named with its folder's name
    (two sweeps may hold the same ratio, e.g. on two datasets)."""
    gains: dict[tuple[str, float], Gain] = {}
    for folder in folders:
        prefix = "/".join(folder.parts[-2:]) + "/" if len(folders) > 1 else ""
        for tag, rows in read_tables(folder).items():
            if not (match := RATIO.match(tag)):
                continue
            for name, row in rows.items():
                base = rows.get(name.removesuffix("+CL")) if name.endswith("+CL") else None
                if base is None or not base.get("avg_gap") or row.get("avg_gap") is None:
                    continue
                if base.get("n") != row.get("n"):
                    continue  # an unfinished sweep: never one seed's +CL against three seeds' baseline
                gain = Gain(prefix + base["method"], float(match.group(1)), base["avg_gap"], row["avg_gap"],
                            int(row["n"]))
                gains.setdefault((gain.method, gain.ratio), gain)
    if not gains:
        names = ", ".join(map(str, folders))
        raise UserError(f"{names}: no baseline with its +CL run finished under random forgetting; Figure 4 "
                        "needs a sweep with cl_too = true (e.g. experiments/digits-ratios.toml)")
    return sorted(gains.values(), key=lambda g: (g.ratio, g.method))
