"""Messages that background threads post to the UI (post_message is thread-safe)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class ModelLoaded(Message):
    """A checkpoint's metadata and its dataset are ready (or `error` says why not)."""

    def __init__(self, path: str, meta: dict | None, dataset: Any = None, error: str = "") -> None:
        super().__init__()
        self.path, self.meta, self.dataset, self.error = path, meta, dataset, error


class TsneReady(Message):
    def __init__(self, run_id: str, epoch: int, xy: Any, error: str = "") -> None:
        super().__init__()
        self.run_id, self.epoch, self.xy, self.error = run_id, epoch, xy, error
