"""Small modal dialogs: confirm, a one-line prompt, the missing-reference offer, and export."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """Yes / no. `y` or the confirm button says yes; `n`, escape or the other button say no."""

    BINDINGS = [Binding("escape,n", "dismiss(False)", "No"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str, confirm: str = "Delete", danger: bool = True) -> None:
        super().__init__()
        self.question, self.confirm, self.danger = question, confirm, danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.confirm} (y)", id="yes", variant="error" if self.danger else "primary",
                             compact=True)
                yield Button("Keep (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class PromptScreen(ModalScreen[str | None]):
    """One line of text (a run's name, its tags); enter accepts, escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-text")
            yield Input(self.value, placeholder=self.placeholder, id="prompt")
            yield Static("enter: save · escape: cancel", classes="picker-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class NoReferenceScreen(ModalScreen[str | None]):
    """No Retrain run exists for this split: run it first (queued before the run), or run anyway."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("t", "dismiss('retrain_first')", "Retrain first"),
                Binding("r", "dismiss('run')", "Run anyway")]

    def __init__(self, what: str, method: str) -> None:
        super().__init__()
        self.what, self.method = what, method

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"No Retrain reference for {self.what} yet.\n\n"
                         f"Without one, {self.method}'s gaps to Retrain (and the Avg. Gap) stay empty until a "
                         "Retrain on this split finishes; then they fill in.", classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Retrain first, then run (t)", id="retrain_first", variant="primary", compact=True)
                yield Button("Run anyway (r)", id="run", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#retrain_first", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)


EXPORTS = [("md", "Comparison as Markdown (.md)"), ("csv", "Comparison as CSV (.csv)"),
           ("json", "Comparison as JSON (.json)"), ("all", "Comparison as all three"),
           ("svg", "This screen as SVG (.svg)")]


class ExportScreen(ModalScreen[str | None]):
    """Which export: the comparison table (md, csv, json; the same text as `coun-lab compare`) or SVG."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, where: str, n_rows: int) -> None:
        super().__init__()
        self.where, self.n_rows = where, n_rows

    def compose(self) -> ComposeResult:
        with Vertical(classes="picker"):
            yield Static("Export", classes="picker-title")
            yield OptionList(*[Option(text, id=key, disabled=key != "svg" and not self.n_rows)
                               for key, text in EXPORTS], id="choices")
            yield Static(f"{self.n_rows} finished run(s) in the table · files go to {self.where}\n"
                         "enter: export · escape: close", classes="picker-hint")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        choices.highlighted = 0 if self.n_rows else len(EXPORTS) - 1
        choices.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
