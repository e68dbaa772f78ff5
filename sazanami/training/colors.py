"""Colors: a noise color (spectral exponent β) with a strength, parsed from ``pink:0.3``.

Every training fluctuation takes one: the CLI's ``--lr-noise pink:0.3``, ``--grad-noise
brown:0.01``, ``--embed-noise white:5`` are all :meth:`Color.parse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sazanami.errors import ParameterError, check_range

__all__ = ["NAMED_BETAS", "Color", "check_positive"]

NAMED_BETAS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
"""Names accepted in place of β."""


def check_positive(param: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float in (0, inf) (or [0, inf)), else ParameterError."""
    check_range(param, value, 0, None, low_open=not allow_zero)  # type: ignore[arg-type]
    if math.isinf(float(value)):  # type: ignore[arg-type]
        raise ParameterError(param, f"{param} must be finite, got {value!r}")
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Color:
    """A noise color and its strength."""

    beta: float
    """Spectral exponent in [0, 2]: 0 white, 1 pink, 2 brown."""
    scale: float
    """Strength, ≥ 0; its meaning is the consumer's (σ of the LR, η of gradient noise, α of NEFTune)."""

    def __post_init__(self) -> None:
        check_range("beta", self.beta, 0, 2)
        check_positive("scale", self.scale, allow_zero=True)

    @classmethod
    def parse(cls, text: str, param: str = "color") -> Color:
        """``NAME:SCALE`` or ``BETA:SCALE`` (``pink:0.3``, ``1.5:0.3``); errors name ``param``."""
        head, sep, tail = str(text).partition(":")
        if not sep:
            raise ParameterError(param, f"{param} must be COLOR:SCALE (e.g. pink:0.3), got {text!r}")
        try:
            beta = NAMED_BETAS[head] if head in NAMED_BETAS else float(head)
            scale = float(tail)
        except ValueError:
            raise ParameterError(
                param,
                f"{param} must be COLOR:SCALE with COLOR in {{{', '.join(NAMED_BETAS)}}} or β in [0, 2], got {text!r}",
            ) from None
        try:
            return cls(beta, scale)
        except ParameterError as exc:
            raise ParameterError(param, f"{param}: {exc}") from None

    def __str__(self) -> str:
        names = {v: k for k, v in NAMED_BETAS.items()}
        return f"{names.get(self.beta, f'{self.beta:g}')}:{self.scale:g}"
