"""`coun-lab bench --jobs`: what running as a job costs, measured in one run (take the figures on an
idle machine): a digits run in a worker process against the same run in-process (images/s), the
time from launch to the first step against the same run's time to its first step in-process
(which includes loading the model and data), and the CPU a client spends following a job
(engine.jobs.JobWatcher at the app's polling rate). The job runs twice: as a fresh interpreter
and forked by a warm server (engine/warm.py), whose start is not counted (it is up before a
user's launch, started by the launch before).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from coun_tui.engine import jobs, warm
from coun_tui.engine.events import Step
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.rundir import read_state, read_status
from coun_tui.engine.runner import RunSpec, check, prepare
from coun_tui.engine.runs import record


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def digits_spec(model: str, device: str, epochs: int) -> RunSpec:
    return RunSpec(method="ft", model=model, forget=ForgetSpec(classes=[3]), device=device,
                   hparams={"epochs": epochs, "batch_size": 64})


def images_per_second(steps: list[Step]) -> float:
    """Training throughput between the first and the last step (start-up excluded)."""
    if len(steps) < 2:
        return float("nan")
    a, b = steps[0], steps[-1]
    return (b.images - a.images) / max(b.seconds - a.seconds, 1e-9)


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Environment variable `name` set to `value` for the launches inside."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@dataclass
class Followed:
    run_dir: Path
    first_event: float  # seconds from launch, as the client saw them
    first_step: float
    steps: list[Step]
    follow_cpu: float  # the client's CPU per wall second while following


def launch_and_follow(spec: RunSpec, out: Path, queue: str, poll: float) -> Followed:
    """Launch `spec` as a job and follow it to its end as the app does (JobWatcher)."""
    watcher = jobs.JobWatcher()
    launched = time.perf_counter()
    run_dir = jobs.launch(spec, out, queue)
    watcher.add("bench", run_dir)
    first_event = first_step = float("nan")
    steps: list[Step] = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    while "bench" in watcher:
        for update in watcher.poll():
            if update.events and math.isnan(first_event):
                first_event = time.perf_counter() - launched
            new = [e for e in update.events if isinstance(e, Step)]
            if new and math.isnan(first_step):
                first_step = time.perf_counter() - launched
            steps += new
        time.sleep(poll)
    follow_cpu = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    return Followed(run_dir, first_event, first_step, steps, follow_cpu)


def run_bench_jobs(model: str, device: str, out: Path, epochs: int = 2,
                   poll: float = 0.25) -> list[tuple[str, float, str]]:
    spec = digits_spec(model, device, epochs)
    queue = check(spec)
    start = time.perf_counter()
    prep = prepare(spec)
    load_in_process = time.perf_counter() - start
    inproc = []
    for event in record(prep, out / "in-process"):
        if isinstance(event, Step):
            inproc.append(event)
            if len(inproc) == 1:
                first_step_in_process = time.perf_counter() - start

    # A queue of the bench's own: its jobs never wait behind the user's runs.
    with _env("COUN_LAB_QUEUES", str(out / "queues")), _env("COUN_LAB_WARM", "off"):
        cold = launch_and_follow(spec, out / "worker", queue, poll)
    with _env("COUN_LAB_QUEUES", str(out / "queues")), _env("COUN_LAB_WARM", str(out / "warm")):
        server = warm.ensure_server()
        warmed = launch_and_follow(spec, out / "warm-worker", queue, poll)
        if server:
            os.kill(server, signal.SIGTERM)
    state = read_state(cold.run_dir)
    load_worker = float(read_status(cold.run_dir)[0].get("load_seconds", float("nan")))
    load_warm = float(read_status(warmed.run_dir)[0].get("load_seconds", float("nan")))
    ratio = images_per_second(cold.steps) / images_per_second(inproc)
    return [
        (f"digits FT {epochs} epoch(s), in-process", images_per_second(inproc), "img/s"),
        (f"the same run as a job ({state.state})", images_per_second(cold.steps), "img/s"),
        ("job / in-process (target >= 0.97)", ratio, "x"),
        ("in-process: model + data load", load_in_process, "s"),
        ("in-process: load to first step (load, epoch-0 probe metrics, a step)", first_step_in_process, "s"),
        ("job: worker start + load (interpreter, torch, model, data)", load_worker, "s"),
        ("job: launch to its first event seen by the client", cold.first_event, "s"),
        ("job: launch to its first step seen by the client", cold.first_step, "s"),
        ("job, fresh interpreter: extra time to the first step", cold.first_step - first_step_in_process, "s"),
        (f"warm-server job ({read_state(warmed.run_dir).state}): trainer load (model, data)", load_warm, "s"),
        ("warm-server job: launch to its first step seen by the client", warmed.first_step, "s"),
        ("warm-server job: extra time to the first step (target <= 2 s)",
         warmed.first_step - first_step_in_process, "s"),
        (f"CPU of a client following it (poll every {poll} s; target <= 5%)", 100 * cold.follow_cpu, "% of a core"),
    ]
