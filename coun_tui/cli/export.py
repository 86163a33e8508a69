"""`coun-lab export`: a finished run as a model folder with its model card (Hugging Face Hub layout)."""

from __future__ import annotations

from pathlib import Path

import typer

from coun_tui.cli.base import command


@command()
def export(run: Path = typer.Argument(..., help="a finished run directory"),
           out: Path = typer.Argument(..., help="the folder to write (new or empty)")):
    """Write a finished run's model as a folder to share: model.safetensors (torchvision's names),
    config.json and a model card README.md (metrics, forget set, method). Nothing is uploaded."""
    from coun_tui.engine.export import export_run

    written = export_run(run, out)
    typer.echo(f"exported {run} to {written}: model.safetensors, config.json, README.md")
    typer.echo(f"to publish it: cd {written} && huggingface-cli upload YOUR-NAME/{written.name} . .", err=True)
