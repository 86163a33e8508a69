"""The GPU path in one call (see scripts/device_check.sh): every step a CUDA machine should prove,
recorded as JSON plus a short README.

Steps (each timed; a failing one is recorded and makes the exit code 1):
  bench       `coun-lab bench` on the device (fp32, bf16, channels_last; inference)
  digits      `coun-lab sweep`: every method (and +CL), 1 epoch, class 3, on the shipped digits model
  fashion     the same on the shipped Fashion-MNIST model (needs its data: --fashion-root)
  coun-45k    one CoUn epoch over 45,000 retain images of 3x32x32 (random data, CIFAR-10's shape
              and augmentation), in-process, with its wall time
  share       four digits FT jobs with `coun-lab runs limit DEVICE 4` against the same four at limit 1
--dry-run does every step on the CPU, tiny: a digits model trained here on a small subset, a
Fashion-MNIST-shaped IDX set of random images, 450 images for the 45k epoch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def coun_lab(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `coun-lab ARGS` as a user would (a fresh process); exit code and output."""
    proc = subprocess.run([sys.executable, "-m", "coun_tui", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def step(record: dict[str, Any], name: str, fn: Any, *args: Any) -> None:
    """Run one step; its figures (or its error) and wall time go into record["steps"][name]."""
    start = time.perf_counter()
    try:
        result = fn(*args)
        entry = {"ok": bool(result.pop("ok", True)), **result}
    except Exception as exc:  # noqa: BLE001 - a step's failure is a finding, recorded; the others still run
        entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    entry["seconds"] = round(time.perf_counter() - start, 2)
    record["steps"][name] = entry
    print(f"[{name}] {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s", flush=True)


def bench(device: str, dry: bool) -> dict[str, Any]:
    args = ["bench", "--device", device] + (["--steps", "1", "--batch-size", "8", "--image-size", "8"] if dry else
                                            ["--steps", "20", "--batch-size", "256", "--image-size", "32"])
    code, out = coun_lab(*args)
    return {"ok": code == 0, "output": out.strip().splitlines()[-16:]}


def sweep(model: Path, device: str, out: Path, forget: str, methods: str, extra: list[str]) -> dict[str, Any]:
    """The methods (and each +CL), 1 epoch, end to end as jobs; the metrics each run wrote."""
    code, text = coun_lab("sweep", "--model", str(model), "--methods", methods, "--out", str(out), "--cl-too",
                          "--forget-class", forget, "--set", "epochs=1", "--device", device, *extra)
    runs = {}
    for metrics_file in sorted(out.rglob("metrics.json")):
        data = json.loads(metrics_file.read_text())
        scores = {k: data.get(k) for k in ("RA", "UA", "TA", "MIA")}
        runs[metrics_file.parent.name] = {**scores, "seconds": data.get("seconds"), "device": data.get("device")}
    complete = all(isinstance(r[k], (int, float)) for r in runs.values() for k in ("RA", "UA", "TA", "MIA"))
    return {"ok": code == 0 and bool(runs) and complete, "runs": runs, "output": text.strip().splitlines()[-5:]}


def coun_epoch(device: str, retain: int, n_test: int, probe_size: int) -> dict[str, Any]:
    """One CoUn epoch over `retain` random 3x32x32 images (10% more are the forget set)."""
    import torch

    from coun_tui.engine import data as data_mod
    from coun_tui.engine import model as model_mod
    from coun_tui.engine.events import Done, Failed, Started, Step
    from coun_tui.engine.forget import ForgetSpec, make_split
    from coun_tui.engine.methods import get
    from coun_tui.engine.runner import Prepared, RunSpec, merged_hparams, resolve_device, run

    gen = torch.Generator().manual_seed(0)
    n = retain * 10 // 9
    dataset = data_mod.Dataset("cifar10", torch.rand(n, 3, 32, 32, generator=gen),
                               torch.randint(0, 10, (n,), generator=gen), torch.rand(n_test, 3, 32, 32, generator=gen),
                               torch.randint(0, 10, (n_test,), generator=gen), [str(i) for i in range(10)])
    spec = RunSpec(method="coun", device=device, forget=ForgetSpec(fraction=0.1), probe_size=probe_size)
    dev = resolve_device(device)
    method = get("coun")
    hparams = merged_hparams(method, {}, {"epochs": 1})
    meta = {"num_classes": 10, "in_channels": 3, "stem": "cifar", "mean": [0.5] * 3, "std": [0.29] * 3}
    split = make_split(spec.forget, dataset.train_y.numpy())
    prep = Prepared(spec, model_mod.build(10, 3, "cifar").to(dev), meta, dataset, split, method(hparams), hparams, dev)
    start = time.perf_counter()
    first = last = None
    for event in run(prep):
        if isinstance(event, Started):
            started = time.perf_counter() - start
        elif isinstance(event, Step):
            first = first or event
            last = event
        elif isinstance(event, Failed):
            return {"ok": False, "error": event.reason}
        elif isinstance(event, Done):
            assert first is not None and last is not None
            per_step = (last.seconds - first.seconds) / max(1, last.step - first.step)
            return {"data": f"random 3x32x32 images, {len(split.retain)} retain + {len(split.forget)} forget",
                    "retain_images": len(split.retain), "steps": last.step,
                    "epoch_seconds": round(last.seconds - first.seconds + per_step, 3),
                    "to_first_step_seconds": round(first.seconds, 3), "data_to_device_seconds": round(started, 3),
                    "wall_seconds_with_evaluation": round(time.perf_counter() - start, 3),
                    "images_per_second": round((last.images - first.images) / max(1e-9, last.seconds - first.seconds))}
    return {"ok": False, "error": "the run ended without a verdict"}


def share(model: Path, device: str, out: Path, epochs: int) -> dict[str, Any]:
    """Four FT jobs at `coun-lab runs limit DEVICE 4` against the same four at limit 1 (in a
    private queue folder, so the machine's own limits stay as they are)."""
    from coun_tui.engine import jobs
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.runner import RunSpec, check

    os.environ["COUN_LAB_QUEUES"] = str(out / "queues")
    queue = check(RunSpec(method="ft", model=str(model), forget=ForgetSpec(classes=[3]), device=device))
    walls = {}
    for limit in (1, 4):
        code, text = coun_lab("runs", "limit", queue, str(limit))
        if code:
            return {"ok": False, "error": text.strip()}
        start = time.perf_counter()
        specs = [RunSpec(method="ft", model=str(model), forget=ForgetSpec(classes=[3]), device=device, seed=i,
                         hparams={"epochs": epochs}) for i in range(4)]
        dirs = [jobs.launch(spec, out / f"limit-{limit}" / f"run-{i}", queue) for i, spec in enumerate(specs)]
        states = [jobs.wait(d, timeout=600).state for d in dirs]
        walls[limit] = time.perf_counter() - start
        if states != ["done"] * 4:
            return {"ok": False, "error": f"limit {limit}: states {states}"}
    return {"one_at_a_time_seconds": round(walls[1], 2), "four_sharing_seconds": round(walls[4], 2),
            "throughput_ratio": round(walls[1] / walls[4], 2), "target_ratio": 2.5}


def fake_fashion(root: Path, n_train: int, n_test: int) -> Path:
    """A Fashion-MNIST-shaped IDX set of random images (the dry run's stand-in for the real files)."""
    import numpy as np

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def tiny_model(dataset: str, out: Path, data_root: Path | None = None) -> Path:
    """A small checkpoint trained here in one epoch (the dry run's models)."""
    path = out / f"tiny-{dataset}.safetensors"
    code, text = coun_lab("train", "--dataset", dataset, "--out", str(path), "--subset", "60", "--epochs", "1",
                          "--device", "cpu", *(["--data-root", str(data_root)] if data_root else []))
    if code:
        raise RuntimeError(f"training the dry run's {dataset} model failed: {text.strip()[-400:]}")
    return path


def write_readme(out: Path, record: dict[str, Any]) -> None:
    lines = [f"# Device check ({'DRY RUN on the CPU: not GPU figures' if record['dry_run'] else record['device']})",
             "", f"`scripts/device_check.sh{' --dry-run' if record['dry_run'] else ''}`, "
             f"{record['started']}, {record['seconds']} s in all; every figure is in device_check.json.", ""]
    for name, entry in record["steps"].items():
        figures = {k: v for k, v in entry.items() if k not in ("output", "runs", "ok")}
        lines.append(f"- **{name}**: {'ok' if entry['ok'] else 'FAILED'}; " +
                     ", ".join(f"{k} {v}" for k, v in figures.items()))
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu", help="where the record goes")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--fashion-root", type=Path, default=None, help="Fashion-MNIST's files (default: the lab's)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.dry_run else args.device
    work = out / "work"
    record: dict[str, Any] = {"device": device, "dry_run": args.dry_run, "steps": {},
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if not args.dry_run:
        import torch

        record["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    from coun_tui.engine import warm
    from coun_tui.engine.methods import all_methods

    methods = args.methods or ",".join(all_methods())
    warm.ensure_server()  # jobs start as a user's do: forked with torch imported
    start = time.perf_counter()
    step(record, "bench", bench, device, args.dry_run)
    if args.dry_run:
        fashion_root: Path | None = fake_fashion(work / "fashion-data", 200, 100)
        digits_model = tiny_model("digits", work)
        fashion_model = tiny_model("fashion-mnist", work, fashion_root)
    else:
        fashion_root = args.fashion_root
        digits_model = MODELS / "resnet18-digits.safetensors"
        fashion_model = MODELS / "resnet18-fashion-mnist-10k.safetensors"
    fashion_args = ["--data-root", str(fashion_root)] if fashion_root else []
    step(record, "digits", sweep, digits_model, device, work / "digits", "3", methods, ["--jobs", "4"])
    step(record, "fashion", sweep, fashion_model, device, work / "fashion", "Coat", methods,
         ["--jobs", "4", *fashion_args])
    tiny = args.dry_run
    step(record, "coun-45k", coun_epoch, device, 450 if tiny else 45_000, 100 if tiny else 10_000, 32 if tiny else 512)
    step(record, "share", share, digits_model, device, work / "share", 1 if args.dry_run else 3)
    record["seconds"] = round(time.perf_counter() - start, 1)
    (out / "device_check.json").write_text(json.dumps(record, indent=1) + "\n")
    write_readme(out, record)
    return 0 if all(entry["ok"] for entry in record["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
