"""Run directories: model.safetensors, split.npz, metrics.json, events.jsonl and run.toml.

metrics.json is written last, so its presence marks a finished run. Every write is atomic.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from coun_tui.engine import UserError, checkpoint
from coun_tui.engine.files import atomic_write
from coun_tui.engine.events import Done, Event, Failed, Cancelled, to_json
from coun_tui.engine.forget import ForgetSpec, Split, make_split
from coun_tui.engine.runner import Prepared, RunSpec, run


def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, allow_nan=True)


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["forget"] = spec.forget.to_dict()
    return _drop_none(d)


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    d = dict(d)
    d["forget"] = ForgetSpec.from_dict(d.get("forget", {}))
    names = {f.name for f in dataclasses.fields(RunSpec)}
    return RunSpec(**{k: v for k, v in d.items() if k in names})


def _drop_none(obj):
    # TOML has no null: leave unset values out (they fall back to their defaults when read).
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def read_spec(run_dir: str | Path) -> RunSpec:
    return spec_from_dict(tomllib.loads((Path(run_dir) / "run.toml").read_text()))


def unlearned_meta(prep: Prepared, done: Done) -> dict[str, Any]:
    return {**{k: v for k, v in prep.meta.items() if k not in ("metrics", "recipe")},
            "forget": {**prep.spec.forget.to_dict(), "n_forget": len(prep.split.forget),
                       "n_retain": len(prep.split.retain)},
            "method": prep.method.name, "cl": prep.use_cl and not prep.method.always_cl,
            "hparams": prep.hparams, "seed": prep.spec.seed, "metrics": done.metrics,
            "parent": Path(prep.spec.model).name if prep.spec.model else None}


def metrics_record(prep: Prepared, done: Done) -> dict[str, Any]:
    m = done.metrics
    return {**{k: m[k] for k in ("RA", "UA", "TA", "MIA")}, "pflops": done.flops / 1e15,
            "seconds": done.seconds, "gap": m.get("gap"), "avg_gap": m.get("avg_gap"),
            "method": prep.method.name, "cl": prep.use_cl and not prep.method.always_cl,
            "forget": {**prep.spec.forget.to_dict(), "n_forget": len(prep.split.forget),
                       "n_retain": len(prep.split.retain)},
            "dataset": prep.dataset.name, "seed": prep.spec.seed, "hparams": prep.hparams}


def record(prep: Prepared, out_dir: str | Path, cancel=None) -> Iterator[Event]:
    """Run and keep everything in out_dir, passing every event on to the caller."""
    out = Path(out_dir)
    if (out / "metrics.json").exists():
        raise UserError(f"{out} already holds a finished run; choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "run.toml") as fh:
        fh.write(tomli_w.dumps(spec_to_dict(prep.spec)).encode())
    prep.split.save(out / "split.npz")
    with open(out / "events.jsonl", "w") as log:
        for event in run(prep, cancel):
            log.write(to_json(event) + "\n")
            log.flush()
            if isinstance(event, Done):
                checkpoint.save(out / "model.safetensors", prep.model, unlearned_meta(prep, event))
                write_json(out / "metrics.json", metrics_record(prep, event))
            elif isinstance(event, (Failed, Cancelled)):
                write_json(out / "status.json", {"status": event.kind, **dataclasses.asdict(event)})
            yield event


def train_checkpoint(prep: Prepared, out_file: str | Path, cancel=None, dtype: str = "float32") -> Iterator[Event]:
    """`coun-lab train`: train a new model and save it with its recipe as a checkpoint."""
    for event in run(prep, cancel):
        if isinstance(event, Done):
            meta = {**prep.meta, "recipe": prep.hparams, "seed": prep.spec.seed,
                    "metrics": {"TA": event.metrics["TA"], "RA": event.metrics["RA"],
                                "seconds": round(event.seconds, 1)}}
            checkpoint.save(out_file, prep.model, meta, dtype=dtype)
        yield event


def load_reference(path: str | Path, split: Split) -> dict[str, float]:
    """Retrain metrics from a run directory or an unlearned checkpoint, for the same split only."""
    p = Path(path)
    if p.is_dir():
        if not (p / "metrics.json").is_file():
            raise UserError(f"{p} is not a finished run (no metrics.json); finish the Retrain run first")
        ref_split = Split.load(p / "split.npz")
        ref = json.loads((p / "metrics.json").read_text())
        method = ref.get("method")
    else:
        meta = checkpoint.read_meta(p)
        if not meta.get("metrics") or not meta.get("forget"):
            raise UserError(f"{p} holds no unlearning metrics; give a Retrain run directory or its model")
        from coun_tui.engine.data import load as load_data

        ds = load_data(meta["dataset"], None, meta.get("subset"), meta.get("subset_seed") or 0)
        ref_split = make_split(ForgetSpec.from_dict(meta["forget"]), ds.train_y.numpy())
        ref, method = meta["metrics"], meta.get("method")
    if not ref_split.same_as(split):
        raise UserError(f"reference {p} was made on another split ({len(ref_split.forget)} forget samples "
                        f"vs {len(split.forget)} here); use a Retrain run of the same forget set and seed")
    if method != "retrain":
        raise UserError(f"reference {p} is a {method} run; the reference must be a Retrain run")
    return {k: float(ref[k]) for k in ("RA", "UA", "TA", "MIA")}


LABELS_FILE = "labels.json"


def read_labels(run_dir: str | Path) -> dict[str, Any]:
    """A run's name and tags as a person gave them (labels.json); {"name": None, "tags": []} if none."""
    try:
        data = json.loads((Path(run_dir) / LABELS_FILE).read_text())
    except (OSError, ValueError):
        data = {}
    name = data.get("name") if isinstance(data, dict) else None
    tags = data.get("tags") if isinstance(data, dict) else None
    return {"name": name if isinstance(name, str) and name else None,
            "tags": [str(t) for t in tags] if isinstance(tags, list) else []}


def write_labels(run_dir: str | Path, name: str | None = None, tags: list[str] | None = None) -> dict[str, Any]:
    """Set a run's name and/or tags (None leaves that one as it is); written atomically. Returns them."""
    labels = read_labels(run_dir)
    if name is not None:
        labels["name"] = name.strip() or None
    if tags is not None:
        labels["tags"] = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
    write_json(Path(run_dir) / LABELS_FILE, labels)
    return labels
