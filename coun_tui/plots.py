"""Plots of sweep results along a grid axis, and of the oracle's per-example epsilon: plotext in
the terminal, matplotlib for a PNG.

Series come from engine.sweep.curves: name -> points sorted along the axis, each a table row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Series = dict[str, list[dict[str, Any]]]


def _xy(points: list[dict[str, Any]], x: str) -> tuple[list[float], list[float]]:
    kept = [p for p in points if p.get("avg_gap") is not None]
    return [float(p[x]) for p in kept], [float(p["avg_gap"]) for p in kept]


def _log_gaps(series: Series) -> bool:
    """A log Avg. Gap axis, unless a gap is 0 (a run that matches Retrain exactly), which it cannot show."""
    return all(p["avg_gap"] > 0 for points in series.values() for p in points if p.get("avg_gap") is not None)


def _fresh_figure(plt) -> None:
    """Clear the whole plotext figure: clear_figure alone clears only the subplot last selected,
    so another figure drawn in the same process would inherit the other subplot's series."""
    plt.main()
    plt.clear_figure()


def pyplot() -> Any:
    """matplotlib's pyplot drawing to files only, or one line saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        from coun_tui.engine import UserError

        raise UserError("--png needs matplotlib: pip install -e '.[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def budget_terminal(series: Series, axis: str, title: str, width: int = 120, height: int = 24) -> str:
    """Avg. Gap against the axis (left) and against PFLOPs (right) as terminal text."""
    import plotext as plt

    log_y = _log_gaps(series)
    _fresh_figure(plt)
    plt.subplots(1, 2)
    plt.plot_size(width, height)
    for col, x in ((1, axis), (2, "pflops")):
        plt.subplot(1, col)
        plt.theme("clear")
        # As the PNG: log, or the worst method flattens the close ones. Before plot(): plotext
        # records the scale with each signal.
        plt.yscale("log" if log_y else "linear")
        for name, points in series.items():
            xs, ys = _xy(points, x)
            plt.plot(xs, ys, label=name, marker="braille")
        plt.title(f"Avg. Gap vs {'PFLOPs' if x == 'pflops' else axis}")  # plotext drops a title too wide
        plt.xlabel("PFLOPs" if x == "pflops" else axis)
    text = plt.build()
    _fresh_figure(plt)
    return f"{title}\n{text}"


def budget_png(series: Series, axis: str, title: str, path: Path) -> None:
    """The same two plots as a PNG, with matplotlib (an optional extra)."""
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, LogLocator, NullLocator

    log_y = _log_gaps(series)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, x in zip(axes, (axis, "pflops")):
        for name, points in series.items():
            xs, ys = _xy(points, x)
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("PFLOPs" if x == "pflops" else axis)
        ax.set_ylabel("Avg. Gap (lower is better)")
        # Log x: the grid is geometric (1, 2, 5, 10 epochs). Log y where it can: gaps span 0.5 to
        # 10 and more, where a linear scale lets the worst method flatten the close ones into one line.
        ax.set_xscale("log")
        ax.set_yscale("log" if log_y else "linear")
        for scale in (ax.xaxis, ax.yaxis) if log_y else (ax.xaxis,):  # log ticks at 1, 2, 5 a decade
            scale.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            scale.set_major_formatter(FormatStrFormatter("%g"))
            scale.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3, which="both")
    values = sorted({float(p[axis]) for points in series.values() for p in points})
    axes[0].xaxis.set_major_locator(FixedLocator(values))  # tick the grid's own values
    axes[0].xaxis.set_minor_locator(NullLocator())
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The oracle's per-example epsilon (engine/oracle_report.py rows) -----------------------------

def epsilon_bins(eps: list[float], n_models: int) -> tuple[list[str], list[int]]:
    """Counts in the competition's bins of 0.5 (an example in bin k earns 2^-k points), the last
    one holding every epsilon at or beyond ceil(ln(N - 1)), which earns none."""
    top = math.ceil(math.log(n_models - 1))
    edges = [0.5 * k for k in range(int(2 * top) + 1)]
    labels = [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">={top}"]
    counts = [0] * len(labels)
    for e in eps:
        counts[min(int(e / 0.5), len(labels) - 1)] += 1
    return labels, counts


def _eps_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("eps")]


def epsilon_terminal(rows: list[dict[str, Any]], title: str, width: int = 100, height: int = 20) -> str:
    """Share of forget examples per epsilon bin, one bar series per row, as terminal text."""
    import plotext as plt

    rows = _eps_rows(rows)
    if not rows:
        return ""
    _fresh_figure(plt)
    plt.plot_size(width, height)
    plt.theme("clear")
    labels = epsilon_bins(rows[0]["eps"], rows[0]["n"])[0]
    shares = [[c / len(r["eps"]) for c in epsilon_bins(r["eps"], r["n"])[1]] for r in rows]
    plt.multiple_bar(labels, shares, labels=[r["method"] for r in rows])
    plt.title("share of forget examples per epsilon bin")
    plt.xlabel("per-example epsilon (lower: closer to Retrain)")
    text = plt.build()
    _fresh_figure(plt)
    return f"{title}\n{text}"


def epsilon_png(rows: list[dict[str, Any]], title: str, path: Path) -> bool:
    """The same histogram as a PNG; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _eps_rows(rows)
    fig, ax = plt.subplots(figsize=(9, 4), constrained_layout=True)
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        labels, counts = epsilon_bins(r["eps"], r["n"])
        xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(labels))]
        ax.bar(xs, [c / len(r["eps"]) for c in counts], width, label=f"{r['method']} (F {r['F']:.2f})")
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("per-example epsilon (lower: closer to Retrain)")
    ax.set_ylabel("share of forget examples")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
