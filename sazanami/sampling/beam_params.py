"""Stochastic beam search's parameters: :class:`BeamParams`, the request of
:meth:`Engine.beam_search <sazanami.engine.loop.Engine.beam_search>`.

Kept apart from :class:`~sazanami.sampling.params.SamplingParams`, as vLLM keeps ``BeamSearchParams``
apart: a beam search takes the sampler's logits processing (bias, penalties, DRY,
temperature, truncation) but draws with its own Gumbel-top-k, so the sampler's draw-side
fields have no meaning for it. Every field here is honoured; the sampling fields a beam
search cannot honour are not fields, and asking for one is an error naming it
(:data:`NOT_FOR_BEAMS`).

The older spelling, ``SamplingParams(beams={"width", "beta"}, ...)`` (and a fluctuation's
``{"beams": {...}}`` entry), is deprecated but still runs: :meth:`BeamParams.from_sampling`
turns such parameters into a ``BeamParams``, refusing by name what beams do not honour.

The fields both take are declared once, in :class:`DecodeParams`, which ``BeamParams`` and
``SamplingParams`` extend. This module imports no other parameter module (``SamplingParams``
holds the deprecated ``beams`` field, so it sits below it): the shared fields' ranges are checked
by ``SamplingParams``'s own checks when the search starts (:meth:`BeamParams.sampling_fields`),
so each range is written once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sazanami.errors import ParameterError, check_int, check_known, check_range
from sazanami.noise.fluctuation import Entry, Fluctuation

NOT_FOR_BEAMS: dict[str, str] = {
    "n": "a beam search returns `width` samples per prompt: set width",
    "fluctuation": "a beam search's noise is its Gumbel noise: set beta for its color",
    "mirostat_tau": "mirostat steers one sampled sequence's surprise; beams are drawn by Gumbel-top-k",
    "mirostat_eta": "mirostat steers one sampled sequence's surprise; beams are drawn by Gumbel-top-k",
    "xtc_probability": "XTC's coin is a per-row random draw that beams cannot fork",
    "speculative": "beams advance every branch each step; draft verification is for sampled rows",
    "xtc_threshold": "XTC's coin is a per-row random draw that beams cannot fork",
    "trace": "beam steps are not traced (each sample carries its perturbed and sequence log-probs in `tag`)",
}
"""Sampling fields a beam search does not honour, with the reason given in the error."""


@dataclass(frozen=True)
class DecodeParams:
    """The fields a sampled request and a beam search share, declared once: how each step's
    logits are processed (bias, penalties, DRY, temperature, truncation), when a sequence stops,
    what is reported and the seed. :class:`~sazanami.sampling.params.SamplingParams` and
    :class:`BeamParams` both extend it; ``SamplingParams`` checks every range."""

    seed: int | None = None
    """Request seed; variant i uses ``derive_seed(seed, i)``. None draws one from the OS (reported back)."""
    max_tokens: int = 128
    """New tokens per variant at most (injected tool results do not count); in [1, 32768]."""
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
    stop: tuple[str, ...] = ()
    """Strings that end a variant (not included in its text); at most 16."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks)."""
    logit_bias: Any = None
    """OpenAI's logit_bias: {token id: bias}, each bias in [-100, 100], added to the logits before every other step."""
    top_n_sigma: float = 0.0
    """top-nσ: keep tokens whose logit ≥ max − n·σ (σ: std of the finite logits); 0 disables; in [0, 100]."""
    dry_multiplier: float = 0.0
    """DRY: penalty scale for continuing a repeated sequence; 0 disables; in [0, 100]."""
    dry_base: float = 1.75
    """DRY: penalty = multiplier · base^(repeat length − allowed length); in [1, 10]."""
    dry_allowed_length: int = 2
    """DRY: repeats shorter than this are not penalised; in [1, 1000]."""
    dry_penalty_last_n: int = -1
    """DRY: tokens scanned back for repeats (prompt included); -1 all, 0 disables DRY; in [-1, 1000000]."""
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")
    """DRY: a repeat never extends across a token whose text contains one of these; at most 16 strings."""
    top_logprobs: int = 0
    """Most likely alternatives reported per generated token (model's raw log_softmax); in [0, 20]."""


@dataclass(frozen=True)
class BeamParams(DecodeParams):
    """Gumbel-top-k stochastic beam search (Kool et al. 2019): ``width`` samples without replacement
    per prompt, best perturbed value first. Every field is honoured: the :class:`DecodeParams`
    fields act per beam (penalties and DRY count each beam's own tokens, a stop string ends one
    beam, ``max_tokens`` and ``seed`` are per sample and per search)."""

    temperature: float = 1.0
    """Softmax temperature of each step's distribution; 0 means 1 (beams are drawn, not argmaxed); in [0, 100]."""
    width: int = 4
    """Beam width k: samples per prompt; in [1, 64]."""
    beta: float = 1.0
    """Color of the Gumbel noise: 0 white, 1 pink, 2 brown; in [0, 2]."""

    def __post_init__(self) -> None:
        check_int("beams.width", self.width, 1, 64)
        check_range("beams.beta", self.beta, 0, 2)
        for name in ("stop", "dry_sequence_breakers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @property
    def colored(self) -> float | None:
        """β of the colored Gumbel noise, None for white."""
        return self.beta if self.beta > 0 else None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def sampling_fields(self) -> dict[str, Any]:
        """The fields a beam search shares with ``SamplingParams`` (its logits processing, stop
        strings, lengths, seed): what the engine builds the search's sampler from, whose checks
        then validate them."""
        return {k: getattr(self, k) for k in self.field_names() if k not in ("width", "beta")}

    @classmethod
    def parse(cls, spec: Any) -> BeamParams:
        """From a BeamParams, a mapping of its fields (a JSON string too) or a width."""
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
            return cls.from_dict(spec)
        raise ParameterError("beams", f"beams must be an object {{width, beta, ...}} or a width, got {spec!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeamParams:
        """Build from a mapping; a sampling field beams do not honour, or an unknown key, is an error naming it."""
        for key in data:
            if key in NOT_FOR_BEAMS:
                raise _not_for_beams(key)
        check_known(data, cls.field_names(), "beam search parameter")
        return cls(**data)

    @classmethod
    def from_sampling(cls, params: Any) -> BeamParams:
        """The beam search that deprecated ``SamplingParams(beams=...)`` asks for (``params.beams``
        gives width and β, ``params`` the rest).

        A sampling field a beam search does not honour (:data:`NOT_FOR_BEAMS`), set away from
        its default, is an error naming it; so is a field set differently in both places.
        """
        beams = params.beams if params.beams is not None else cls()
        defaults = type(params)()
        for name in NOT_FOR_BEAMS:
            if getattr(params, name) != getattr(defaults, name):
                raise _not_for_beams(name)
        plain = cls()
        shared = {}
        for name in beams.sampling_fields():
            given, own = getattr(params, name), getattr(beams, name)
            if own != getattr(plain, name) and own != given:
                raise ParameterError(
                    f"beams.{name}", f"{name} is set both in beams ({own!r}) and in the parameters ({given!r})"
                )
            shared[name] = given
        return dataclasses.replace(beams, **shared)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stop"] = list(self.stop)
        out["dry_sequence_breakers"] = list(self.dry_sequence_breakers)
        if self.logit_bias is not None:
            pairs = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
            out["logit_bias"] = {str(k): v for k, v in pairs}
        return out


def _not_for_beams(name: str) -> ParameterError:
    return ParameterError(name, f"{name} is not a beam search parameter: {NOT_FOR_BEAMS[name]}")


def split_beams(spec: Any) -> tuple[Fluctuation | None, BeamParams | None]:
    """:meth:`Fluctuation.parse <sazanami.noise.fluctuation.Fluctuation.parse>`, also accepting a ``beams`` entry (``{"width", "beta"}``, β defaults to 1):
    the fluctuation without it (None when nothing else is on) and it as a ``BeamParams``."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ParameterError("fluctuation", f"fluctuation is not valid JSON: {exc}") from exc
        elif Path(text).suffix == ".json" and Path(text).exists():
            spec = json.loads(Path(text).read_text())
    if not isinstance(spec, dict) or "beams" not in spec:
        return Fluctuation.parse(spec), None
    rest = dict(spec)
    entry = rest.pop("beams")
    beams = None
    if entry is not None and entry is not False:
        entry = {} if entry is True else entry
        if not isinstance(entry, dict):
            raise ParameterError("beams", f"fluctuation.beams must be an object, got {entry!r}")
        known = {f.name for f in dataclasses.fields(Entry)} | {"width"}
        check_known(entry, sorted(known), "field", where="fluctuation.beams", prefix="beams.")
        Entry(**{k: v for k, v in entry.items() if k not in ("width", "layers")}).validate("beams")
        beams = BeamParams(width=entry.get("width", 4), beta=entry.get("beta", 1.0))
    fl = Fluctuation.parse(rest) if set(rest) - {"max_steps", "noise_version"} else None
    return (fl if fl is None or fl.active else None), beams
