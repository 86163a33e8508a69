"""A finished run as a model folder in the Hugging Face Hub layout (`coun-lab export RUN DIR`):

    model.safetensors   the run's checkpoint as the lab wrote it (torchvision's tensor names, and
                        its metadata, so `coun-lab eval` measures it on its own forget set)
    config.json         architecture, stem, channels, classes, input normalisation, what it forgot
    README.md           the model card: YAML front matter (tags, model-index with the metrics), then
                        the source model, the forget set, the method and its hyperparameters,
                        RA/UA/TA/MIA with their gaps to Retrain, the cost, and how to load it

Nothing is uploaded. The folder is built beside DIR and renamed into place, so a refused or
failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from coun_tui import __version__
from coun_tui.engine import UserError, checkpoint
from coun_tui.engine.records import METRICS, read_metrics, read_spec

MODEL_FILE = "model.safetensors"
METRIC_NAMES = {"RA": "RA (retain accuracy, %)", "UA": "UA (100 - forget accuracy, %)",
                "TA": "TA (test accuracy, %)", "MIA": "MIA efficacy (%)"}


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the folder for the finished run in `run_dir` to `out` (a new or empty folder)."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / MODEL_FILE).is_file():
        raise UserError(f"{run_dir} is not a finished run (no metrics.json and model.safetensors); "
                        "export a run whose state is done (see `coun-lab runs`)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; give a new folder to export to")
    metrics = read_metrics(run_dir).as_dict()  # a damaged record is one line (RecordError)
    spec = read_spec(run_dir)
    meta = checkpoint.read_meta(run_dir / MODEL_FILE)
    config = model_config(meta, metrics)
    card = model_card(out.name, meta, metrics, spec.model, spec.reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        shutil.copyfile(run_dir / MODEL_FILE, building / MODEL_FILE)
        (building / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (building / "README.md").write_text(card)
        os.chmod(building, 0o755)  # mkdtemp makes it private; this is an ordinary folder
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out


def model_config(meta: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """config.json: what a loader needs (architecture, stem, channels, classes, normalisation) and
    what the model forgot."""
    classes = [str(c) for c in meta.get("classes") or range(int(meta["num_classes"]))]
    return {"architecture": "resnet18", "library": "torchvision", "stem": meta["stem"],
            "in_channels": meta["in_channels"], "num_classes": meta["num_classes"], "classes": classes,
            "id2label": {str(i): name for i, name in enumerate(classes)},
            "label2id": {name: i for i, name in enumerate(classes)},
            "mean": meta.get("mean"), "std": meta.get("std"), "normalisation": meta.get("normalisation"),
            "input": "images scaled to [0, 1], then normalised with mean and std per channel",
            "dataset": meta.get("dataset"), "subset": meta.get("subset"),
            "unlearning": {"method": metrics.get("method"), "cl": bool(metrics.get("cl")),
                           "forget": metrics.get("forget"), "seed": metrics.get("seed")},
            "coun_lab_version": __version__}


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.2f}"


def _yaml_value(value: Any) -> str:
    return json.dumps(value)  # a JSON scalar is a YAML scalar


def front_matter(name: str, meta: dict[str, Any], metrics: dict[str, Any], forgot: str) -> str:
    """The card's YAML header: the Hub's tags and a model-index holding the metrics."""
    method = str(metrics.get("method"))
    dataset = str(meta.get("dataset") or "unknown")
    lines = ["---", "library_name: pytorch", "pipeline_tag: image-classification", "tags:"]
    lines += [f"- {_yaml_value(tag)}" for tag in ("image-classification", "machine-unlearning", "resnet18",
                                                   "coun-lab", method)]
    lines += ["datasets:", f"- {_yaml_value(dataset)}", "model-index:", f"- name: {_yaml_value(name)}",
              "  results:", "  - task:", "      type: image-classification",
              f"      name: {_yaml_value(f'Machine unlearning ({forgot})')}", "    dataset:",
              f"      name: {_yaml_value(dataset)}", f"      type: {_yaml_value(dataset)}", "    metrics:"]
    gaps = metrics.get("gap") or {}
    entries = [(METRIC_NAMES[k], k.lower(), metrics.get(k)) for k in METRICS]
    entries += [(f"{k} gap to Retrain", f"gap_{k.lower()}", gaps.get(k)) for k in METRICS]
    entries.append(("Avg. Gap to Retrain", "avg_gap", metrics.get("avg_gap")))
    for label, kind, value in entries:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            lines += [f"    - type: {kind}", f"      name: {_yaml_value(label)}",
                      f"      value: {round(float(value), 4)}"]
    return "\n".join(lines + ["---", ""])


def model_card(name: str, meta: dict[str, Any], metrics: dict[str, Any], source: str | None,
               reference: str | None) -> str:
    """README.md: the front matter, then what the model is, what it forgot and how well."""
    forget = metrics.get("forget") or {}
    forgot = _forgot(forget, meta)
    method = str(metrics.get("method")) + ("+CL" if metrics.get("cl") else "")
    gaps = metrics.get("gap") or {}
    rows = [f"| {k} | {_number(metrics.get(k))} | {_number(gaps.get(k)) if gaps else '-'} |" for k in METRICS]
    hparams = metrics.get("hparams") or {}
    cost = [f"{_number((metrics.get('pflops') or 0) * 1e3)} TFLOPs measured on the training steps"]
    if metrics.get("pflops_paper"):
        cost.append(f"{_number(metrics['pflops_paper'] * 1e3)} TFLOPs by the CoUn paper's count")
    if metrics.get("seconds") is not None:
        cost.append(f"{float(metrics['seconds']):.1f} s of training")
    parts = [
        front_matter(name, meta, metrics, forgot),
        f"# {name}\n",
        f"A ResNet-18 ({meta['stem']} stem, {meta['in_channels']} input channel(s), {meta['num_classes']} classes) "
        f"trained on **{meta.get('dataset')}** that was made to forget **{forgot}** with **{method}**, "
        f"with coun-lab {__version__}.\n",
        "## Source model\n",
        f"- checkpoint: `{Path(source).name if source else meta.get('parent') or 'unknown'}`",
        f"- dataset: {meta.get('dataset')}" + (f" (subset of {meta['subset']})" if meta.get("subset") else ""),
        f"- classes: {', '.join(str(c) for c in meta.get('classes') or [])}",
        f"- input normalisation: mean {meta.get('mean')}, std {meta.get('std')}\n",
        "## What was forgotten\n",
        f"{forgot}: {forget.get('n_forget', '?')} training samples forgotten, {forget.get('n_retain', '?')} "
        f"retained (seed {forget.get('seed', 0)}).\n",
        "## Method\n",
        f"{method}, seed {metrics.get('seed')}, with these hyperparameters:\n",
        "| hyperparameter | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in hparams.items()], "",
        "## Metrics\n",
        "On the full sets, in percent. Gap: |metric - Retrain's| against "
        + (f"the Retrain run `{Path(reference).name}` of the same forget set" if reference and gaps else
           "a Retrain of the same forget set (none was given: no gaps)") + ".\n",
        "| metric | value | gap to Retrain |", "|---|---|---|", *rows,
        f"| Avg. Gap | - | {_number(metrics.get('avg_gap'))} |", "",
        "RA: accuracy on the retained training samples; UA: 100 - accuracy on the forgotten ones; TA: test "
        "accuracy (for class forgetting, on the retained classes); MIA: the % of forgotten samples a "
        "membership-inference attack calls non-members.\n",
        "## Cost\n", *[f"- {line}" for line in cost], "",
        "## How to use\n", load_snippet(meta), "",
        "Or with coun-lab: `coun-lab eval --model model.safetensors` measures it again on its recorded forget "
        "set (the dataset must be at hand).\n",
        "## Upload\n",
        "Nothing left this machine. To publish the folder on the Hugging Face Hub, run this inside it "
        "(`huggingface-cli login` first):\n",
        "```bash", f"huggingface-cli upload YOUR-NAME/{name} . .", "```", "",
    ]
    return "\n".join(parts)


def _forgot(forget: dict[str, Any], meta: dict[str, Any]) -> str:
    classes = meta.get("classes") or []
    if forget.get("classes"):
        names = [classes[c] if c < len(classes) else str(c) for c in forget["classes"]]
        return "class " + ", ".join(names)
    if forget.get("fraction") is not None:
        return f"a random {float(forget['fraction']):.0%} of the training set"
    return "a given set of training samples"


def load_snippet(meta: dict[str, Any]) -> str:
    """Plain torchvision code that loads the folder's model (no coun-lab needed)."""
    kernel, stride, padding = (3, 1, 1) if meta["stem"] == "cifar" else (7, 2, 3)
    lines = ["```python", "import json", "", "import torch", "import torchvision",
             "from safetensors.torch import load_file", "",
             'config = json.load(open("config.json"))',
             'model = torchvision.models.resnet18(num_classes=config["num_classes"])']
    if meta["stem"] == "cifar" or int(meta["in_channels"]) != 3:
        lines.append(f'model.conv1 = torch.nn.Conv2d(config["in_channels"], 64, kernel_size={kernel}, '
                     f'stride={stride}, padding={padding}, bias=False)')
    if meta["stem"] == "cifar":
        lines.append("model.maxpool = torch.nn.Identity()")
    lines += ['model.load_state_dict(load_file("model.safetensors"))', "model.eval()",
              "# input: a batch of images in [0, 1], shape (N, channels, height, width)",
              'normalize = torchvision.transforms.Normalize(config["mean"], config["std"])',
              "# predicted = model(normalize(images)).argmax(1)", "```"]
    return "\n".join(lines)
