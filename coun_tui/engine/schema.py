"""Strict reading of JSON-like records into typed values, with one line for whatever is wrong.

Run records, checkpoint metadata and recorded forget sets are files we did not just write: they are
validated against their types (pydantic, strict: "3" is not 3, true is not 1) before use, and
damage becomes a RecordError naming the file, the place and the problem.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from coun_tui.engine import UserError

T = TypeVar("T")


class RecordError(UserError):
    """A damaged record: `where` (a file name), `detail` (what and where in it), and the fix."""

    def __init__(self, where: str, detail: str, fix: str = "") -> None:
        self.where, self.detail = where, detail
        super().__init__(f"{where} is damaged: {detail}" + (f"; {fix}" if fix else ""))

    @property
    def state(self) -> str:
        """A short visible state for a list of runs: "damaged: metrics.json line 1: ..."."""
        return f"damaged: {self.where.rsplit('/', 1)[-1]} {self.detail}"


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}


def _adapter(kind: object) -> TypeAdapter[Any]:
    if kind not in _ADAPTERS:  # building one costs milliseconds; records are read often
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def parse_json(kind: type[T], text: str | bytes, where: str, fix: str = "") -> T:
    """One JSON document as `kind`, strictly; RecordError otherwise."""
    try:
        value: T = _adapter(kind).validate_json(text, strict=True)
        return value
    except ValidationError as exc:
        raise RecordError(where, explain(exc), fix) from None


def parse_data(kind: type[T], data: Any, where: str, fix: str = "") -> T:
    """Already-decoded data (TOML, checkpoint metadata) as `kind`, with the same strict rules."""
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError) as exc:  # e.g. a TOML date where a number belongs
        raise RecordError(where, f"holds a value JSON cannot express ({exc})", fix) from None
    return parse_json(kind, text, where, fix)


def explain(exc: ValidationError) -> str:
    """The first problem of a validation error as a short phrase: where it is and what is wrong."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "json_invalid":
        why = str(first.get("ctx", {}).get("error", "invalid JSON"))
        m = re.search(r"(.*) at line (\d+) column (\d+)", why)
        return f"line {m.group(2)}: {m.group(1)} (not valid JSON)" if m else f"{why} (not valid JSON)"
    place = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    msg = msg[0].lower() + msg[1:]
    found = "" if first["type"] == "missing" else f", found {_short(first.get('input'))}"
    return (f"{place}: " if place else "") + msg + found + more


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
