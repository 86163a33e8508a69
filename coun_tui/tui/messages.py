"""Messages that background workers post to the UI (post_message is thread-safe)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from coun_tui.engine.events import Event, Step


class RunEvent(Message):
    """One engine event of the run `run_id` (Started, EpochMetrics, Embedding, Done, ...)."""

    def __init__(self, run_id: str, event: Event) -> None:
        super().__init__()
        self.run_id, self.event = run_id, event


class RunSteps(Message):
    """Training steps. A queued older message is folded into a newer one, so a burst of steps
    costs one UI update while every step still reaches the loss curve."""

    def __init__(self, run_id: str, steps: list[Step]) -> None:
        super().__init__()
        self.run_id, self.steps = run_id, steps

    def can_replace(self, message: Message) -> bool:
        # Textual asks the message being handled whether `message` (queued next) supersedes it.
        if isinstance(message, RunSteps) and message.run_id == self.run_id:
            message.steps[:0] = self.steps
            return True
        return False


class RunPrepared(Message):
    """The run's spec loaded and validated; `facts` are what the pane shows in its header."""

    def __init__(self, run_id: str, facts: dict[str, Any]) -> None:
        super().__init__()
        self.run_id, self.facts = run_id, facts


class RunFinished(Message):
    """The worker returned (done, failed or cancelled): the pane knows the verdict from events."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__()
        self.run_id, self.status = run_id, status


class ModelLoaded(Message):
    """A checkpoint's metadata and its dataset are ready (or `error` says why not)."""

    def __init__(self, path: str, meta: dict | None, dataset: Any = None, error: str = "") -> None:
        super().__init__()
        self.path, self.meta, self.dataset, self.error = path, meta, dataset, error


class TsneReady(Message):
    def __init__(self, run_id: str, epoch: int, xy: Any, error: str = "") -> None:
        super().__init__()
        self.run_id, self.epoch, self.xy, self.error = run_id, epoch, xy, error


class RunStatus(Message):
    """A run's state before it trains: "queued" (its device is busy; `note` says behind what) or
    "preparing" (it got its device)."""

    def __init__(self, run_id: str, status: str, note: str = "") -> None:
        super().__init__()
        self.run_id, self.status, self.note = run_id, status, note
