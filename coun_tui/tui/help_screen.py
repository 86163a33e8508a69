"""The `?` screen: keys, and what the lab shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from coun_tui.tui.keys import markdown_table

HELP = f"""\
# coun-lab

Pick a model, choose what to **forget** (classes or a random fraction), a **method** and its
hyperparameters, then **run**. Training happens in the background; every run is saved.

{markdown_table()}
## Reading a run
- **loss by component**: `ce` (retain cross-entropy), `cl` (lambda x contrastive term),
  `forget`/`l1` for the baselines that have them, and `total`.
- **metrics** per epoch are probe estimates on fixed subsets (epoch 0 = before training), `final`
  on the full sets: RA retain accuracy, UA 100 - forget accuracy, TA test accuracy, MIA efficacy,
  with `±` its spread over balanced draws of the attack (a large one: the attack is unsure).
  In brackets: the gap to Retrain on the same split; `↓` (green) = closer than the row above, `↑`
  (red) = further. **Avg.Gap** is their mean (lower is better, 0 = Retrain).
- **embedding**: penultimate features of probe points; retain points coloured by class,
  forget points drawn as `x`.

## Comparing runs
Open several runs (launch them, or `o` and mark with space) and they sit side by side; the
table below them is the paper's Table 1: RA, UA, TA, MIA with their gap to Retrain in
brackets, **Avg. Gap**, PFLOPs and wall time; the best per column (Retrain aside) has a `*`.
At 80 columns it shows fewer decimals, then leaves columns out (the heading names them).
A run still going shows its latest probe numbers, dimmed. Runs on one device queue (one trains,
the others wait: *queued*); runs on different devices train at once. With no Retrain on the
split, `ctrl+r` offers to run it first; gaps fill in when it finishes. Exports are the same text
as `coun-lab compare RUN_DIR...` for the finished runs, in the order shown, in RUNS_DIR/exports.

Runs are written to the runs directory: `run.toml`, `split.npz`, `events.jsonl`,
`embedding.npy` (for t-SNE later), `labels.json` (name, tags), and when done
`model.safetensors` and `metrics.json`. The setup and the panes open when you quit come back
next time.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
