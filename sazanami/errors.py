"""Exceptions raised by sazanami; the CLI and server turn them into user messages."""

from __future__ import annotations


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
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ParameterError(param, f"{param} must be in {left}{lo}, {hi}{right}, got {value!r}")
