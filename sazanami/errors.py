"""Exceptions raised by sazanami; the CLI and server turn them into user messages."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable


class SazanamiError(Exception):
    """Base class of every error sazanami raises on purpose."""


class ParameterError(SazanamiError, ValueError):
    """A parameter is out of range or of the wrong kind.

    ``param`` names the offending field so the server can report it.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFoundError(SazanamiError):
    """A model name or path could not be resolved."""


def _interval(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """``[low, high]`` in interval notation; a missing bound is -inf or inf, integers exact."""

    def bound(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else bound(low)}, {'inf' if high is None else bound(high)}{right}"


def check_range(
    param: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ParameterError`` unless ``value`` lies in the interval.

    The message states the interval in the notation that matches the check,
    e.g. ``top_p must be in (0, 1], got 1.5``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(param, f"{param} must be a number, got {value!r}")
    if value != value:  # NaN
        raise ParameterError(param, f"{param} must be a number, got nan")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        interval = _interval(low, high, low_open, high_open)
        raise ParameterError(param, f"{param} must be in {interval}, got {value!r}")


def check_int(param: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a bool) in [low, high]; else ``ParameterError``.

    For parameters kept as given (dataclass fields, options): only a real ``int`` passes.
    Messages: ``seed must be an integer, got 'x'``, ``n must be in [1, 256], got 0``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(param, f"{param} must be an integer, got {value!r}")
    check_range(param, value, low, high)
    return value


def check_index(param: str, value: object, low: int, high: int | None = None) -> int:
    """Any integer-like ``value`` (NumPy and torch integers too, not bools) as an ``int`` in [low, high].

    For sizes and indices handed to array code; the message names the range either way:
    ``streams must be an integer in [1, inf), got 2.5``.
    """
    message = f"{param} must be an integer in {_interval(low, high)}, got "
    if isinstance(value, (bool, float)):
        raise ParameterError(param, message + repr(value))
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ParameterError(param, message + repr(value)) from None
    if v < low or (high is not None and v > high):
        raise ParameterError(param, message + repr(v))
    return v


def check_known(
    keys: Iterable[str],
    known: Iterable[str],
    what: str,
    *,
    where: str | None = None,
    prefix: str = "",
    error: Callable[[str, str], Exception] = ParameterError,
) -> None:
    """Raise for the first key (in sorted order) of ``keys`` that is not in ``known``.

    The one unknown-field check of every object read from a mapping (parameters, fluctuations,
    budgets, tree nodes). The message names the key, where it was and what is known, in
    ``known``'s order: ``unknown fluctuation field 'colour'; known: temperature, logits, ...``,
    ``unknown field 'gamma' in fluctuation.draw; known: beta, layers, ...``. The error's
    ``param`` is ``prefix + key`` (``draw.gamma``); ``error(param, message)`` builds it
    (``ParameterError`` by default).
    """
    known = list(known)
    allowed = set(known)
    unknown = sorted(k for k in keys if k not in allowed)
    if unknown:
        key = unknown[0]
        place = f" in {where}" if where else ""
        raise error(prefix + key, f"unknown {what} {key!r}{place}; known: {', '.join(known)}")
