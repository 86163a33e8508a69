"""Small modal dialogs: confirm, a one-line prompt, the launch confirmation, and export."""

from __future__ import annotations

from rich.text import Text
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


class LaunchScreen(ModalScreen[str | None]):
    """The one confirmation before a run starts: what will run, whether its split lacks a Retrain
    reference (then Retrain can be queued first) and whether an identical run exists already.

    Returns "run", "retrain_first" or None. Only `y`, `t` or a click confirm: never enter (it may
    have opened this from the Run button) nor the keys that launch, so a doubled keypress cannot
    start a run, let alone two.
    """

    BINDINGS = [Binding("escape,n", "dismiss(None)", "Cancel"), Binding("y", "dismiss('run')", "Run"),
                Binding("t", "retrain_first", "Retrain first")]
    AUTO_FOCUS = ""  # no button focused: enter presses nothing

    def __init__(self, summary: Text, no_reference: str | None = None, duplicate: str | None = None) -> None:
        super().__init__()
        self.summary, self.no_reference, self.duplicate = summary, no_reference, duplicate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="launch-dialog"):
            text = Text.assemble(("Run this?\n\n", "bold"), self.summary)
            if self.no_reference:
                text.append(f"\n\n! No Retrain reference for {self.no_reference} yet: the gaps to Retrain "
                            "(and the Avg. Gap) stay empty until one on this split finishes; then they fill in.")
            if self.duplicate:
                text.append(f"\n\n! An identical run exists already: {self.duplicate}. "
                            "Running it again gives a second copy.", style="bold")
            yield Static(text, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run (y)", id="run", variant="primary", compact=True)
                if self.no_reference:
                    yield Button("Retrain first, then run (t)", id="retrain_first", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def action_retrain_first(self) -> None:
        if self.no_reference:
            self.dismiss("retrain_first")

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
