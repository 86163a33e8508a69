"""`coun-lab figure`: the poster's figures from sweep folders, in the terminal and as PNGs."""

from __future__ import annotations

from pathlib import Path

import typer

from coun_tui.cli.base import command, fail, method_names

KINDS = {"embedding": "Figures 1 and 3: each model's penultimate features (t-SNE) on the same samples",
         "table1": "Table 1: the comparison table at 10% random forgetting",
         "fig4": "Figure 4: % improvement in Avg. Gap from +CL, by forget ratio"}


@command()
def figure(kind: str = typer.Argument(..., help="embedding (Figures 1 and 3), table1 or fig4"),
           folders: list[Path] = typer.Argument(..., help="sweep folders (an experiment file's `out`); "
                                                "embedding also takes seed folders OUT/<forget>/seed-<s>"),
           png: Path | None = typer.Option(None, "--png", help="also write the figure as a PNG (needs "
                                              "matplotlib: pip install -e '.\\[plots]')"),
           runs: str = typer.Option("retrain,coun,ft,neggrad+", "--runs",
                                    help="embedding: the run folders side by side, retrain first"),
           seed: int = typer.Option(0, "--seed", help="embedding: the seed whose runs are drawn; it also "
                                    "draws the samples and seeds the t-SNE"),
           retain_samples: int = typer.Option(500, "--retain-samples", help="embedding: retain samples drawn"),
           forget_samples: int = typer.Option(100, "--forget-samples", help="embedding: forget samples drawn"),
           forget: str = typer.Option("random-10pct", "--forget", help="table1: the forget set's folder name")):
    """Draw a figure of the CoUn poster from finished sweeps (see docs/figures.md)."""
    if kind not in KINDS:
        fail(f"unknown figure {kind!r}; use one of: {', '.join(KINDS)}")
    if kind == "table1" and len(folders) > 1:
        fail("table1 draws one sweep folder; give one (embedding and fig4 take several)")
    if min(retain_samples, forget_samples) < 1:
        fail("--retain-samples and --forget-samples must be at least 1")
    if kind == "embedding":
        _embedding(folders, tuple(method_names(runs)), seed, retain_samples, forget_samples, png)
    elif kind == "table1":
        _table1(folders[0], forget, png)
    else:
        _fig4(folders, png)
    if png is not None:
        typer.echo(f"wrote {png}", err=True)


def _embedding(folders: list[Path], runs: tuple[str, ...], seed: int, n_retain: int, n_forget: int,
               png: Path | None) -> None:
    from coun_tui.engine.figures import embedding, finished_models, seed_folders
    from coun_tui.figure_plots import embedding_png, embedding_terminal

    found = [where for folder in folders for where in seed_folders(folder, seed)]  # one row of panels each
    for where in found:  # refuse before the slow part if any folder lacks a run
        finished_models(where, runs)
    drawn = [embedding(where, runs, n_retain, n_forget, seed) for where in found]
    for emb in drawn:
        typer.echo(embedding_terminal(emb))
    if png is not None:
        embedding_png(drawn, png)


def _table1(folder: Path, forget: str, png: Path | None) -> None:
    from coun_tui.engine.figures import TABLE1_COLUMNS, table1
    from coun_tui.engine.report import render
    from coun_tui.figure_plots import table_png

    rows = table1(folder, forget)
    title = f"Table 1 ({folder}, {forget}): mean ± std over seeds (gap to Retrain)"
    typer.echo(f"{title}\n\n" + render(rows, "md", with_legend=False, columns=TABLE1_COLUMNS))
    if png is not None:
        table_png(rows, TABLE1_COLUMNS, title, png)


def _fig4(folders: list[Path], png: Path | None) -> None:
    from coun_tui.engine.figures import cl_gains
    from coun_tui.figure_plots import gains_png, gains_terminal

    gains = cl_gains(folders)
    title = f"Figure 4 ({', '.join(map(str, folders))}): +CL's change of the Avg. Gap (positive: better)"
    typer.echo(gains_terminal(gains, title))
    if png is not None:
        gains_png(gains, title, png)
