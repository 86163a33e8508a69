"""The question when quitting with runs still going: leave them running (the default), cancel
them, or stay."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitScreen(ModalScreen[str | None]):
    """Dismissed with "leave", "cancel" or None (stay). Enter leaves them running."""

    BINDINGS = [Binding("escape,s", "dismiss(None)", "Stay"), Binding("l", "dismiss('leave')", "Leave running"),
                Binding("c", "dismiss('cancel')", "Cancel them")]

    def __init__(self, note: str) -> None:
        super().__init__()
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.note, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Leave running (l)", id="leave", variant="primary", compact=True)
                yield Button("Cancel them (c)", id="cancel", variant="error", compact=True)
                yield Button("Stay (esc)", id="stay", compact=True)

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "stay" else event.button.id)
