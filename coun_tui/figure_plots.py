"""The poster's figures drawn: in the terminal with plotext, as PNGs with matplotlib (the `plots`
extra). The data comes from engine/figures.py; the conventions are coun_tui/plots.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coun_tui.engine.figures import Embedding, Gain, Panel
from coun_tui.engine.report import table_cells
from coun_tui.plots import _fresh_figure, pyplot

# One terminal colour per class (256-colour codes that read on dark and light backgrounds).
TERMINAL_COLOURS = (196, 34, 27, 208, 201, 37, 178, 93, 94, 244)


def panel_caption(panel: Panel) -> str:
    """The numbers under a panel: its forget samples' placement against Retrain's, the k-NN probe."""
    def pct(v: float | None) -> str:
        return "-" if v is None or np.isnan(v) else f"{v:.1f}%"

    knn = f"kNN D_u {pct(panel.knn_forget)}"
    if panel.run != "retrain":
        knn += f" (Retrain {pct(panel.knn_forget_retrain)})"
    return f"nearest centroid as Retrain's: {pct(panel.same_as_retrain)}\n{knn}"


def _subtitle(emb: Embedding) -> str:
    what = "forgotten class " + ", ".join(emb.classes[c] for c in emb.forgotten) if emb.forgotten else \
        "random forgetting"
    return f"{emb.title}: {what}; {len(emb.retain_y)} retain, {len(emb.forget_y)} forget samples"


def embedding_terminal(emb: Embedding, width: int = 160, height: int = 30) -> str:
    """Every panel side by side; forget samples as crosses in the colour of their nearest class."""
    import plotext as plt

    _fresh_figure(plt)
    plt.subplots(1, len(emb.panels))
    plt.plot_size(width, height)
    n_retain = len(emb.retain_y)
    for col, panel in enumerate(emb.panels, start=1):
        plt.subplot(1, col)
        plt.theme("clear")
        for c in np.unique(emb.retain_y):
            xy = panel.xy[:n_retain][emb.retain_y == c]
            plt.scatter(xy[:, 0], xy[:, 1], marker="dot", color=TERMINAL_COLOURS[int(c) % 10])
        for c in np.unique(panel.forget_nearest):
            xy = panel.xy[n_retain:][panel.forget_nearest == c]
            plt.scatter(xy[:, 0], xy[:, 1], marker="x", color=TERMINAL_COLOURS[int(c) % 10])
        plt.xticks([]), plt.yticks([])
    text = plt.build()
    _fresh_figure(plt)
    # A header line of our own: plotext shifts subplot titles by one panel.
    header = "".join(p.run.center(width // len(emb.panels)) for p in emb.panels)
    text = f"{header.rstrip()}\n{text}"
    captions = "\n".join(f"{p.run:<22} " + panel_caption(p).replace("\n", "; ") for p in emb.panels)
    return f"{_subtitle(emb)}\n{text}\n{captions}\n"


def embedding_png(embeddings: list[Embedding], path: Path) -> None:
    """One row per forget set (the poster's left and right), one panel per model."""
    plt = pyplot()
    cols = max(len(e.panels) for e in embeddings)
    fig, axes = plt.subplots(len(embeddings), cols, figsize=(3.1 * cols, 3.6 * len(embeddings)), squeeze=False,
                             constrained_layout=True)
    cmap = plt.get_cmap("tab10")
    for row, emb in zip(axes, embeddings):
        n_retain = len(emb.retain_y)
        for ax, panel in zip(row, emb.panels):
            ax.scatter(*panel.xy[:n_retain].T, s=4, c=[cmap(int(c) % 10) for c in emb.retain_y], alpha=0.6,
                       linewidths=0)
            ax.scatter(*panel.xy[n_retain:].T, s=28, c=[cmap(int(c) % 10) for c in panel.forget_nearest],
                       edgecolors="black", linewidths=0.5)
            ax.set_title(panel.run, fontsize=10)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(panel_caption(panel), fontsize=7.5)
        for ax in row[len(emb.panels):]:
            ax.axis("off")
        row[0].set_ylabel(_subtitle(emb).split(";")[0], fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i % 10), label=name)
               for i, name in enumerate(embeddings[0].classes[:10])]
    fig.legend(handles=handles, loc="outside right center", fontsize=7, title="class", title_fontsize=7)
    fig.suptitle("Penultimate features (t-SNE); large dots: forget samples, coloured by their nearest "
                 "retain-class centroid", fontsize=10)
    _save(plt, fig, path, dpi=90)  # thousands of dots: keep a committed figure small


def table_png(rows: list[dict[str, Any]], columns: tuple[str, ...], title: str, path: Path) -> None:
    """The comparison table's own cells (engine/report.py) as an image; the best per column bold."""
    plt = pyplot()
    head, body, best = table_cells(rows, columns)
    widths = [max(len(r[j]) for r in [head, *body]) for j in range(len(head))]
    fig, ax = plt.subplots(figsize=(0.085 * sum(widths) + 1, 0.25 * (len(body) + 1) + 0.4))
    ax.axis("off")
    table = ax.table(cellText=body, colLabels=head, loc="center", cellLoc="center",
                     colWidths=[w / sum(widths) for w in widths])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (i, j), cell in table.get_celld().items():
        if i == 0 or (i - 1, j) in best:
            cell.set_text_props(fontweight="bold")
    ax.set_title(title, fontsize=9)
    _save(plt, fig, path)


def gains_terminal(gains: list[Gain], title: str, width: int = 120, height: int = 24) -> str:
    """Figure 4: % improvement in Avg. Gap from +CL, one group of bars per forget ratio."""
    import plotext as plt

    ratios, methods, values = _gain_matrix(gains)
    _fresh_figure(plt)
    plt.plot_size(width, height)
    plt.theme("clear")
    plt.multiple_bar([f"{r:g}%" for r in ratios], values, labels=methods)
    plt.title("% improvement in Avg. Gap from +CL, by forget ratio")
    text = plt.build()
    _fresh_figure(plt)
    w = max(14, *(len(g.method) for g in gains))
    lines = [f"{g.ratio:>4g}%  {g.method:<{w}} {g.gap:6.2f} -> {g.gap_cl:6.2f}  {g.improvement:+6.1f}%  (n={g.n})"
             for g in gains]
    return f"{title}\n{text}\n" + "\n".join(lines) + "\n"


def gains_png(gains: list[Gain], title: str, path: Path) -> None:
    plt = pyplot()
    ratios, methods, values = _gain_matrix(gains)
    fig, ax = plt.subplots(figsize=(max(7.0, 2.5 + 0.35 * len(ratios) * len(methods)), 4.2),
                           constrained_layout=True)
    step = 0.8 / max(1, len(methods))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    for k, (method, ys) in enumerate(zip(methods, values)):
        xs = np.arange(len(ratios)) + (k - (len(methods) - 1) / 2) * step
        bars = ax.bar(xs, ys, width=step, label=method, color=cmap(k % cmap.N))
        ax.bar_label(bars, fmt="%+.0f", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(ratios)), [f"{r:g}%" for r in ratios])
    ax.set_xlabel("forget ratio (random)")
    ax.set_ylabel("% improvement in Avg. Gap from +CL")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(plt, fig, path)


def _gain_matrix(gains: list[Gain]) -> tuple[list[float], list[str], list[list[float]]]:
    """Ratios, methods, and per method its improvement at each ratio (0 where it has none)."""
    ratios = sorted({g.ratio for g in gains})
    methods = list(dict.fromkeys(g.method for g in gains))
    at = {(g.method, g.ratio): g.improvement for g in gains}
    return ratios, methods, [[at.get((m, r), 0.0) for r in ratios] for m in methods]


def _save(plt: Any, fig: Any, path: Path, dpi: int = 110) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
