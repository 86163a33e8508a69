"""Modal picker of a checkpoint to unlearn (shipped models, saved runs' checkpoints) or a typed path.

Saved runs are reopened from the run history (widgets/history.py)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from coun_tui.engine import paths
from coun_tui.tui.widgets.run_pane import short_path


class _Picker(ModalScreen[str | None]):
    # Typing goes to the path field; the list is one arrow key (or tab) away.
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("down", "to_list", show=False)]
    TITLE_TEXT = ""
    PLACEHOLDER = ""

    def options(self) -> list[Option]:
        return []

    def compose(self) -> ComposeResult:
        with Vertical(classes="picker"):
            yield Static(self.TITLE_TEXT, classes="picker-title")
            yield Input(placeholder=self.PLACEHOLDER, id="path")
            yield OptionList(*self.options(), id="choices")
            yield Static("type a path, or ↓ to the list · enter: open · escape: close", classes="picker-hint")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        if choices.option_count:
            choices.highlighted = 0
        self.query_one("#path", Input).focus()

    def action_to_list(self) -> None:
        choices = self.query_one(OptionList)
        if self.query_one("#path", Input).has_focus and choices.option_count:
            choices.focus()

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(str(Path(event.value.strip()).expanduser()))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ModelPicker(_Picker):
    """Shipped models and the unlearned checkpoints of saved runs."""

    TITLE_TEXT = "Choose a model to unlearn"
    PLACEHOLDER = "path to a checkpoint (.safetensors, .pt, .pth), then enter"

    def __init__(self, runs_dir: Path, loaded: str | None = None) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.loaded = loaded

    def options(self) -> list[Option]:
        opts = [Option(f"{p.name}  [dim]shipped · {short_path(p)}{self._mark(p)}[/]", id=str(p))
                for p in paths.shipped_models()]
        for run in paths.saved_runs(self.runs_dir):
            model = run / "model.safetensors"
            if model.is_file():
                opts.append(Option(f"{run.name}/model.safetensors  [dim]saved run{self._mark(model)}[/]",
                                   id=str(model)))
        return opts

    def _mark(self, path: Path) -> str:
        return " · loaded" if self.loaded and same_file(path, self.loaded) else ""


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
