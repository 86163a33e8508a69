"""coun-lab: an interactive machine-unlearning lab for ResNet-18 image classifiers.

The Python API (docs/python-api.md) is importable from here: load_model, ForgetSet, unlearn,
evaluate, compare, and the Model, Run and Table they return. They load on first use, so
`import coun_tui` loads neither torch nor the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["ForgetSet", "Model", "Run", "Table", "UserError", "compare", "evaluate", "load_model", "unlearn"]

if TYPE_CHECKING:
    from coun_tui.api import ForgetSet, Model, Run, Table, UserError, compare, evaluate, load_model, unlearn


def __getattr__(name: str) -> Any:
    if name in __all__:
        from coun_tui import api

        return getattr(api, name)
    raise AttributeError(f"module 'coun_tui' has no attribute {name!r}")
