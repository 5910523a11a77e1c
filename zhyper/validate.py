"""Checks of numeric options, with the error wording in one place.

Every check takes the option's name and its value, returns the value when it is acceptable and
otherwise raises ``OptionError`` (a ``ValueError``) that names the option, the value and what is
expected::

    --tflops: expected a finite number > 0, got -5.0

``option(check)`` turns a check into an ``argparse`` ``type=``: argparse then prints
``argument --tflops: expected a finite number > 0, got '-5'`` and exits with status 2.
Library functions call the checks directly, so that a caller from Python gets the same wording.
NaN and ±inf are refused by every numeric check (none of zhyper's options means anything there).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Iterable


class OptionError(ValueError):
    """An option's value is outside what it accepts; ``str()`` names the option, the value, what is expected."""

    def __init__(self, name: str | None, value, expected: str):
        self.name, self.value, self.expected = name, value, expected
        super().__init__(message(name, value, expected))


def message(name: str | None, value, expected: str) -> str:
    """The one wording of every refusal: ``<name>: expected <what>, got <value>``."""
    return f"{name + ': ' if name else ''}expected {expected}, got {value!r}"


def _number(name, value, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(name, value, expected)
    if not math.isfinite(value):
        raise OptionError(name, value, expected)
    return value


def finite(name: str | None, value):
    """Any finite number (not NaN, not ±inf, not a bool)."""
    return _number(name, value, "a finite number")


def positive(name: str | None, value):
    """A finite number > 0."""
    if _number(name, value, "a finite number > 0") <= 0:
        raise OptionError(name, value, "a finite number > 0")
    return value


def non_negative(name: str | None, value):
    """A finite number >= 0."""
    if _number(name, value, "a finite number >= 0") < 0:
        raise OptionError(name, value, "a finite number >= 0")
    return value


def in_range(name: str | None, value, low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A finite number within ``[low, high]`` (``(`` / ``)`` where ``low_open`` / ``high_open``)."""
    expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    _number(name, value, expected)
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        raise OptionError(name, value, expected)
    return value


def _integer(name, value, low: int, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(name, value, expected)
    return value


def positive_int(name: str | None, value) -> int:
    """An int >= 1 (not a bool, not a float)."""
    return _integer(name, value, 1, "an integer >= 1")


def non_negative_int(name: str | None, value) -> int:
    """An int >= 0 (not a bool, not a float)."""
    return _integer(name, value, 0, "an integer >= 0")


def int_in_range(name: str | None, value, low: int, high: int) -> int:
    """An int within ``[low, high]`` (not a bool, not a float)."""
    expected = f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(name, value, expected)
    return value


def one_of(name: str | None, value, choices: Iterable):
    """One of ``choices`` (compared with ==)."""
    choices = tuple(choices)
    if value not in choices:
        raise OptionError(name, value, f"one of {', '.join(map(repr, choices))}")
    return value


def positive_ints(name: str | None, values) -> tuple[int, ...]:
    """A non-empty sequence of ints >= 1."""
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise OptionError(name, values, "a non-empty list of integers >= 1")
    return values


def option(check: Callable, parse: Callable[[str], object] = float, **kwargs) -> Callable[[str], object]:
    """An argparse ``type=`` that parses the text with ``parse`` (float, int, ...) and applies ``check``.

    A value that does not parse, or that the check refuses, becomes ``argparse.ArgumentTypeError``
    worded by ``message`` with the text the user typed; argparse adds the option's name.
    """
    kind = "an integer" if parse is int else "a number"

    def parse_option(text: str):
        try:
            value = parse(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(message(None, text, kind)) from None
        try:
            return check(None, value, **kwargs)
        except OptionError as err:
            raise argparse.ArgumentTypeError(message(None, text, err.expected)) from None

    parse_option.__name__ = getattr(check, "__name__", "value")
    return parse_option


def int_list(check: Callable = positive_ints) -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type=`` for comma-separated integers (``125,250,500``), checked with ``check``."""

    def parse_list(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(message(None, text, "comma-separated integers")) from None
        try:
            return check(None, values)
        except OptionError as err:
            raise argparse.ArgumentTypeError(message(None, text, err.expected)) from None

    parse_list.__name__ = "integer list"
    return parse_list
