"""Generation parameters: one validated, frozen object shared by API, CLI and server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, check_range

MAX_TOKENS_LIMIT = 32768
MAX_N = 256
MAX_TOP_K = 2**31 - 1

INT_RANGES: dict[str, tuple[int, int]] = {
    "n": (1, MAX_N),
    "seed": (0, 2**63 - 1),
    "max_tokens": (1, MAX_TOKENS_LIMIT),
    "top_k": (0, MAX_TOP_K),
}
"""Closed range of every integer field of :class:`SamplingParams` (None, where allowed, is not checked)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. Every field is validated on construction."""

    n: int = 1
    """Variants per prompt, each with its own seed derived from ``seed``; in [1, 256]."""
    seed: int | None = None
    """Request seed; variant i uses ``derive_seed(seed, i)``. None draws one from the OS (reported back)."""
    max_tokens: int = 128
    """New tokens per variant at most; in [1, 32768]."""
    temperature: float = 0.7
    """Softmax temperature; 0 means greedy; in [0, 100]."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 disables; in [0, 2^31 − 1]."""
    top_p: float = 1.0
    """Nucleus sampling: smallest set with this much mass; in (0, 1]."""
    min_p: float = 0.0
    """Drop tokens with probability below min_p × the top probability; in [0, 1)."""
    typical_p: float = 1.0
    """Locally typical sampling mass (Meister et al., 2023); in (0, 1]."""
    repetition_penalty: float = 1.0
    """Divide positive / multiply negative logits of seen tokens by this; in (0, 10]."""
    presence_penalty: float = 0.0
    """Subtract from logits of tokens generated at least once; in [-2, 2]."""
    frequency_penalty: float = 0.0
    """Subtract × count of each generated token; in [-2, 2]."""
    dynatemp_range: float = 0.0
    """llama.cpp dynamic temperature: T varies in [T−r, T+r] with normalised entropy; in [0, 100]."""
    dynatemp_exponent: float = 1.0
    """Exponent on the normalised entropy for dynamic temperature; in (0, 100]."""
    mirostat_tau: float = 0.0
    """Mirostat v2 target surprise in bits; 0 disables; in [0, 100]."""
    mirostat_eta: float = 0.1
    """Mirostat v2 learning rate; in (0, 1]."""
    stop: tuple[str, ...] = ()
    """Strings that end a variant (not included in its text); at most 16."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks)."""
    trace: bool = False
    """Record a per-step trace per row (temperature, entropy, token log-prob, noise)."""
    fluctuation: Any = None
    """Where colored noise enters decoding: a ``Fluctuation``, preset name, dict or None."""

    def __post_init__(self) -> None:
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if not (value is None and name == "seed"):
                _check_int(name, value, low, high)
        check_range("temperature", self.temperature, 0, 100)
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("min_p", self.min_p, 0, 1, high_open=True)
        check_range("typical_p", self.typical_p, 0, 1, low_open=True)
        check_range("repetition_penalty", self.repetition_penalty, 0, 10, low_open=True)
        check_range("presence_penalty", self.presence_penalty, -2, 2)
        check_range("frequency_penalty", self.frequency_penalty, -2, 2)
        check_range("dynatemp_range", self.dynatemp_range, 0, 100)
        check_range("dynatemp_exponent", self.dynatemp_exponent, 0, 100, low_open=True)
        check_range("mirostat_tau", self.mirostat_tau, 0, 100)
        check_range("mirostat_eta", self.mirostat_eta, 0, 1, low_open=True)
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) and s for s in stop):
            raise ParameterError("stop", f"stop must be a list of non-empty strings, got {self.stop!r}")
        if len(stop) > 16:
            raise ParameterError("stop", f"stop must have at most 16 strings, got {len(stop)}")
        object.__setattr__(self, "stop", tuple(stop))
        if self.fluctuation is not None:
            from sazanami.fluctuation import Fluctuation

            object.__setattr__(self, "fluctuation", Fluctuation.parse(self.fluctuation))

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["stop"] = list(self.stop)
        if self.fluctuation is not None:
            out["fluctuation"] = self.fluctuation.to_dict()
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """Build from a mapping; unknown keys raise ``ParameterError``."""
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter {unknown[0]!r}; known: {', '.join(cls.field_names())}")
        return cls(**data)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 and self.mirostat_tau == 0


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        hi = "inf)" if high is None else f"{high}]"
        raise ParameterError(name, f"{name} must be in [{low}, {hi}, got {value!r}")
