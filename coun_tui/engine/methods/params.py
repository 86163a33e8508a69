"""What a method declares, readable without torch: its hyperparameters (Param, each with its default,
type, valid range and help), name, summary and how it trains. `--help`, `coun-lab methods` and the
checks of a command's input read only this module, so they answer before torch loads; the training
hooks (methods/base.py Method) build on it."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from coun_tui.engine import UserError

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Search:
    """Where `coun-lab tune` looks for a hyperparameter: [low, high], log-uniform when `log`."""

    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"[{_num(self.low)}, {_num(self.high)}]" + (" log" if self.log else "")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: default (its type is the parameter's type), help, and valid values:
    bounds `ge` (>=), `gt` (>), `le` (<=), `lt` (<) for numbers, `choices` for text; `search`: the
    range `coun-lab tune` searches (None: it keeps the default)."""

    default: int | float | str | bool
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    search: Search | None = None

    def __post_init__(self) -> None:
        if self.search is not None:  # a range outside the valid values is a mistake in the code
            self.check_search(self.search)

    def check_search(self, search: Search) -> Search:
        """`search` if both its ends are valid values and low < high (and low > 0 when log);
        raises ValueError("...") otherwise."""
        if self.kind not in (int, float):
            raise ValueError(f"only numbers can be searched, not {self.describe()}")
        for end in (search.low, search.high):
            try:
                self.parse(end)
            except ValueError as exc:
                raise ValueError(f"range end {_num(end)} is outside the valid values: {exc}") from None
        if not search.low < search.high:
            raise ValueError(f"the range's low end {_num(search.low)} must be below its high end {_num(search.high)}")
        if search.log and search.low <= 0:
            raise ValueError("a log range must start above 0")
        return search

    @property
    def kind(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        """What a valid value is, e.g. "a number > 0", "an integer >= 1", "a number in [0, 1)"."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices) if self.choices else "text"
        what = "an integer" if self.kind is int else "a number"
        low = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None)
        high = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None)
        if low and high:
            return f"{what} in {low}, {high}"
        if low:
            return f"{what} {'>=' if low[0] == '[' else '>'} {low[1:]}"
        if high:
            return f"{what} {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        return what

    def parse(self, value: Any) -> int | float | str | bool:
        """`value` (typed, or text from a flag, the app or --set) as the declared type, checked;
        raises ValueError("expected ...") otherwise."""
        wrong = ValueError(f"expected {self.describe()}")
        text = value.strip() if isinstance(value, str) else None
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in TRUE + FALSE:
                return text.lower() in TRUE
            raise wrong
        if self.kind is str:
            if text is None or (self.choices and text not in self.choices) or not text:
                raise wrong
            return text
        if isinstance(value, bool):
            raise wrong
        if self.kind is int:
            if text is not None and re.fullmatch(r"[+-]?[0-9]+", text):
                value = int(text)
            if not isinstance(value, int):
                raise wrong
            number: int | float = value
        else:
            if text is not None:
                try:
                    value = float(text)
                except ValueError:
                    raise wrong from None
            if not isinstance(value, (int, float)):
                raise wrong
            number = float(value)
            if not math.isfinite(number):
                raise wrong
        if ((self.ge is not None and number < self.ge) or (self.gt is not None and number <= self.gt)
                or (self.le is not None and number > self.le) or (self.lt is not None and number >= self.lt)):
            raise wrong
        return number


def _num(x: float) -> str:
    return f"{x:g}"


# Every method's optimiser: the CoUn paper's SGD (momentum 0.9, weight decay 5e-4, cosine decay).
# Search ranges: the paper's where shared/reference/coun-method.md gives them (lr in [0.01, 0.1],
# lambda in [0.1, 6], tau in (0, 0.3]); lr is searched a decade lower too, where SalUn, RL and Bad
# Teacher keep their defaults.
OPTIMISER_PARAMS: dict[str, Param] = {
    "epochs": Param(10, "training epochs", ge=1),
    "lr": Param(0.01, "SGD learning rate at the start of the schedule", gt=0, search=Search(1e-3, 0.1, log=True)),
    "batch_size": Param(128, "samples per step (BatchNorm needs 2 or more)", ge=2),
    "momentum": Param(0.9, "SGD momentum", ge=0, lt=1),
    "weight_decay": Param(5e-4, "SGD weight decay", ge=0),
    "schedule": Param("cosine", "learning-rate schedule", choices=("cosine", "step", "constant")),
    "min_lr": Param(1e-4, "where the cosine schedule ends", ge=0),
}
# CoUn's contrastive term, which `--cl` adds to any method.
CONTRASTIVE_PARAMS: dict[str, Param] = {
    "lambda": Param(1.0, "weight of CoUn's contrastive term", ge=0, search=Search(0.1, 6.0, log=True)),
    "tau": Param(0.1, "temperature of CoUn's contrastive term", gt=0, search=Search(0.02, 0.3)),
}
COMMON_PARAMS: dict[str, Param] = {**OPTIMISER_PARAMS, **CONTRASTIVE_PARAMS}



class Declared:
    """A method's declarations (Method adds the training hooks)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # New defaults of common hyperparameters (plain values) and the method's own (Param).
    params: ClassVar[dict[str, Any]] = {}
    # Which samples a step trains on: "retain", "forget", "retain+forget" (a retain batch plus a
    # cycled forget batch) or "mixed" (retain and relabelled forget samples shuffled together).
    stream: ClassVar[str] = "retain"
    always_cl: ClassVar[bool] = False  # CoUn: the contrastive term is the method
    from_scratch: ClassVar[bool] = False  # Retrain: start from freshly initialised weights
    # Why `--cl` cannot apply (no training loop, or no retain data by design); None: it can.
    cl_refusal: ClassVar[str | None] = None

    @classmethod
    def declared(cls) -> dict[str, Param]:
        """Every hyperparameter the method takes, with this method's defaults."""
        out = dict(COMMON_PARAMS)
        for key, value in cls.params.items():
            if isinstance(value, Param):
                out[key] = value
            elif key in COMMON_PARAMS:
                out[key] = replace(COMMON_PARAMS[key], default=value)
            else:
                raise TypeError(f"method {cls.__name__}: declare its own hyperparameter {key!r} as "
                                f"Param(default, help, ...) (see coun_tui/engine/methods/base.py)")
        return out

    @classmethod
    def all_defaults(cls) -> dict[str, Any]:
        return {key: p.default for key, p in cls.declared().items()}


def flag(key: str) -> str:
    """The command-line flag of a hyperparameter: batch_size -> --batch-size."""
    return "--" + key.replace("_", "-")


def check_hparams(method: type[Declared], values: dict[str, Any],
                  label: Callable[[str], str] = flag) -> dict[str, Any]:
    """`values` checked against `method`'s declarations and converted to their types; raises
    UserError (one line naming the value, what is valid and what it is for) otherwise."""
    declared = method.declared()
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise UserError(f"{method.name} has no hyperparameter {', '.join(unknown)}; "
                        f"it takes: {', '.join(sorted(declared))} (see `coun-lab methods`)")
    out = {}
    for key, value in values.items():
        try:
            out[key] = declared[key].parse(value)
        except ValueError as exc:
            shown = value.strip() if isinstance(value, str) else value
            raise UserError(f"{label(key)} {shown!r}: {exc} ({declared[key].help})") from None
    return out
