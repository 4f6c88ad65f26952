"""How a config field is given on `tts-bench`'s command line: the CLI builds its options from these.

A field of `BenchConfig` (or of a dataclass it holds: `SweepConfig`, `MeasureSettings`, `OutputPaths`)
with `metadata=flag(...)` is one option, named after the field; `parse` turns the flag's value (of type
`text`, when that differs from the field's: a comma list, a range) into the field's type. Flags are listed
in `--help` by `order`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ttsrec.errors import UserError
from ttsrec.utils import common

__all__ = ["Flag", "flag", "parse_concurrency", "parse_int_list", "parse_modes"]


@dataclass(frozen=True)
class Flag:
    decls: tuple[str, ...]
    help: str
    order: int
    """Position in `--help`."""
    text: Any = None
    """The flag's own type where the field's differs (then `parse` is set); None: the field's."""
    parse: Callable[[Any], Any] | None = None
    text_default: Any = None
    """The flag's default where `parse` is set."""


def flag(*decls: str, help: str, order: int, text: Any = None, parse: Callable[[Any], Any] | None = None,
         text_default: Any = None) -> dict[str, Flag]:
    """A field's `metadata`: it is the option `decls`."""
    return {"flag": Flag(tuple(decls), help, order, text, parse, text_default)}


def parse_int_list(text: str, what: str) -> list[int]:
    """A required positive integer list (the shared parser; empty is an error here)."""
    values = common.parse_int_list(text, what)
    if not values:
        raise UserError(f"{what}: expected positive integers, got {text!r}")
    return values


def parse_concurrency(text: str) -> list[int]:
    """perf_analyzer's `start:end:step` (linear: 1:8:2 is 1,3,5,7), or a list `1,2,4,8`."""
    if ":" not in text:
        return parse_int_list(text, "--concurrency-range")
    parts = text.split(":")
    try:
        start, end, step = (int(p) for p in [*parts, "1"][:3]) if len(parts) in (2, 3) else (0, 0, 0)
    except ValueError:
        start = end = step = 0
    if start < 1 or end < start or step < 1:
        raise UserError(
            f"--concurrency-range: expected start:end[:step] with 1 <= start <= end, got {text!r}"
        )
    return list(range(start, end + 1, step))


def parse_modes(values: list[str]) -> list[str]:
    """Comma lists or repeated `--mode`s, flattened; `SweepConfig` says which names it takes."""
    return [m for v in values for m in v.replace(" ", "").split(",") if m]
