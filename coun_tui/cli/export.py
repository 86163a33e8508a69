"""`coun-lab export`: a finished run as a model folder with its model card (Hugging Face Hub layout)."""

from __future__ import annotations

from pathlib import Path

import typer

from coun_tui.cli.base import command


@command()
def export(run: Path = typer.Argument(..., help="a finished run directory"),
           out: Path = typer.Argument(..., help="the folder to write (new or empty)")):
    """Write a finished run as a folder to share: its model, config.json and a model card.

    Its model.safetensors keeps torchvision's tensor names; README.md is a model card in the Hugging Face
    Hub layout (metrics and gaps, forget set, method, hyperparameters, how to load it). Nothing is
    uploaded."""
    from coun_tui.engine.export import export_run

    written = export_run(run, out)
    typer.echo(f"exported {run} to {written}: model.safetensors, config.json, README.md")
    typer.echo(f"to publish it: cd {written} && huggingface-cli upload YOUR-NAME/{written.name} . .", err=True)
