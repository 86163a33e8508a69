"""The run pane's charts: loss curves by component and the 2-D embedding scatter (plotext)."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from coun_tui.engine.runlog import RunLog

# Class colours (RGB, shared by plotext and Rich): tab10 first, then more for CIFAR-100's sake.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
           (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213)]
LOSS_COLOURS = {"total": (230, 230, 230), "ce": (31, 119, 180), "cl": (255, 127, 14),
                "forget": (214, 39, 40), "l1": (44, 160, 44)}
# Each loss component has its own marker, so the curves differ in shape, not only in colour; the
# title is the legend (plotext's legend box would cover the start of the curves).
LOSS_MARKERS = {"total": "braille", "ce": "·", "cl": "+", "forget": "x", "l1": "*"}
MARKER_GLYPH = {"braille": "⠒"}
FORGET_MARKER = "x"
MAX_LINE_POINTS = 600  # a long run's curve is thinned for drawing (the log keeps every step)
MAX_EPOCH_LINES = 8  # epoch boundaries drawn: a 30-epoch Retrain gets one every 4 epochs


def class_colour(label: int) -> tuple[int, int, int]:
    return PALETTE[label % len(PALETTE)]


def _thin(xs: list, ys: list) -> tuple[list, list]:
    if len(xs) <= MAX_LINE_POINTS:
        return xs, ys
    stride = math.ceil(len(xs) / MAX_LINE_POINTS)
    return xs[::stride] + xs[-1:], ys[::stride] + ys[-1:]


class LossPlot(PlotextPlot):
    """Loss by component against the global step; dotted lines at epoch boundaries."""

    def draw(self, log: RunLog) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("step")
        if not log.steps:
            plt.title("loss by component")
            plt.xlim(0, max(1, log.total_steps))
            self.refresh()
            return
        legend = []
        for name, values in sorted(log.losses.items(), key=lambda kv: (kv[0] == "total", kv[0])):
            xs, ys = _thin(log.steps, values)
            pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            if pts:
                colour = LOSS_COLOURS.get(name, PALETTE[hash(name) % len(PALETTE)])
                marker = LOSS_MARKERS.get(name, "•")
                plt.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour)
                legend.append(f"{MARKER_GLYPH.get(marker, marker)} {name}")
        plt.title("loss: " + "  ".join(legend))
        per_epoch = log.started.steps_per_epoch if log.started else 0
        if log.started and log.started.epochs > 1 and per_epoch > 0:
            every = math.ceil((log.started.epochs - 1) / MAX_EPOCH_LINES)
            last = min(log.started.epochs, (log.steps[-1] - 1) // per_epoch + 1)  # x < last step
            for e in range(every, last, every):
                plt.vline(e * per_epoch, color=(120, 120, 120))
        plt.xlim(0, max(log.total_steps, log.steps[-1]))
        self.refresh()


class EmbeddingPlot(Vertical):
    """Penultimate features of the probe points in 2-D: PCA each epoch, t-SNE on request."""

    DEFAULT_CSS = """
    EmbeddingPlot { height: auto; }
    EmbeddingPlot > PlotextPlot { height: 1fr; min-height: 8; }
    EmbeddingPlot > .legend { height: auto; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield PlotextPlot(id="scatter")
        yield Static(classes="legend", id="legend")

    def draw(self, log: RunLog, class_names: list[str] | None, tsne: tuple[int, list] | None = None) -> None:
        plot = self.query_one("#scatter", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        emb = log.embedding
        if emb is None:
            plt.title("embedding (after the first evaluation)")
            plot.refresh()
            self.query_one("#legend", Static).update("")
            return
        if tsne is not None:
            epoch, xy = tsne
            plt.title(f"t-SNE · epoch {epoch}   (e: back to PCA)")
        else:
            xy = emb.xy
            plt.title(f"PCA of features · epoch {emb.epoch}")
        labels, forget = emb.labels, emb.forget
        present = sorted({lab for lab, f in zip(labels, forget) if not f})
        for lab in present:
            pts = [p for p, l_, f in zip(xy, labels, forget) if l_ == lab and not f]
            plt.scatter([p[0] for p in pts], [p[1] for p in pts], marker="braille", color=class_colour(lab))
        fpts = [p for p, f in zip(xy, forget) if f]
        if fpts:
            plt.scatter([p[0] for p in fpts], [p[1] for p in fpts], marker=FORGET_MARKER,
                        color=(235, 235, 235) if self.app.current_theme.dark else (20, 20, 20))
        plt.xticks([])
        plt.yticks([])
        plot.refresh()
        legend = Text("retain: ", style="dim")
        for lab in present:
            name = class_names[lab] if class_names and lab < len(class_names) else str(lab)
            legend.append("● " + name, style="rgb({},{},{})".format(*class_colour(lab)))
            legend.append(" ")
        if fpts:
            legend.append(f"  {FORGET_MARKER} forget ({len(fpts)})", style="bold")
        self.query_one("#legend", Static).update(legend)
