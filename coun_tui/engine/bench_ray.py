"""`coun-lab bench --ray`: what Ray costs, measured in one run (take the figures on an idle machine).

- Ray's overhead per run: the same digits FT run through the local backend and as a Ray task,
  wall time from launch to verdict; the Ray run is measured on a warm worker (a sweep's runs reuse
  Ray's workers; the first run on a fresh worker also pays the imports, shown apart).
- On a GPU: four digits FT runs sharing one GPU (0.25 GPU each, all at once) against the same four
  runs one after another on the GPU.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from coun_tui.engine import jobs
from coun_tui.engine.backends import Backend, LocalBackend
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.runner import RunSpec


def ft_spec(model: str, epochs: int) -> RunSpec:
    return RunSpec(method="ft", model=model, forget=ForgetSpec(classes=[3]), hparams={"epochs": epochs})


def timed(backend: Backend, specs: list[RunSpec], out: Path, at_once: bool) -> float:
    """Wall time of running `specs` (all at once, or one after another) to their verdicts."""
    start = time.perf_counter()
    runs = []
    for i, spec in enumerate(specs):
        runs.append(backend.launch(spec, out / f"run-{i}"))
        if not at_once:
            _finished(runs[-1])
    for run in runs:
        _finished(run)
    return time.perf_counter() - start


def _finished(run: Path) -> None:
    state = jobs.wait(run)
    if state.state != "done":
        raise RuntimeError(f"benchmark run {run} ended {state.describe()}")


def run_bench_ray(model: str, out: Path, address: str | None = None, epochs: int = 10,
                  cpus_per_run: float = 1) -> list[tuple[str, float, str]]:
    from coun_tui.engine.rayjobs import RayBackend, cluster_resources, connect

    connect(address)
    gpu = bool(cluster_resources().get("GPU"))
    spec = replace(ft_spec(model, epochs), device="cuda" if gpu else "cpu")  # the same device both ways
    on_ray = RayBackend(address, gpus_per_run=1 if gpu else None, cpus_per_run=cpus_per_run)
    cold = timed(on_ray, [spec], out / "ray-cold", at_once=True)
    warm = timed(on_ray, [spec], out / "ray-warm", at_once=True)
    local = timed(LocalBackend(cpus_per_run), [spec], out / "local", at_once=True)
    rows = [(f"digits FT, {epochs} epochs on {spec.device}, {cpus_per_run:g} CPU: local backend, launch to verdict",
             local, "s"),
            ("the same run as a Ray task (warm worker)", warm, "s"),
            ("the same run as a Ray task (fresh worker: imports included)", cold, "s"),
            ("Ray's overhead per run (warm; target <= 5%)", 100 * (warm - local) / local, "% of the local run")]
    on_ray.close()
    if not gpu:
        rows.append(("4 digits runs sharing one GPU vs one after another: no GPU in the cluster, not measured",
                     float("nan"), "x"))
        return rows
    four = [spec] * 4
    whole = RayBackend(address, gpus_per_run=1)
    timed(whole, four[:1], out / "gpu-warm", at_once=True)
    one_by_one = timed(whole, four, out / "gpu-sequential", at_once=False)
    whole.close()
    shared = RayBackend(address, gpus_per_run=0.25)
    timed(shared, four[:1], out / "gpu-shared-warm", at_once=True)
    together = timed(shared, four, out / "gpu-shared", at_once=True)
    shared.close()
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "the cluster's GPU"
    rows += [(f"4 digits runs one after another on {name}", one_by_one, "s"),
             ("the same 4 sharing it (0.25 GPU each)", together, "s"),
             ("speed-up of sharing (target >= 2.5)", one_by_one / together, "x")]
    return rows
