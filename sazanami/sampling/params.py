"""Generation parameters: one validated, frozen object shared by API, CLI and server."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, check_int, check_known, check_range
from sazanami.sampling.beam_params import BeamParams, DecodeParams, split_beams
from sazanami.speculative.spec import Speculative

MAX_TOKENS_LIMIT = 32768
MAX_N = 256
MAX_TOP_K = 2**31 - 1

INT_RANGES: dict[str, tuple[int, int]] = {
    "n": (1, MAX_N),
    "seed": (0, 2**63 - 1),
    "max_tokens": (1, MAX_TOKENS_LIMIT),
    "top_k": (0, MAX_TOP_K),
    "dry_allowed_length": (1, 1000),
    "dry_penalty_last_n": (-1, 1_000_000),
    "top_logprobs": (0, 20),
}
"""Closed range of every integer field of :class:`SamplingParams` (None, where allowed, is not checked)."""


@dataclass(frozen=True)
class SamplingParams(DecodeParams):
    """How one request is decoded. Every field is validated on construction.

    The fields it shares with :class:`~sazanami.sampling.beam_params.BeamParams` (logits processing,
    stops, lengths, seed) are declared once, in :class:`~sazanami.sampling.beam_params.DecodeParams`;
    the ones below are the sampler's own.
    """

    n: int = 1
    """Variants per prompt, each with its own seed derived from ``seed``; in [1, 256]."""
    mirostat_tau: float = 0.0
    """Mirostat v2 target surprise in bits; 0 disables; in [0, 100]."""
    mirostat_eta: float = 0.1
    """Mirostat v2 learning rate; in (0, 1]."""
    trace: bool = False
    """Record a per-step trace per row (temperature, entropy, token log-prob, noise)."""
    fluctuation: Any = None
    """Where colored noise enters decoding: a ``Fluctuation``, preset name, dict or None."""
    beams: Any = None
    """Stochastic beam search instead of sampling: ``{"width", "beta"}`` (a ``BeamParams``) or None;
    ``width`` samples per prompt without replacement (a fluctuation's ``beams`` entry sets it too)."""
    xtc_probability: float = 0.0
    """XTC (exclude top choices): chance per step, from the row's own seeded generator; 0 disables; in [0, 1]."""
    xtc_threshold: float = 0.1
    """XTC: tokens with probability ≥ this are top choices; all but the least likely of them go; in [0, 1] (> 0.5 never acts)."""
    speculative: Any = None
    """Exact speculative decoding: draft sources prompt, corpus, siblings — a name, a list,
    ``{"sources", "max_draft" (in [1, 64]), "corpus" (an index folder)}`` or ``prompt,corpus=PATH,max_draft=16``;
    the tokens are those of plain decoding, fewer forward passes where the output copies; None: off."""

    def __post_init__(self) -> None:
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if not (value is None and name == "seed"):
                check_int(name, value, low, high)
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
        if self.beams is not None:
            object.__setattr__(self, "beams", BeamParams.parse(self.beams))
        if self.fluctuation is not None:
            fluctuation, beams = split_beams(self.fluctuation)
            object.__setattr__(self, "fluctuation", fluctuation)
            if beams is not None:  # the fluctuation spelling of beams
                object.__setattr__(self, "beams", beams)

        object.__setattr__(self, "logit_bias", _logit_bias(self.logit_bias))
        check_range("top_n_sigma", self.top_n_sigma, 0, 100)
        check_range("xtc_probability", self.xtc_probability, 0, 1)
        check_range("xtc_threshold", self.xtc_threshold, 0, 1)
        check_range("dry_multiplier", self.dry_multiplier, 0, 100)
        check_range("dry_base", self.dry_base, 1, 10)
        breakers = self.dry_sequence_breakers
        if isinstance(breakers, str):
            breakers = (breakers,)
        if not isinstance(breakers, (tuple, list)) or not all(isinstance(s, str) and s for s in breakers):
            raise ParameterError(
                "dry_sequence_breakers", f"dry_sequence_breakers must be a list of non-empty strings, got {breakers!r}"
            )
        if len(breakers) > 16:
            raise ParameterError(
                "dry_sequence_breakers", f"dry_sequence_breakers must have at most 16 strings, got {len(breakers)}"
            )
        object.__setattr__(self, "dry_sequence_breakers", tuple(breakers))
        object.__setattr__(self, "speculative", Speculative.parse(self.speculative))

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["stop"] = list(self.stop)
        if self.fluctuation is not None:
            out["fluctuation"] = self.fluctuation.to_dict()
        if self.beams is not None:
            out["beams"] = self.beams.to_dict()
        out["dry_sequence_breakers"] = list(self.dry_sequence_breakers)
        if self.logit_bias is not None:
            out["logit_bias"] = {str(k): v for k, v in self.logit_bias}
        if self.speculative is not None:
            out["speculative"] = self.speculative.to_dict()
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """Build from a mapping; unknown keys raise ``ParameterError``."""
        check_known(data, cls.field_names(), "parameter")
        return cls(**data)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 and self.mirostat_tau == 0


def _logit_bias(value: Any) -> tuple[tuple[int, float], ...] | None:
    """``logit_bias`` as sorted (token id, bias) pairs; takes OpenAI's {"id": bias} or pairs."""
    if value is None:
        return None
    if isinstance(value, str):  # the CLI's JSON form
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ParameterError("logit_bias", f"logit_bias is not valid JSON: {exc}") from None
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(k, v) for k, v in items]
    except (TypeError, ValueError):
        raise ParameterError("logit_bias", f"logit_bias must map token ids to biases, got {value!r}") from None
    out: dict[int, float] = {}
    for key, bias in pairs:
        tid = key
        if isinstance(key, str):
            tid = int(key) if key.strip().isdigit() else key
        if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < 2**31:
            raise ParameterError("logit_bias", f"logit_bias keys must be token ids in [0, 2147483647], got {key!r}")
        check_range("logit_bias", bias, -100, 100)
        out[tid] = float(bias)
    if len(out) > 1024:
        raise ParameterError("logit_bias", f"logit_bias must have at most 1024 entries, got {len(out)}")
    return tuple(sorted(out.items())) or None
