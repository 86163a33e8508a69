"""The app: in the terminal (`tui`, also `coun-lab` alone) and in a browser (`serve`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from coun_tui.cli.base import (
    ADDRESS,
    BACKEND,
    CPUS_PER_RUN,
    DATA_ROOT,
    DATASET,
    GPUS_PER_RUN,
    LOG,
    STORAGE,
    command,
    log_targets,
)


@command()
def tui(model: str | None = typer.Option(None, "--model", help="checkpoint to open"),
        dataset: str | None = DATASET, data_root: str | None = DATA_ROOT,
        runs_dir: str | None = typer.Option(None, "--runs-dir", help="where runs are kept"),
        backend: str | None = BACKEND, address: str | None = ADDRESS,
        gpus_per_run: float | None = GPUS_PER_RUN, cpus_per_run: float | None = CPUS_PER_RUN,
        storage: str | None = STORAGE, log: list[str] = LOG):
    """Open the lab (the same as `coun-lab` with no arguments)."""
    from coun_tui.engine import backends

    runner = backends.make(backend, address, gpus_per_run, cpus_per_run, storage)
    targets = log_targets(log)
    from coun_tui.tui.app import run_app

    backends.use(runner)
    try:
        run_app(model=model, dataset=dataset, data_root=data_root, runs_dir=runs_dir, log=targets)
    finally:
        runner.close()


@command()
def serve(model: str | None = typer.Option(None, "--model", help="checkpoint to open"),
          dataset: str | None = DATASET, data_root: str | None = DATA_ROOT,
          runs_dir: str | None = typer.Option(None, "--runs-dir", help="where runs are kept"),
          host: str = typer.Option("127.0.0.1", "--host",
                                   help="address to listen on; the default keeps it to this machine "
                                        "(reach it from yours through an SSH tunnel)"),
          port: int = typer.Option(8000, "--port", help="port to listen on"),
          public_url: str | None = typer.Option(
              None, "--public-url", help="the address your browser uses, when it differs (another tunnel port)")):
    """Open the lab in a web browser: the same app, served by textual-serve (one per browser tab)."""
    import shlex

    from textual_serve.server import Server

    args = [sys.executable, "-m", "coun_tui", "tui"]
    for flag_name, value in (("--model", model), ("--dataset", dataset), ("--data-root", data_root),
                             ("--runs-dir", runs_dir)):
        if value:
            args += [flag_name, str(Path(value).resolve()) if flag_name != "--dataset" else value]
    url = public_url or f"http://{host}:{port}"
    typer.echo(f"coun-lab in a browser: open {url}\n"
               f"from your own machine: ssh -L {port}:localhost:{port} THIS_HOST, then open "
               f"http://localhost:{port} (Ctrl+C here stops it)", err=True)
    Server(shlex.join(args), host=host, port=port, title="coun-lab", public_url=public_url).serve()
