"""The one registry of unlearning methods. A new method is one module in this package with a class
decorated `@register` (see base.py); every module here is imported, so it is found by itself.

An installed package can add methods without touching the lab: an entry point in the group
`coun_tui.methods` naming a Method subclass, or a factory returning one (see docs/plugins.md).
A plugin that fails to load is one warning line on stderr naming its package; the lab goes on.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from coun_tui.engine import UserError
from coun_tui.engine.forget import check_seed
from coun_tui.engine.methods.base import (
    COMMON_PARAMS,
    Batch,
    Context,
    Method,
    Param,
    Search,
    check_hparams,
    flag,
    searched,
)

PLUGIN_GROUP = "coun_tui.methods"
REGISTRY: dict[str, type[Method]] = {}
PLUGIN_PROBLEMS: list[str] = []  # one line per plugin that could not be loaded
# The order in which methods are listed (the paper's); methods not named here follow by name.
ORDER = ("retrain", "ft", "ga", "rl", "neggrad+", "l1-sparse", "salun", "not", "scrub", "bad-teacher", "ssd",
         "unsir", "jit", "coun")
_loaded = False
# The modules here that declare what a method is, not a method.
NOT_METHODS = ("base", "params")


def register(cls: type[Method]) -> type[Method]:
    if "defaults" in vars(cls):
        raise TypeError(f"method {cls.__name__}: `defaults` is now `params` (see methods/base.py)")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise TypeError(f"two methods are called {cls.name!r}: {REGISTRY[cls.name].__name__}, {cls.__name__}")
    for key, p in cls.declared().items():  # a default outside its own range is a mistake in the code
        try:
            p.parse(p.default)
        except ValueError as exc:
            raise TypeError(f"method {cls.name}: default {key}={p.default!r}: {exc}") from None
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Method]:
    _load_all()
    key = name.lower()
    if key not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(all_methods())} "
                        "(see `coun-lab methods`)")
    return REGISTRY[key]


def check_method(method: str, cl: bool, hparams: dict[str, Any], seed: int) -> type[Method]:
    """The method exists, its hyperparameters are its own and in range, the seed fits, +CL applies."""
    method_cls = get(method)
    check_hparams(method_cls, hparams)
    check_seed(seed)
    if cl and method_cls.always_cl:
        raise UserError(f"{method_cls.name}'s contrastive term is always on: drop --cl "
                        "(--lambda and --tau tune it)")
    if cl and method_cls.from_scratch:
        raise UserError(f"{method_cls.name} is the reference and takes no contrastive term: drop --cl")
    if cl and method_cls.cl_refusal:
        raise UserError(f"{method_cls.name} takes no contrastive term ({method_cls.cl_refusal}): drop --cl")
    return method_cls


def all_methods() -> dict[str, type[Method]]:
    """Every method, in ORDER, then any others by name."""
    _load_all()

    def rank(cls: type[Method]) -> tuple[int, str]:
        return (ORDER.index(cls.name) if cls.name in ORDER else len(ORDER), cls.name)

    return {cls.name: cls for cls in sorted(REGISTRY.values(), key=rank)}


def all_params() -> dict[str, tuple[Param, dict[str, object]]]:
    """Every hyperparameter any method takes: its declaration and each method's default."""
    out: dict[str, tuple[Param, dict[str, object]]] = {}
    for name, cls in all_methods().items():
        for key, p in cls.declared().items():
            out.setdefault(key, (p, {}))[1][name] = p.default
    return out


def _load_all() -> None:
    # Importing a method module registers it.
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in NOT_METHODS:
            importlib.import_module(f"{__name__}.{info.name}")
    for point in entry_points(group=PLUGIN_GROUP):
        _load_plugin(point)


def _load_plugin(point: EntryPoint) -> None:
    """Register the method an entry point names (a Method subclass, or a factory returning one)."""
    package = point.dist.name if point.dist is not None else point.value.split(":")[0]
    try:
        found = point.load()
        cls = found if isinstance(found, type) else found()
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"{point.value} gives {cls!r}, not a subclass of coun_tui.engine.methods.Method")
        for attr in ("name", "summary"):
            if not isinstance(getattr(cls, attr, None), str):
                raise TypeError(f"{cls.__name__} declares no {attr} (a string)")
        register(cls)
    except Exception as exc:  # a broken plugin must not stop the lab
        line = (f"warning: method plugin {point.name!r} of package {package} not loaded: "
                f"{type(exc).__name__}: {exc}".replace("\n", " "))
        PLUGIN_PROBLEMS.append(line)
        print(line, file=sys.stderr)


__all__ = ["Batch", "COMMON_PARAMS", "PLUGIN_GROUP", "PLUGIN_PROBLEMS", "Context", "Method", "Param", "Search",
           "all_methods", "all_params", "check_hparams", "check_method", "flag", "get", "register", "searched"]
