"""Stochastic beam search as a decoding choice: :class:`BeamParams` (width, noise color).

Kept apart from the sampler's parameters and from :mod:`sazanami.beams` (the algorithm),
as vLLM keeps ``BeamSearchParams`` apart from ``SamplingParams``: it needs nothing but
validation, so :class:`~sazanami.params.SamplingParams` can carry one (``params.beams``)
without importing the engine. The fluctuation spelling ``{"beams": {"width", "beta"}}``
is converted to it where a fluctuation spec is parsed
(:meth:`sazanami.fluctuation.Fluctuation.parse_with_beams`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, check_int, check_range


@dataclass(frozen=True)
class BeamParams:
    """Gumbel-top-k stochastic beam search (Kool et al. 2019): ``width`` samples without replacement."""

    width: int = 4
    """Beam width k: samples per prompt; in [1, 64]."""
    beta: float = 1.0
    """Color of the Gumbel noise: 0 white, 1 pink, 2 brown; in [0, 2]."""

    def __post_init__(self) -> None:
        check_int("beams.width", self.width, 1, 64)
        check_range("beams.beta", self.beta, 0, 2)

    @property
    def colored(self) -> float | None:
        """β of the colored Gumbel noise, None for white."""
        return self.beta if self.beta > 0 else None

    @classmethod
    def parse(cls, spec: Any) -> BeamParams:
        """From a BeamParams, ``{"width", "beta"}`` (a JSON string too) or a width."""
        if isinstance(spec, BeamParams):
            return spec
        if isinstance(spec, str) and spec.strip().isdigit():
            spec = int(spec)
        elif isinstance(spec, str) and spec.strip().startswith("{"):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise ParameterError("beams", f"beams is not valid JSON: {exc}") from exc
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls(width=spec)
        if isinstance(spec, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise ParameterError(
                    f"beams.{unknown[0]}", f"unknown field {unknown[0]!r} in beams; known: {', '.join(sorted(known))}"
                )
            return cls(**spec)
        raise ParameterError("beams", f"beams must be an object {{width, beta}} or a width, got {spec!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
