"""Run directories: model.safetensors, split.npz, metrics.json, events.jsonl and run.toml.

metrics.json is written last, so its presence marks a finished run. Every write is atomic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w
from numpy.typing import ArrayLike

from coun_tui.engine import UserError, checkpoint
from coun_tui.engine.events import Done, Embedding, Event, Failed, to_json
from coun_tui.engine.files import append_line, atomic_write, open_append
from coun_tui.engine.forget import ForgetSpec, Split, make_split
from coun_tui.engine.records import LABELS_FILE, METRICS, Scores, read_labels, read_metrics
from coun_tui.engine.reference import REFERENCE_FILE
from coun_tui.engine.runner import CancelFlag, Prepared, RunSpec, run
from coun_tui.engine.schema import parse_data
from coun_tui.engine.trackers import Params, open_feed


def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, allow_nan=True)


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["forget"] = spec.forget.to_dict()
    if not d["log"]:  # a run without trackers keeps the run.toml it always had
        del d["log"]
    out: dict[str, Any] = _drop_none(d)
    return out


def _drop_none(obj: Any) -> Any:
    # TOML has no null: leave unset values out (they fall back to their defaults when read).
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def recorded_forget(prep: Prepared) -> dict[str, Any]:
    return {**prep.spec.forget.to_dict(), "n_forget": len(prep.split.forget), "n_retain": len(prep.split.retain)}


def unlearned_meta(prep: Prepared, done: Done) -> dict[str, Any]:
    forget = recorded_forget(prep)
    if prep.spec.forget.indices_file:  # the checkpoint carries its forget set, not a path to it
        forget["indices"] = prep.split.forget.tolist()
    return {**{k: v for k, v in prep.meta.items() if k not in ("metrics", "recipe")}, "forget": forget,
            "method": prep.method.name, "cl": prep.use_cl and not prep.method.always_cl,
            "hparams": prep.hparams, "seed": prep.spec.seed, "metrics": done.metrics,
            "parent": Path(prep.spec.model).name if prep.spec.model else None}


def metrics_record(prep: Prepared, done: Done) -> dict[str, Any]:
    m = done.metrics
    extra = {k: v for k, v in m.items() if k not in (*METRICS, "gap", "avg_gap")}
    paper = None if done.paper_flops is None else done.paper_flops / 1e15
    epochs = int(prep.hparams["epochs"])  # 0 for a method without a training loop (SSD)
    return {**{k: m[k] for k in METRICS}, "pflops": done.flops / 1e15,
            "pflops_epoch": done.flops / 1e15 / epochs if epochs else None, "pflops_paper": paper,
            "seconds": done.seconds, "gap": m.get("gap"), "avg_gap": m.get("avg_gap"),
            "reference": prep.reference, **extra,
            "method": prep.method.name, "cl": prep.use_cl and not prep.method.always_cl,
            "forget": recorded_forget(prep),
            "dataset": prep.dataset.name, "seed": prep.spec.seed, "hparams": prep.hparams,
            "test_half": prep.spec.test_half, "half_seed": prep.spec.half_seed if prep.spec.test_half else None}


def record(prep: Prepared, out_dir: str | Path, cancel: CancelFlag | None = None) -> Iterator[Event]:
    """Run and keep everything in out_dir, passing every event on to the caller.

    The model and metrics.json are written before the `done` event is appended, so a log never
    says done for a run whose files are missing; a write that fails (a full disk) ends the run
    with one `failed` event instead. Each event is appended as one complete line.
    """
    from coun_tui.engine.jobs import stored_reference

    out = Path(out_dir)
    if (out / "metrics.json").exists():
        raise UserError(f"{out} already holds a finished run; choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    stored = dataclasses.replace(prep.spec, reference=stored_reference(prep.spec.reference, out))
    with atomic_write(out / "run.toml") as fh:
        fh.write(tomli_w.dumps(spec_to_dict(stored)).encode())
    prep.split.save(out / "split.npz")
    # Trackers are fed here, where the run trains: a job logs to them with no client following it.
    trackers = open_feed(prep.spec.log, tracked_params(prep), out)
    try:
        with open_append(out / "events.jsonl", truncate=True) as log:
            for event in run(prep, cancel):
                if isinstance(event, Done):
                    event = _save_results(prep, event, out)
                elif isinstance(event, Embedding) and event.features is not None:
                    with contextlib.suppress(OSError):  # only t-SNE of a reopened run needs it
                        write_features(out, event.features)
                append_line(log, to_json(event))
                trackers(event)
                yield event
                if isinstance(event, Failed):
                    return
    finally:
        trackers.close()


def tracked_params(prep: Prepared) -> Params:
    """What the trackers record of a run's settings: its hyperparameters, method, forget set, ..."""
    spec = prep.spec
    params: Params = {
        "method": prep.method.name, "cl": bool(prep.use_cl and not prep.method.always_cl),
        "dataset": prep.dataset.name, "seed": spec.seed, "forget": spec.forget.describe(prep.dataset.classes),
        "n_forget": len(prep.split.forget), "n_retain": len(prep.split.retain),
        "model": Path(spec.model).name if spec.model else "", "reference": spec.reference or "",
        "device": str(prep.device)}
    for key, value in prep.hparams.items():
        params[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return params


def _save_results(prep: Prepared, done: Done, out: Path) -> Done | Failed:
    """The model, then metrics.json (which marks the run finished); on failure neither stays."""
    try:
        checkpoint.save(out / "model.safetensors", prep.model, unlearned_meta(prep, done))
        if done.reference is not None:  # a Retrain: what later runs compare themselves with
            done.reference.save(out / REFERENCE_FILE)
        write_json(out / "metrics.json", metrics_record(prep, done))
        return done
    except OSError as exc:
        for name in ("metrics.json", "model.safetensors", REFERENCE_FILE):
            with contextlib.suppress(OSError):
                (out / name).unlink()
        return Failed(f"could not save the results in {out}: {exc.strerror or exc}; free some space and rerun")


EMBEDDING_FILE = "embedding.npy"  # the last Embedding's raw features, for t-SNE of a reopened run


def write_features(run_dir: Path, features: ArrayLike) -> None:
    """Keep the latest embedding's features (float16, ~0.5 MB) so t-SNE works on a reopened run."""
    import numpy as np

    with atomic_write(Path(run_dir) / EMBEDDING_FILE) as fh:
        np.save(fh, np.asarray(features, dtype=np.float16))


def train_checkpoint(prep: Prepared, out_file: str | Path, cancel: CancelFlag | None = None,
                     dtype: str = "float32") -> Iterator[Event]:
    """`coun-lab train`: train a new model and save it with its recipe as a checkpoint."""
    for event in run(prep, cancel):
        if isinstance(event, Done):
            meta = {**prep.meta, "recipe": prep.hparams, "seed": prep.spec.seed,
                    "metrics": {"TA": event.metrics["TA"], "RA": event.metrics["RA"],
                                "seconds": round(event.seconds, 1)}}
            checkpoint.save(out_file, prep.model, meta, dtype=dtype)
        yield event


def recipe_of(model: str | Path) -> dict[str, Any]:
    """How a checkpoint made by `coun-lab train` was made, as RunSpec fields (dataset, subset,
    subset_seed, hparams), so that the same recipe can be trained again with another seed: the
    same data (the subset drawn with the original's seed), a new initialisation and batch order."""
    meta = checkpoint.read_meta(model)
    recipe = meta.get("recipe")
    if not isinstance(recipe, dict) or not meta.get("dataset"):
        raise UserError(f"{model} records no training recipe (it was not made by `coun-lab train`); "
                        "give --dataset and the hyperparameters instead")
    subset = meta.get("subset")
    return {"dataset": str(meta["dataset"]), "subset": subset,
            "subset_seed": int(meta.get("subset_seed") or 0) if subset else None, "hparams": dict(recipe),
            "half": meta.get("stored_dtype") == "float16"}


def load_reference(path: str | Path, split: Split) -> dict[str, float]:
    """Retrain metrics from a run directory or an unlearned checkpoint, for the same split only."""
    p = Path(path)
    if p.is_dir():
        if not (p / "metrics.json").is_file():
            raise UserError(f"{p} is not a finished run (no metrics.json); finish the Retrain run first")
        ref_split = Split.load(p / "split.npz")
        ref = read_metrics(p)
        scores, method = ref.scores(), ref.method
    else:
        meta = checkpoint.read_meta(p)
        if not meta.get("metrics") or not meta.get("forget"):
            raise UserError(f"{p} holds no unlearning metrics; give a Retrain run directory or its model")
        from coun_tui.engine.data import load as load_data

        where = f"{p.name} metadata"
        scores = parse_data(Scores, meta["metrics"], f"{where} metrics").scores()
        forget = ForgetSpec.from_dict(meta["forget"], f"{where} forget")
        ds = load_data(meta["dataset"], None, meta.get("subset"), meta.get("subset_seed") or 0)
        ref_split, method = make_split(forget, ds.train_y.numpy()), str(meta.get("method"))
    if not ref_split.same_as(split):
        raise UserError(f"reference {p} was made on another split ({len(ref_split.forget)} forget samples "
                        f"vs {len(split.forget)} here); use a Retrain run of the same forget set and seed")
    if method != "retrain":
        raise UserError(f"reference {p} is a {method} run; the reference must be a Retrain run")
    return scores


def write_labels(run_dir: str | Path, name: str | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    """Set a run's name and/or tags (None leaves that one as it is); written atomically. Returns them."""
    labels = read_labels(run_dir)
    if name is not None:
        labels["name"] = name.strip() or None
    if tags is not None:
        labels["tags"] = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
    write_json(Path(run_dir) / LABELS_FILE, labels)
    return labels

