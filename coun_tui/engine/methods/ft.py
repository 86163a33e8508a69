"""FT: fine-tune on the retain set with cross-entropy (catastrophic forgetting of the rest)."""

from __future__ import annotations

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class FineTune(Method):
    name = "ft"
    summary = "fine-tune on the retain set with cross-entropy"
    params = {"epochs": 10, "lr": 0.05}
