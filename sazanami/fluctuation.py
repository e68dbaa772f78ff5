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
from sazanami.draws import gumbel_argmax, gumbel_from_normal, quantile_draw
from sazanami.errors import ParameterError, check_int, check_range
from sazanami.noise import ColoredLanes, ColoredNoise
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
    """The noise sources of one row: the per-row reference of :class:`FluctuationBatch`.

    The sampler holds a whole batch in a :class:`FluctuationBatch` (one step for all rows);
    this slower per-row form defines the values it must reproduce exactly (tested).
    """

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
        std = logit_std(logits[None])[0]
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


def _row_sums(x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Sums over the last axis of (B, V) in chunks of ``chunk``: a row's sum is the same bits
    whether it is reduced alone or in a batch, at any thread count (each chunk's sum is one
    thread's work; torch splits a lone long row across threads)."""
    B, V = x.shape
    k = V // chunk
    s = x[:, : k * chunk].reshape(B, k, chunk).sum(-1).sum(-1)
    return s + x[:, k * chunk :].sum(-1) if k * chunk < V else s


def logit_std(x: torch.Tensor) -> torch.Tensor:
    """Population std of each row's finite logits, (B, V) → (B,); 0 for a row with none.

    Two passes over the row (mean, then mean square deviation); −inf (masked) entries are left
    out. A row gives the same bits alone as in a batch, so the per-row reference and
    :class:`FluctuationBatch` agree exactly.
    """
    n = x.shape[-1]
    mean = _row_sums(x) / n
    if bool(torch.isfinite(mean).all()):  # no masked entry in any row
        return (_row_sums((x - mean[:, None]).square_()) / n).sqrt_()
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for b, row in enumerate(x):  # masked rows (grammar, top-k before): their finite logits only
        v = row[torch.isfinite(row)]
        if v.numel():
            out[b] = logit_std(v[None])[0]
    return out


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


# -- batched state: what the sampler uses ---------------------------------------------------------
class _PointNoise:
    """One point of entry's noise for the rows of a batch that have it.

    Rows are grouped by (β, max_steps) (one fitted bank each); a row's lanes are the
    components of its noise mixture, combined as :class:`MixedNoise` does.
    """

    def __init__(self, key: str, streams: int, rows: dict[int, tuple[float, int, NoiseMix]], batch: int) -> None:
        self.batch = batch
        groups: dict[tuple[float, int], list[tuple[int, int, int, float]]] = {}
        for b, (beta, max_steps, mix) in rows.items():
            for j, (s, w) in enumerate(mix):
                groups.setdefault((beta, max_steps), []).append((b, j, s, w))
        self.groups = []
        for (beta, max_steps), lanes in groups.items():
            noise = ColoredLanes(beta, streams, [derive_seed(s, key) for _, _, s, _ in lanes], max_steps)
            row = torch.tensor([x[0] for x in lanes], dtype=torch.long)
            comp = torch.tensor([x[1] for x in lanes], dtype=torch.long)
            weight = torch.tensor([x[3] for x in lanes], dtype=torch.float32)
            self.groups.append([noise, row, comp, weight])
        # a row's noise is its one stream, unweighted (no mixture): y itself, without a copy
        self.plain = all(len(mix) == 1 and mix[0][1] == 1.0 for _, _, mix in rows.values())
        self.last = torch.full((batch,), math.nan, dtype=torch.float64)  # first stream's last value

    def step(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step the rows where ``rows`` (B,) is True: their indices (n,) and samples (n, S)."""
        out_rows, out_vals = [], []
        for noise, row, comp, weight in self.groups:
            want = rows[row]
            if not bool(want.any()):
                continue
            lanes = None if bool(want.all()) else want.nonzero().squeeze(1)
            y = noise.step(lanes)
            r, c, w = (row, comp, weight) if lanes is None else (row[lanes], comp[lanes], weight[lanes])
            if self.plain:
                out_rows.append(r)
                out_vals.append(y)  # = y · 1.0 exactly
                continue
            first = c == 0
            x = y[first] * w[first, None]  # Σ_j w_j y_j in MixedNoise's order
            if bool((~first).any()):
                pos = torch.full((self.batch,), -1, dtype=torch.long)
                pos[r[first]] = torch.arange(int(first.sum()))
                for j in range(1, int(c.max()) + 1):
                    m = c == j
                    p = pos[r[m]]
                    x[p] = x[p] + w[m, None] * y[m]
            out_rows.append(r[first])
            out_vals.append(x)
        if len(out_rows) == 1:
            idx, vals = out_rows[0], out_vals[0]
        else:
            idx = torch.cat(out_rows) if out_rows else torch.zeros(0, dtype=torch.long)
            vals = torch.cat(out_vals) if out_vals else torch.zeros(0, 1)
        if idx.numel():
            self.last[idx] = vals[:, 0].double()
        return idx, vals

    def select(self, keep: torch.Tensor) -> None:
        pos = torch.full((self.batch,), -1, dtype=torch.long)
        pos[keep] = torch.arange(keep.numel())
        groups = []
        for noise, row, comp, weight in self.groups:
            lanes = (pos[row] >= 0).nonzero().squeeze(1)
            if lanes.numel():
                noise.select(lanes)
                groups.append([noise, pos[row[lanes]], comp[lanes], weight[lanes]])
        self.groups, self.batch, self.last = groups, keep.numel(), self.last[keep]


class FluctuationBatch:
    """The fluctuation state of a whole sampler batch, stepped once per call for all rows.

    Per point of entry, one :class:`_PointNoise` holds the (B, streams) noise state; rows
    without that entry are skipped. Each row's values equal those of its own per-row
    :class:`FluctuationState` (the reference; tested), whatever else shares the batch.
    """

    def __init__(
        self,
        fls: list[Fluctuation | None],
        mixes: list[NoiseMix],
        vocab_size: int,
        hidden_size: int = 0,
    ) -> None:
        B = len(fls)
        self.fls = list(fls)
        self.batch = B

        def rows(point: str, keep: Any = None) -> dict[int, tuple[float, int, NoiseMix]]:
            out = {}
            for b, fl in enumerate(fls):
                e = getattr(fl, point) if fl is not None else None
                if e is not None and (keep is None or keep(e)):
                    out[b] = (e.beta, fl.max_steps, mixes[b])  # type: ignore[union-attr]
            return out

        def source(key: str, streams: int, spec: dict[int, Any]) -> _PointNoise | None:
            return _PointNoise(key, streams, spec, B) if spec and streams else None

        def mask(spec: dict[int, Any]) -> torch.Tensor:
            m = torch.zeros(B, dtype=torch.bool)
            m[list(spec)] = True
            return m

        def sigma(point: str) -> torch.Tensor:
            return torch.tensor([getattr(f, point).sigma if f is not None and getattr(f, point) else 0.0 for f in fls])

        spec = {p: rows(p) for p in ("temperature", "logits", "hidden", "embedding")}
        gumbel = rows("draw", lambda e: e.mode == "gumbel")
        quantile = rows("draw", lambda e: e.mode == "quantile")
        self.temp = source("temperature", 1, spec["temperature"])
        self.logits = source("logits", vocab_size, spec["logits"])
        self.gumbel = source("draw", vocab_size, gumbel)
        self.quantile = source("draw", 1, quantile)
        self.hidden = source("hidden", hidden_size, spec["hidden"])
        self.embed = source("embedding", hidden_size, spec["embedding"])
        self.has = {p: mask(s) for p, s in spec.items()} | {"gumbel": mask(gumbel), "quantile": mask(quantile)}
        self.sigma = {p: sigma(p) for p in ("logits", "hidden", "embedding")}
        self.temp_x = [0.0] * B  # last temperature noise per row (trace)
        self._layers: dict[int, dict[int, torch.Tensor]] = {}  # num_layers → layer → rows perturbed there

    @property
    def active(self) -> bool:
        return any(s is not None for s in (self.temp, self.logits, self.gumbel, self.quantile, self.hidden, self.embed))

    def select(self, keep: torch.Tensor) -> None:
        """Keep rows ``keep`` (indices, in order), as :meth:`SamplerBatch.select`."""
        idx = keep.tolist()
        self.fls = [self.fls[i] for i in idx]
        self.temp_x = [self.temp_x[i] for i in idx]
        for s in (self.temp, self.logits, self.gumbel, self.quantile, self.hidden, self.embed):
            if s is not None:
                s.select(keep)
        self.has = {k: v[keep] for k, v in self.has.items()}
        self.sigma = {k: v[keep] for k, v in self.sigma.items()}
        self.batch = len(idx)
        self._layers = {}

    # -- sampler side (once per generated token) -----------------------------------------------
    def perturb_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Step 2: logits (B, V) + σ · std · x_t on rows with a ``logits`` entry; −inf stays −inf."""
        if self.logits is None:
            return logits
        rows, z = self.logits.step(self.has["logits"])  # (n,), (n, V)
        every = rows.numel() == logits.shape[0] and bool((rows == torch.arange(rows.numel())).all())
        x = logits if every else logits[rows]
        std = logit_std(x)
        new = x + (self.sigma["logits"][rows] * std)[:, None] * z
        if every:
            return new
        out = logits.clone()
        out[rows] = new
        return out

    def temperature(self, temp: torch.Tensor) -> torch.Tensor:
        """Step 3: clip(T0 · exp(σ x_t), t_min, t_max) per row (B,); T0 = 0 (greedy) stays greedy."""
        if self.temp is None:
            return temp
        want = self.has["temperature"] & (temp > 0)
        if not bool(want.any()):
            return temp
        rows, z = self.temp.step(want)
        out = temp.clone()
        base = temp.tolist()
        for b, x in zip(rows.tolist(), z[:, 0].tolist()):  # B scalars, in double as the reference
            e = self.fls[b].temperature  # type: ignore[union-attr]
            self.temp_x[b] = x
            out[b] = min(max(base[b] * math.exp(e.sigma * x), e.t_min), e.t_max)
        return out

    def draw(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Step 5 for rows with a ``draw`` entry: exact samples of softmax(logits) from colored noise."""
        out = tokens
        if self.gumbel is not None:
            rows, z = self.gumbel.step(self.has["gumbel"])
            out = out.clone()
            every = rows.numel() == logits.shape[0] and bool((rows == torch.arange(rows.numel())).all())
            x = logits if every else logits[rows]
            out[rows] = gumbel_argmax(x, z)  # = (x.double() + gumbel_from_normal(z)).argmax(-1)
        if self.quantile is not None:
            rows, z = self.quantile.step(self.has["quantile"])
            u = torch.special.ndtr(z[:, 0].double())  # (n,)
            out = out.clone() if out is tokens else out
            out[rows] = quantile_draw(logits[rows], u)
        return out

    def last_noise(self) -> list[dict[str, float] | None]:
        """Per row: the last value of each noise's first stream (trace), None for rows without noise."""
        out: list[dict[str, float] | None] = []
        for b, fl in enumerate(self.fls):
            if fl is None or not any(getattr(fl, p) is not None for p in POINTS if p != "beams"):
                out.append(None)
                continue
            d: dict[str, float] = {}
            if fl.temperature is not None:
                d["temperature"] = self.temp_x[b]
            for name, src in (("logits", self.logits), ("draw", self.gumbel or self.quantile), ("hidden", self.hidden)):
                if name == "draw" and self.gumbel is not None and self.quantile is not None:
                    src = self.gumbel if bool(self.has["gumbel"][b]) else self.quantile
                if src is not None and not math.isnan(float(src.last[b])):
                    d[name] = float(src.last[b])
            out.append(d)
        return out

    # -- engine side (hidden states, once per forward of a generated token) --------------------
    def _layer_rows(self, layer: int, num_layers: int) -> torch.Tensor:
        table = self._layers.setdefault(num_layers, {})
        if layer not in table:
            m = torch.zeros(self.batch, dtype=torch.bool)
            for b, fl in enumerate(self.fls):
                if fl is not None and fl.hidden is not None:
                    m[b] = layer in {x % num_layers for x in (fl.hidden.layers or (num_layers // 2,))}
            table[layer] = m
        return table[layer]

    def hidden_hook(self, num_layers: int, row: int | None = None) -> Any:
        """A backend hook adding hidden/embedding noise to generated positions, or None if none.

        ``row`` makes a hook for a one-row forward of that sampler row alone (batch row 0).
        """
        has = (self.has["hidden"] if self.hidden is not None else torch.zeros(self.batch, dtype=torch.bool)) | (
            self.has["embedding"] if self.embed is not None else torch.zeros(self.batch, dtype=torch.bool)
        )
        only = torch.zeros(self.batch, dtype=torch.bool)
        if row is not None:
            only[row] = True
            has = has & only
        if not bool(has.any()):
            return None

        def hook(layer: int, h: torch.Tensor) -> torch.Tensor:  # h: (B, T, C)
            if layer == -1:
                src, want, sig = self.embed, self.has["embedding"], self.sigma["embedding"]
            else:
                src, want, sig = self.hidden, self._layer_rows(layer, num_layers), self.sigma["hidden"]
            if row is not None:
                want = want & only
            if src is None or not bool(want.any()):
                return h
            rows, z = src.step(want)  # (n,), (n, C) unit variance per dimension
            at = rows if row is None else torch.zeros_like(rows)  # batch row of each sampler row
            out = h.clone()
            # scale: ‖noise‖ ≈ σ‖h‖
            scale = sig[rows] * h[at, -1].float().norm(dim=-1) / math.sqrt(h.shape[-1])
            out[at, -1] += (scale[:, None] * z).to(h.dtype)
            return out

        return hook
