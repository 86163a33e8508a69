"""The `?` screen: keys, and what the lab shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# coun-lab

Pick a model, choose what to **forget** (classes or a random fraction), a **method** and its
hyperparameters, then **run**. Training happens in the background; every run is saved.

| key | action |
|---|---|
| `ctrl+r` / `r` | run the method set up on the left |
| `t` | launch Retrain on the same forget set beside it (the reference for gaps) |
| `c` | cancel the run in the shown pane (stops within a step) |
| `e` | embedding: t-SNE of the latest epoch / back to PCA |
| `o` | open a saved run (replays its events) |
| `m` | choose another model |
| `w` | close the shown pane |
| `s` | show / hide the setup panel |
| `[` `]` | previous / next run pane |
| `d` | light / dark theme |
| `ctrl+p` | command palette (every action) |
| `?` | this help |
| `q` | quit (cancels running work and waits for it) |

## Reading a run
- **loss by component**: `ce` (retain cross-entropy), `cl` (lambda x contrastive term),
  `forget`/`l1` for the baselines that have them, and `total`.
- **metrics** per epoch on fixed probe subsets (epoch 0 = before training), `final` on the full
  sets: RA retain accuracy, UA 100 - forget accuracy, TA test accuracy, MIA efficacy.
  In brackets: the gap to Retrain on the same split; green = closer than the row above, red =
  further. **Avg.Gap** is their mean (lower is better, 0 = Retrain).
- **embedding**: penultimate features of probe points; retain points coloured by class,
  forget points drawn as `x`.

Runs are written to the runs directory: `run.toml`, `split.npz`, `events.jsonl`, and when done
`model.safetensors` and `metrics.json`.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
