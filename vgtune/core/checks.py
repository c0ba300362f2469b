"""Argument checks shared by every config: one rule per kind of value, one message shape.

Each raises `OptionError` (a `vgtune.InputError`, so a ValueError) saying what was given and what is
allowed, e.g. `depth must be an integer >= 1, got True`, and carrying the
option's name, the rule it broke and the valid names as data: the spec turns
it into a `SpecError` at the option's key path without reading its text.
Booleans are never numbers here (YAML's `yes` would otherwise pass as 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from vgtune.exceptions import InputError


class OptionError(InputError):
    """One option's value is not allowed (an `InputError` whose `path` is the option's name). str(): the
    problem, which names the option, then `; valid: ...` and the hint."""

    prefix_path = False

    def __init__(self, option: str, problem: str, valid: Iterable[str] = (), hint: str = "", rule: str = ""):
        self.option = option  # the option's name (a TrainConfig field, `model`, `dataset`, ...)
        self.rule = rule  # the problem without the option's name (`must be ...`), where it reads as one
        super().__init__(option, problem, valid, hint)  # problem: the sentence saying what is wrong, naming it


def invalid(option: str, rule: str) -> OptionError:
    """The error `option rule`, e.g. `depth must be an integer >= 1, got 0`."""
    return OptionError(option, f"{option} {rule}", rule=rule)


def keyed(option: str, rule: str) -> OptionError:
    """The error `option: rule`, for a message that names its option as a spec key (`model: cannot import ...`)."""
    return OptionError(option, f"{option}: {rule}", rule=rule)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(name, f"must be an integer >= {low}, got {value!r}")
    return value


def number(name: str, value: Any, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in [low, high]; `*_open` excludes that end."""
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise invalid(name, f"must be a number{_range(low, high, low_open, high_open)}, got {value!r}")
    return value


def _range(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(name, f"must be true or false, got {value!r}")
    return value


def choice(name: str, value: Any, valid: Iterable[str]) -> str:
    valid = list(valid)
    if value not in valid:
        raise OptionError(name, f"unknown {name} {value!r}", valid)
    return value
