"""The one registry of unlearning methods. A new method is one small module plus `@register`."""

from __future__ import annotations

from coun_tui.engine import UserError
from coun_tui.engine.methods.base import COMMON_DEFAULTS, Batch, Context, Method

REGISTRY: dict[str, type[Method]] = {}
ORDER = ("retrain", "ft", "ga", "rl", "neggrad_plus", "l1_sparse", "salun", "no_t", "coun")  # modules


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Method]:
    _load_all()
    key = name.lower()
    if key not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(REGISTRY)} "
                        "(see `coun-lab methods`)")
    return REGISTRY[key]


def all_methods() -> dict[str, type[Method]]:
    """Every method: the paper's order first, then any others by name."""
    _load_all()

    def rank(cls):
        module = cls.__module__.rsplit(".", 1)[-1]
        return (ORDER.index(module) if module in ORDER else len(ORDER), cls.name)

    return {cls.name: cls for cls in sorted(REGISTRY.values(), key=rank)}


def _load_all() -> None:
    # Importing a method module registers it.
    import importlib

    for module in ORDER:
        importlib.import_module(f"coun_tui.engine.methods.{module}")


__all__ = ["Batch", "COMMON_DEFAULTS", "Context", "Method", "all_methods", "get", "register"]
