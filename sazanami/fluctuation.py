"""Where colored noise enters decoding, and how strongly.

A :class:`Fluctuation` is a validated, JSON-serialisable description with one
optional entry per point of entry:

1. ``temperature`` — T_t = clip(T0 · exp(σ · x_t), t_min, t_max), x one stream per row;
2. ``logits`` — logits + σ · std(logits) · x_t, one stream per (row, vocabulary entry);
3. ``draw`` — Gumbel-max with Gumbel noise made from colored Gaussian noise through
   the normal CDF: each step is still an exact sample of the processed distribution,
   while the randomness is correlated in time (σ unused);
4. ``hidden`` / ``embedding`` — colored noise (streams over hidden dimensions, steps over
   generated tokens) added to the output of chosen layers or to the input embeddings,
   scaled so its norm is σ × the hidden state's norm.

Presets: see :data:`PRESETS`. ``Fluctuation.parse`` accepts a preset name, a dict,
a JSON string, a path to a ``.json`` file or a ``Fluctuation``.

Stochastic beam search is a decoding choice of its own (``SamplingParams.beams``, a
:class:`~sazanami.beam_params.BeamParams`); the older spelling as a fluctuation entry,
``{"beams": {"width", "beta"}}``, is still accepted by :meth:`Fluctuation.parse_with_beams`
(what ``SamplingParams`` and the CLI call), which hands it over as a ``BeamParams``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sazanami.beam_params import BeamParams
from sazanami.errors import ParameterError, check_int, check_range
from sazanami.noise import ColoredNoise
from sazanami.seeds import derive_seed

POINTS = ("temperature", "logits", "draw", "hidden", "embedding")
DRAW_MODES = ("gumbel", "quantile")

NoiseMix = list[tuple[int, float]]
"""A row's noise as a mixture of seeded streams: [(seed, weight)], Σ weight² = 1."""


@dataclass(frozen=True)
class Entry:
    """Parameters of one point of entry."""

    sigma: float = 0.3
    """Strength: log-amplitude (temperature), logit-std units (logits), norm fraction (hidden/embedding)."""
    beta: float = 1.0
    """Noise color: 0 white, 1 pink, 2 brown; in [0, 2]."""
    t_min: float = 0.05
    """Lowest temperature a fluctuating temperature may take (temperature only)."""
    t_max: float = 2.0
    """Highest temperature a fluctuating temperature may take (temperature only)."""
    layers: tuple[int, ...] = ()
    """Layers whose output is perturbed (hidden only); empty = the middle layer."""
    mode: str = "gumbel"
    """draw only: ``gumbel`` — one colored stream per token, Gumbel-max; ``quantile`` — one
    colored stream per row sets the quantile u_t = Φ(z_t) of an inverse-CDF draw over tokens
    sorted by probability (exact each step; no per-token lock-in)."""

    def validate(self, point: str) -> None:
        if self.mode not in DRAW_MODES:
            raise ParameterError(
                f"{point}.mode", f"{point}.mode must be one of {', '.join(DRAW_MODES)}, got {self.mode!r}"
            )
        check_range(f"{point}.sigma", self.sigma, 0, 10)
        check_range(f"{point}.beta", self.beta, 0, 2)
        check_range(f"{point}.t_min", self.t_min, 0, 100, low_open=True)
        check_range(f"{point}.t_max", self.t_max, self.t_min, 100)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in self.layers):
            raise ParameterError(f"{point}.layers", f"{point}.layers must be a list of integers, got {self.layers!r}")


@dataclass(frozen=True)
class Fluctuation:
    """Where noise enters decoding. Entries left ``None`` are off."""

    temperature: Entry | None = None
    logits: Entry | None = None
    draw: Entry | None = None
    hidden: Entry | None = None
    embedding: Entry | None = None
    max_steps: int = 4096
    """Longest horizon the noise spectrum is fitted for (lowest corner ≈ 1/(10·max_steps))."""

    def __post_init__(self) -> None:
        for point in POINTS:
            entry = getattr(self, point)
            if entry is not None:
                if not isinstance(entry, Entry):
                    raise ParameterError(point, f"{point} must be an Entry, got {type(entry).__name__}")
                entry.validate(point)
        check_int("max_steps", self.max_steps, 16, 1_000_000)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: Any) -> Fluctuation:
        """A Fluctuation from a preset name, dict, JSON string, ``.json`` path or Fluctuation."""
        if isinstance(spec, Fluctuation):
            return spec
        if isinstance(spec, str):
            text = spec.strip()
            if text in PRESETS:
                return PRESETS[text]
            if text.startswith("{"):
                try:
                    return cls.from_dict(json.loads(text))
                except json.JSONDecodeError as exc:
                    raise ParameterError("fluctuation", f"fluctuation is not valid JSON: {exc}") from exc
            path = Path(text)
            if path.suffix == ".json" and path.exists():
                return cls.from_dict(json.loads(path.read_text()))
            raise ParameterError(
                "fluctuation",
                f"fluctuation must be a preset ({', '.join(PRESETS)}), a JSON object or a .json file, got {spec!r}",
            )
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        raise ParameterError(
            "fluctuation", f"fluctuation must be a preset name or an object, got {type(spec).__name__}"
        )

    @classmethod
    def parse_with_beams(cls, spec: Any) -> tuple[Fluctuation | None, BeamParams | None]:
        """:meth:`parse`, also accepting a ``beams`` entry (``{"width", "beta"}``, β defaults to 1):
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
            return cls.parse(spec), None
        rest = dict(spec)
        entry = rest.pop("beams")
        beams = None
        if entry is not None and entry is not False:
            entry = {} if entry is True else entry
            if not isinstance(entry, dict):
                raise ParameterError("beams", f"fluctuation.beams must be an object, got {entry!r}")
            known = {f.name for f in dataclasses.fields(Entry)} | {"width"}
            unknown = sorted(set(entry) - known)
            if unknown:
                raise ParameterError(
                    f"beams.{unknown[0]}", f"unknown field {unknown[0]!r} in fluctuation.beams; known: {', '.join(sorted(known))}"
                )
            Entry(**{k: v for k, v in entry.items() if k not in ("width", "layers")}).validate("beams")
            beams = BeamParams(width=entry.get("width", 4), beta=entry.get("beta", 1.0))
        fl = cls.parse(rest) if set(rest) - {"max_steps"} else None
        return (fl if fl is None or fl.active else None), beams

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fluctuation:
        """Inverse of :meth:`to_dict`; a ``preset`` key starts from that preset."""
        data = dict(data)
        name = data.pop("preset", None)
        if name is not None and name not in PRESETS:
            raise ParameterError("fluctuation.preset", f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        base = PRESETS[name] if name is not None else None
        kwargs: dict[str, Any] = dataclasses.asdict(base) if base else {}
        kwargs = {k: (Entry(**v) if isinstance(v, dict) else v) for k, v in kwargs.items()}
        entry_fields = {f.name for f in dataclasses.fields(Entry)}
        for key, value in data.items():
            if key == "max_steps":
                kwargs[key] = value
            elif key in POINTS:
                if value is None or value is False:
                    kwargs[key] = None
                    continue
                if value is True:
                    value = {}
                if not isinstance(value, dict):
                    raise ParameterError(key, f"fluctuation.{key} must be an object, got {value!r}")
                unknown = set(value) - entry_fields
                if unknown:
                    raise ParameterError(
                        f"{key}.{sorted(unknown)[0]}",
                        f"unknown field {sorted(unknown)[0]!r} in fluctuation.{key}; known: {', '.join(sorted(entry_fields))}",
                    )
                value = dict(value)
                if "layers" in value:
                    value["layers"] = tuple(value["layers"])
                kwargs[key] = Entry(**value)
            else:
                raise ParameterError(
                    key, f"unknown fluctuation field {key!r}; known: {', '.join(POINTS + ('max_steps', 'preset'))}"
                )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for point in POINTS:
            entry = getattr(self, point)
            if entry is not None:
                d = dataclasses.asdict(entry)
                d["layers"] = list(entry.layers)
                out[point] = d
        out["max_steps"] = self.max_steps
        return out

    def override(self, sigma: float | None = None, beta: float | None = None) -> Fluctuation:
        """A copy with σ and/or β replaced in every active entry."""
        changes: dict[str, Any] = {}
        for point in POINTS:
            entry = getattr(self, point)
            if entry is not None:
                new = {k: v for k, v in (("sigma", sigma), ("beta", beta)) if v is not None}
                changes[point] = dataclasses.replace(entry, **new)
        return dataclasses.replace(self, **changes)

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(p for p in POINTS if getattr(self, p) is not None)

    def start(
        self, seed: int, vocab_size: int, hidden_size: int = 0, mix: NoiseMix | None = None
    ) -> FluctuationState | None:
        """Per-row state for a row with this seed (or noise mixture); None when nothing is active."""
        if not self.active:
            return None
        return FluctuationState(self, mix or [(seed, 1.0)], vocab_size, hidden_size)


def gumbel_from_normal(z: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel variates from N(0, 1) ones: −log(−log Φ(z)), in float64."""
    u = torch.special.ndtr(z.double()).clamp(1e-300, 1 - 1e-16)
    return -torch.log(-torch.log(u))


class MixedNoise:
    """A weighted sum of independent seeded colored-noise sources: still unit variance, same spectrum."""

    def __init__(self, beta: float, streams: int, mix: NoiseMix, key: str, max_steps: int) -> None:
        self.weights = [w for _, w in mix]
        self.sources = [ColoredNoise(beta, streams, derive_seed(s, key), max_steps=max_steps) for s, _ in mix]
        self.last: torch.Tensor | None = None

    def step(self) -> torch.Tensor:
        x = self.sources[0].step() * self.weights[0]
        for w, src in zip(self.weights[1:], self.sources[1:]):
            x = x + w * src.step()
        self.last = x
        return x

    def snapshot(self) -> list[Any]:
        return [s.snapshot() for s in self.sources]

    def restore(self, state: list[Any]) -> None:
        for s, st in zip(self.sources, state):
            s.restore(st)


class FluctuationState:
    """The noise sources of one row and the operations the sampler and engine call."""

    def __init__(self, fl: Fluctuation, mix: NoiseMix, vocab_size: int, hidden_size: int) -> None:
        self.fl = fl
        self.mix = mix
        self.draws = fl.draw is not None
        steps = fl.max_steps

        def src(point: str, streams: int) -> MixedNoise | None:
            entry = getattr(fl, point)
            return MixedNoise(entry.beta, streams, mix, point, steps) if entry is not None else None

        self.temp_noise = src("temperature", 1)
        self.logit_noise = src("logits", vocab_size)
        quantile = fl.draw is not None and fl.draw.mode == "quantile"
        self.draw_noise = src("draw", 1 if quantile else vocab_size)
        self.hidden_noise = src("hidden", hidden_size) if hidden_size else None
        self.embed_noise = src("embedding", hidden_size) if hidden_size else None
        self._temp_x = 0.0

    # -- sampler side (called once per generated token) ----------------------------------------
    def perturb_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Step 2: logits (V,) + σ · std · x_t; −inf stays −inf (never unmasks)."""
        if self.logit_noise is None:
            return logits
        x = self.logit_noise.step()
        finite = torch.isfinite(logits)
        std = logits[finite].std(correction=0) if bool(finite.any()) else torch.tensor(0.0)
        return logits + self.fl.logits.sigma * std * x

    def temperature(self, base: float) -> float:
        """Step 3: clip(T0 · exp(σ x_t), t_min, t_max); T0 = 0 (greedy) stays greedy."""
        if self.temp_noise is None or base <= 0:
            return base
        e = self.fl.temperature
        self._temp_x = float(self.temp_noise.step()[0])
        return min(max(base * math.exp(e.sigma * self._temp_x), e.t_min), e.t_max)

    def draw(self, logits: torch.Tensor) -> int:
        """Step 5 with the draw entry: an exact sample of softmax(logits) (V,) from colored noise."""
        if self.fl.draw.mode == "quantile":
            return self.quantile_draw(logits)
        return self.gumbel_argmax(logits)

    def gumbel_argmax(self, logits: torch.Tensor) -> int:
        """argmax(logits + G), G = −log(−log Φ(z)), z colored N(0, 1) per token."""
        return int((logits.double() + gumbel_from_normal(self.draw_noise.step())).argmax())

    def quantile_draw(self, logits: torch.Tensor) -> int:
        """Inverse-CDF draw at quantile u = Φ(z_t) over tokens sorted most likely first."""
        u = float(torch.special.ndtr(self.draw_noise.step().double())[0])
        probs, order = logits.double().softmax(-1).sort(descending=True)
        idx = int(torch.searchsorted(probs.cumsum(-1), torch.tensor([u * float(probs.sum())], dtype=torch.float64)))
        return int(order[min(idx, int((probs > 0).sum()) - 1)])

    def advance(self) -> None:
        """Called after each sampled token (sources already stepped on use)."""

    def last_noise(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.temp_noise is not None:
            out["temperature"] = self._temp_x
        for name, n in (("logits", self.logit_noise), ("draw", self.draw_noise), ("hidden", self.hidden_noise)):
            if n is not None and n.last is not None:
                out[name] = float(n.last[0])
        return out

    # -- engine side (hidden states, once per forward of a generated token) ----------------
    def hidden_noise_for(self, layer: int, num_layers: int) -> torch.Tensor | None:
        """The (C,) noise to add at ``layer`` (−1 = embeddings), or None."""
        if layer == -1:
            return self.embed_noise.step() if self.embed_noise is not None else None
        if self.hidden_noise is None:
            return None
        layers = self.fl.hidden.layers or (num_layers // 2,)
        if layer in {x % num_layers for x in layers}:
            return self.hidden_noise.step()
        return None

    def sigma_for(self, layer: int) -> float:
        return self.fl.embedding.sigma if layer == -1 else self.fl.hidden.sigma


def preset(name: str) -> Fluctuation:
    """A named preset (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ParameterError("fluctuation", f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


PRESETS: dict[str, Fluctuation] = {
    "none": Fluctuation(),
    "white-temperature": Fluctuation(temperature=Entry(sigma=0.3, beta=0.0)),
    "pink-temperature": Fluctuation(temperature=Entry(sigma=0.3, beta=1.0)),
    "brown-temperature": Fluctuation(temperature=Entry(sigma=0.3, beta=2.0)),
    "pink-logits": Fluctuation(logits=Entry(sigma=0.3, beta=1.0)),
    "pink-draw": Fluctuation(draw=Entry(sigma=0.0, beta=1.0)),
    "pink-hidden": Fluctuation(hidden=Entry(sigma=0.05, beta=1.0)),
    "pink-embedding": Fluctuation(embedding=Entry(sigma=0.05, beta=1.0)),
}
