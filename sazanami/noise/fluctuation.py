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

Noise version (``Fluctuation.noise_version``): 1 steps one colored stream per vocabulary
entry per row for ``logits`` and the Gumbel ``draw``; 2 (the default) takes the stateless
value of (seed, token id, step) (:func:`~sazanami.noise.colored.colored_noise_at`) for each row's
candidate tokens only (:func:`token_candidates`; the draw stays exact through a tail option,
:func:`gumbel_candidates`). The other entries are the same in both.

Presets: see :data:`PRESETS`. ``Fluctuation.parse`` accepts a preset name, a dict,
a JSON string, a path to a ``.json`` file or a ``Fluctuation``.

Stochastic beam search is a decoding choice of its own (``SamplingParams.beams``, a
:class:`~sazanami.sampling.beam_params.BeamParams`); the older spelling as a fluctuation entry,
``{"beams": {"width", "beta"}}``, is still accepted by
:func:`~sazanami.sampling.beam_params.split_beams` (what ``SamplingParams`` and the CLI call),
which hands it over as a ``BeamParams``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sazanami.errors import ParameterError, check_int, check_known, check_range
from sazanami.noise.colored import ColoredLanes, ColoredNoise, colored_noise_at
from sazanami.noise.draws import gumbel_argmax, gumbel_from_normal, quantile_draw
from sazanami.seeds import derive_seed

POINTS = ("temperature", "logits", "draw", "hidden", "embedding")
DRAW_MODES = ("gumbel", "quantile")

NoiseMix = list[tuple[int, float]]
"""A row's noise as a mixture of seeded streams: [(seed, weight)], Σ weight² = 1 — the one
definition (rows carry it, searches build it: ``sazanami.search.strategies.neighbour``)."""


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
    noise_version: int = 2
    """How the per-token entries (``logits``, the ``gumbel`` draw) make their noise; 1 or 2.

    1 — one streaming colored stream per vocabulary entry per row, stepped every step
    (:class:`~sazanami.noise.colored.ColoredLanes`): the values of sazanami before version 2, bit for bit.
    2 — the stateless :func:`~sazanami.noise.colored.colored_noise_at` value of (seed, token id, step),
    computed only for a row's candidate tokens (see :func:`token_candidates`): its cost
    follows the candidates, not the vocabulary. The temperature, quantile-draw, hidden and
    embedding entries are the same in both versions."""

    def __post_init__(self) -> None:
        for point in POINTS:
            entry = getattr(self, point)
            if entry is not None:
                if not isinstance(entry, Entry):
                    raise ParameterError(point, f"{point} must be an Entry, got {type(entry).__name__}")
                entry.validate(point)
        check_int("max_steps", self.max_steps, 16, 1_000_000)
        check_int("noise_version", self.noise_version, 1, 2)

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
    def from_dict(cls, data: dict[str, Any]) -> Fluctuation:
        """Inverse of :meth:`to_dict`; a ``preset`` key starts from that preset."""
        data = dict(data)
        name = data.pop("preset", None)
        if name is not None and name not in PRESETS:
            raise ParameterError("fluctuation.preset", f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        base = PRESETS[name] if name is not None else None
        kwargs: dict[str, Any] = dataclasses.asdict(base) if base else {}
        kwargs = {k: (Entry(**v) if isinstance(v, dict) else v) for k, v in kwargs.items()}
        entry_fields = sorted(f.name for f in dataclasses.fields(Entry))
        check_known(data, POINTS + ("max_steps", "noise_version", "preset"), "fluctuation field")
        for key, value in data.items():
            if key in ("max_steps", "noise_version"):
                kwargs[key] = value
            else:  # a point of entry (check_known let nothing else through)
                if value is None or value is False:
                    kwargs[key] = None
                    continue
                if value is True:
                    value = {}
                if not isinstance(value, dict):
                    raise ParameterError(key, f"fluctuation.{key} must be an object, got {value!r}")
                check_known(value, entry_fields, "field", where=f"fluctuation.{key}", prefix=f"{key}.")
                value = dict(value)
                if "layers" in value:
                    value["layers"] = tuple(value["layers"])
                kwargs[key] = Entry(**value)
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
        out["noise_version"] = self.noise_version
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
        self,
        seed: int,
        vocab_size: int,
        hidden_size: int = 0,
        mix: NoiseMix | None = None,
        truncation: Truncation | None = None,
    ) -> FluctuationState | None:
        """Per-row state for a row with this seed (or noise mixture); None when nothing is active.

        ``truncation``: the row's sampler settings, which set version-2 logit noise's candidates."""
        if not self.active:
            return None
        return FluctuationState(self, mix or [(seed, 1.0)], vocab_size, hidden_size, truncation)


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

    def __init__(
        self, fl: Fluctuation, mix: NoiseMix, vocab_size: int, hidden_size: int, truncation: Truncation | None = None
    ) -> None:
        self.fl = fl
        self.mix = mix
        self.draws = fl.draw is not None
        steps = fl.max_steps

        def src(point: str, streams: int) -> MixedNoise | None:
            entry = getattr(fl, point)
            return MixedNoise(entry.beta, streams, mix, point, steps) if entry is not None else None

        def tokens(point: str) -> TokenNoise | None:
            entry = getattr(fl, point)
            return TokenNoise(point, {0: (entry.beta, steps, mix)}, 1) if entry is not None else None

        quantile = fl.draw is not None and fl.draw.mode == "quantile"
        v2 = fl.noise_version == 2
        self.temp_noise = src("temperature", 1)
        # version 2: the per-token entries as stateless values for candidate tokens (see TokenNoise)
        self.logit_tokens = tokens("logits") if v2 else None
        self.draw_tokens = tokens("draw") if v2 and not quantile else None
        self.logit_noise = None if v2 else src("logits", vocab_size)
        self.draw_noise = src("draw", 1) if quantile else (None if v2 else src("draw", vocab_size))
        self._trunc = (truncation or Truncation()).tensors([0])
        self.hidden_noise = src("hidden", hidden_size) if hidden_size else None
        self.embed_noise = src("embedding", hidden_size) if hidden_size else None
        self._temp_x = 0.0

    # -- sampler side (called once per generated token) ----------------------------------------
    def perturb_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Step 2: logits (V,) + σ · std · x_t; −inf stays −inf (never unmasks)."""
        if self.logit_tokens is not None:
            rows = torch.zeros(1, dtype=torch.long)
            return perturb_candidates(
                logits[None], self.logit_tokens, rows, torch.tensor([self.fl.logits.sigma]), self._trunc
            )[0]
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
        """argmax(logits + G), G = −log(−log Φ(z)), z colored N(0, 1) per token (version 2: per candidate)."""
        if self.draw_tokens is not None:
            return int(gumbel_candidates(logits[None], self.draw_tokens, torch.zeros(1, dtype=torch.long))[0])
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
        for name, tok in (("logits", self.logit_tokens), ("draw", self.draw_tokens)):
            if tok is not None and not math.isnan(float(tok.last[0])):
                out[name] = float(tok.last[0])
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


# -- noise version 2: per-token noise for candidate tokens only ----------------------------------
CANDIDATES_MAX = 1024
"""Most tokens of a row that get version-2 noise: its most likely ones, when more pass the floor."""
CANDIDATE_FLOOR = 1e-4
"""Tokens less likely than this × the row's most likely token get no version-2 noise."""
TAIL_STREAM = 2**62
"""Stream id of the colored draw's tail option (the finite tokens outside the candidates); the
next id is the stream whose value Φ(z) picks the token within the tail. Token ids stay below."""


@dataclass(frozen=True)
class Truncation:
    """A row's sampler settings that choose its version-2 logit-noise candidates.

    Read from a ``SamplingParams`` by :meth:`of` (mirostat rows keep no top-k/p or min-p);
    the default (no truncation, T = 1) is what a row without parameters gets.
    """

    temperature: float = 1.0
    """The row's base temperature; greedy (≤ 0) counts as 1."""
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    @classmethod
    def of(cls, params: Any) -> Truncation:
        if params is None:
            return cls()
        miro = getattr(params, "mirostat_tau", 0.0) > 0
        t = float(params.temperature)
        return cls(
            t if t > 0 else 1.0,
            0 if miro else int(params.top_k),
            1.0 if miro else float(params.top_p),
            0.0 if miro else float(params.min_p),
        )

    @staticmethod
    def stack(truncs: Sequence[Truncation]) -> dict[str, torch.Tensor]:
        """Each field as a (B,) tensor."""
        return {
            "temperature": torch.tensor([t.temperature for t in truncs], dtype=torch.float32),
            "top_k": torch.tensor([t.top_k for t in truncs], dtype=torch.long),
            "top_p": torch.tensor([t.top_p for t in truncs], dtype=torch.float32),
            "min_p": torch.tensor([t.min_p for t in truncs], dtype=torch.float32),
        }

    def tensors(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        return Truncation.stack([self] * len(rows))


def _pack(rows: torch.Tensor, cols: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries (rows[i], cols[i]), row-major with columns ascending within a row (what
    ``nonzero`` gives) → ids (n, W) of each row's columns, ascending, and valid (n, W);
    W = the largest count (≥ 1); padding ids are 0."""
    count = torch.bincount(rows, minlength=n)  # (n,)
    width = max(int(count.max()) if n else 0, 1)
    pos = torch.arange(rows.numel()) - (count.cumsum(0) - count)[rows]
    ids = torch.zeros(n, width, dtype=torch.long)
    valid = torch.zeros(n, width, dtype=torch.bool)
    ids[rows, pos] = cols
    valid[rows, pos] = True
    return ids, valid


def _kept(ids: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed candidates ``ids`` (n, W) narrowed to the entries ``keep`` (n, W) marks."""
    r, c = keep.nonzero(as_tuple=True)
    return _pack(r, ids[r, c], ids.shape[0])


CHUNK = 64
"""Vocabulary entries per chunk when looking for the entries above a bar (see :func:`_above`)."""


def _bar(top: torch.Tensor, t: torch.Tensor, truncation: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Each row's least candidate logit (n,): the floor (and min-p) below its maximum ``top``;
    +inf for a row with no finite logit (no candidates)."""
    floor = t * math.log(CANDIDATE_FLOOR)  # log-prob ratio floor, in logit units: ≤ 0
    if truncation is not None:  # min-p: p ≥ min_p · p_max  ⇔  x ≥ x_max + T ln min_p
        floor = torch.maximum(floor, t * torch.log(truncation["min_p"]))
    return torch.where(torch.isfinite(top), top + floor, math.inf)


def _above(x: torch.Tensor, bar_of: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(each row's maximum (n,), rows, columns of the entries ≥ ``bar_of(maximum)``), the entries
    row-major with columns ascending. One read of ``x`` (chunk maxima of :data:`CHUNK` entries);
    only the chunks that reach the bar are compared entry by entry (−inf and NaN never pass)."""
    n, V = x.shape
    k = V // CHUNK
    head = x[:, : k * CHUNK].reshape(n, k, CHUNK)  # a view unless x is strided
    peaks = head.amax(-1)  # (n, k)
    rest = x[:, k * CHUNK :]
    top = peaks.amax(-1) if k else rest.amax(-1)
    if k and rest.shape[1]:
        top = torch.maximum(top, rest.amax(-1))
    bar = bar_of(top)  # (n,)
    rows, chunk = (peaks >= bar[:, None]).nonzero(as_tuple=True)
    inner, offset = (head[rows, chunk] >= bar[rows, None]).nonzero(as_tuple=True)
    r, c = rows[inner], chunk[inner] * CHUNK + offset
    if rest.shape[1]:  # the last V mod CHUNK entries, then every row's columns in order again
        rr, rc = (rest >= bar[:, None]).nonzero(as_tuple=True)
        r, c = torch.cat([r, rr]), torch.cat([c, rc + k * CHUNK])
        order = (r * V + c).argsort()
        r, c = r[order], c[order]
    return top, r, c


def token_candidates(
    logits: torch.Tensor, truncation: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of each row that get version-2 noise: ids (n, W), ascending, and valid (n, W).

    A row's candidates are its finite logits that

    1. its truncation keeps, judged on these logits at the row's temperature: min-p, top-p
       (probabilities over the whole row) and top-k — what would survive if the noise were 0;
    2. are at least ``CANDIDATE_FLOOR`` (10^-4) × as likely as its most likely token;
    3. are among its ``CANDIDATES_MAX`` (1024) most likely (ties: the lower token id).

    With no truncation (or for the draw, whose logits are already truncated) 2 and 3 decide.
    Why a floor and a cap rather than a fixed top-K: a peaked row (most steps of a language
    model) has a handful of tokens worth perturbing and a fixed K would pay for K anyway;
    a flat row needs more than a small K. The floor keeps every token with a chance
    ≥ 10^-4 of the leader's; the cap bounds the work at 1024 tokens (against 49k–262k
    vocabulary entries) — far past what top-k 40 (llama.cpp's default) or a top-p 0.95
    nucleus keeps. Tokens outside get no logit noise; the colored draw still draws them, exactly
    (see :func:`gumbel_candidates`).

    Cost: one read of the vocabulary (:func:`_above`); the rest works on the candidates (a
    top-p row adds the passes its normaliser needs).
    Each row's set depends on that row alone (no batch reductions), so it is batch-invariant.
    """
    return _candidates(logits, truncation)[1:]


def _candidates(
    logits: torch.Tensor, truncation: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`token_candidates` with each row's maximum logit first: (top (n,), ids, valid)."""
    n, _ = logits.shape
    x = logits
    t = truncation["temperature"] if truncation is not None else torch.ones(n)
    top, r, c = _above(x, lambda top: _bar(top, t, truncation))
    ids, valid = _pack(r, c, n)
    cap = torch.full((n,), CANDIDATES_MAX, dtype=torch.long)
    if truncation is not None:
        k = truncation["top_k"]
        cap = torch.where(k > 0, torch.minimum(k, cap), cap)
    vals = x.gather(1, ids).masked_fill(~valid, -math.inf)  # (n, W)
    if truncation is not None and bool((truncation["top_p"] < 1).any()):
        # top-p on the candidates, their probabilities normalised over the whole row at T
        safe_top = torch.where(torch.isfinite(top), top, 0.0)
        z = (x - safe_top[:, None]) / t[:, None]
        lse = torch.log(_row_sums(z.exp()))  # (n,), −inf entries add 0
        zc = (vals - safe_top[:, None]) / t[:, None]
        order = zc.argsort(dim=-1, descending=True, stable=True)
        p = (zc.gather(1, order) - lse[:, None]).exp()
        drop = (p.cumsum(-1) - p) >= truncation["top_p"][:, None]
        keep = valid.clone()
        keep.scatter_(1, order, valid.gather(1, order) & ~drop)
        ids, valid = _kept(ids, keep)
        vals = x.gather(1, ids).masked_fill(~valid, -math.inf)
    over = (valid.sum(-1) > cap).nonzero().flatten().tolist()
    if over:  # the most likely cap[r], ties to the lower id (a stable sort of ascending ids)
        keep = valid.clone()
        for row in over:
            best = vals[row].argsort(descending=True, stable=True)[: int(cap[row])]
            keep[row] = False
            keep[row, best] = True
        ids, valid = _kept(ids, keep)
    return top, ids, valid


class TokenNoise:
    """Version-2 noise of one per-token entry for the rows that have it.

    Row b's value for token v at its step t is Σ_m w_m · colored_noise_at(β, derive_seed(s_m,
    key), v, t) over its noise mixture [(s_m, w_m)] (one term, w = 1, for a plain seed): no
    per-token state, so only the tokens asked for are computed. A row's step advances once per
    call that includes it. ``last`` (B,) holds each row's last value of stream 0 (trace).
    """

    def __init__(self, key: str, rows: dict[int, tuple[float, int, NoiseMix]], batch: int) -> None:
        self.spec: list[tuple[float, int, list[tuple[int, float]]] | None] = [None] * batch
        for b, (beta, max_steps, mix) in rows.items():
            self.spec[b] = (beta, max_steps, [(derive_seed(s, key), w) for s, w in mix])
        self.t = torch.zeros(batch, dtype=torch.long)
        self.last = torch.full((batch,), math.nan, dtype=torch.float64)

    def values(self, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The values (n, W) of tokens ``ids`` (n, W) for rows ``rows`` (n,) at their steps; steps them."""
        out = torch.empty(ids.shape)
        groups: dict[tuple[float, int], list[int]] = {}
        row_list = rows.tolist()
        for i, b in enumerate(row_list):
            beta, max_steps, _ = self.spec[b]  # type: ignore[misc]
            groups.setdefault((beta, max_steps), []).append(i)
        for (beta, max_steps), idx in groups.items():
            mixes = [self.spec[row_list[i]][2] for i in idx]  # type: ignore[index]
            sel = torch.tensor(idx, dtype=torch.long)
            steps = self.t[rows[sel]][:, None]  # (k, 1)
            x = torch.empty(0)
            for m in range(max(len(mx) for mx in mixes)):  # Σ_m w_m y_m, in MixedNoise's order
                have = [j for j, mx in enumerate(mixes) if len(mx) > m]
                h = torch.tensor(have, dtype=torch.long)
                seeds = torch.tensor([mixes[j][m][0] for j in have], dtype=torch.int64)[:, None]
                w = torch.tensor([mixes[j][m][1] for j in have], dtype=torch.float32)[:, None]
                y = colored_noise_at(beta, seeds, ids[sel[h]], steps[h], max_steps=max_steps)
                x = y * w if m == 0 else x.index_put((h,), x[h] + w * y)
            out[sel] = x
        self.t[rows] += 1
        return out

    def select(self, keep: torch.Tensor) -> None:
        idx = keep.tolist()
        self.spec = [self.spec[i] for i in idx]
        self.t, self.last = self.t[keep], self.last[keep]


def perturb_candidates(
    logits: torch.Tensor,
    noise: TokenNoise,
    rows: torch.Tensor,
    sigma: torch.Tensor,
    truncation: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Version-2 logit noise on logits (n, V) of rows ``rows`` (n,): each candidate of
    :func:`token_candidates` + σ · std(row) · x; the other tokens unchanged (a new tensor)."""
    ids, valid = token_candidates(logits, truncation)
    n = ids.shape[0]
    z = noise.values(rows, torch.cat([ids, torch.zeros(n, 1, dtype=torch.long)], 1))  # + stream 0 (trace)
    noise.last[rows] = z[:, -1].double()
    add = (sigma * logit_std(logits))[:, None] * z[:, :-1]  # (n, W), as version 1's σ·std·x
    out = logits.clone()
    r, c = valid.nonzero(as_tuple=True)
    out[r, ids[r, c]] = logits[r, ids[r, c]] + add[r, c]
    return out


def gumbel_candidates(logits: torch.Tensor, noise: TokenNoise, rows: torch.Tensor) -> torch.Tensor:
    """Version-2 colored Gumbel-max draw from softmax(logits) (n, V): tokens (n,).

    The candidates (:func:`token_candidates` of these already-truncated logits) compete with
    colored Gumbel noise, joined by one more option, the *tail*: every other finite token at
    once, with logit log Σ_tail e^x and its own colored stream (``TAIL_STREAM``). Gumbel-max
    over these options is an exact draw of candidate-or-tail; when the tail wins, the token
    within it is the inverse CDF (token-id order) at u = Φ(z) of stream ``TAIL_STREAM + 1``,
    exact as well. So every step is an exact sample of softmax(logits), as in version 1.
    """
    top, ids, valid = _candidates(logits)
    n, width = ids.shape
    top = torch.where(torch.isfinite(top), top, 0.0)
    mass = (logits - top[:, None]).exp_()  # (n, V): −inf entries 0
    r, c = valid.nonzero(as_tuple=True)
    mass[r, ids[r, c]] = 0.0  # what is left is the tail's
    tail_mass = _row_sums(mass).double()  # (n,): 0 where the candidates are every finite token
    tail_logit = torch.where(tail_mass > 0, top.double() + tail_mass.log(), -math.inf)
    extra = torch.tensor([TAIL_STREAM, TAIL_STREAM + 1, 0], dtype=torch.long).expand(n, 3)
    z = noise.values(rows, torch.cat([ids, extra], 1))  # (n, W + 3)
    noise.last[rows] = z[:, -1].double()
    scores = torch.cat([logits.gather(1, ids).masked_fill(~valid, -math.inf).double(), tail_logit[:, None]], 1)
    win = gumbel_argmax(scores, z[:, : width + 1])  # (n,) in [0, W]
    tokens = ids.gather(1, win.clamp(max=width - 1)[:, None]).squeeze(1)
    won = (win == width).nonzero().flatten()
    if won.numel():  # the tail won: which of its tokens (inverse CDF in token-id order)
        p = (logits[won].double() - top[won, None].double()).exp()  # (k, V), in double
        rw, cw = valid[won].nonzero(as_tuple=True)
        p[rw, ids[won][rw, cw]] = 0.0  # 0 off the tail
        cdf = p.cumsum(-1)  # flat across non-tail tokens, so the search lands on a tail token
        u = torch.special.ndtr(z[won, width + 1].double())
        j = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
        last = p.shape[1] - 1 - (p > 0).flip(-1).int().argmax(-1)  # the row's last tail token
        tokens[won] = torch.minimum(j, last)
    return tokens


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
        params: Sequence[Any] | None = None,
    ) -> None:
        """``params``: each row's ``SamplingParams`` (optional): their temperature, top-k, top-p and
        min-p choose version-2 logit noise's candidates (:func:`token_candidates`); without them
        the floor and cap alone do."""
        B = len(fls)
        self.fls = list(fls)
        self.batch = B
        self.trunc = Truncation.stack([Truncation.of(x) for x in params] if params is not None else [Truncation()] * B)

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

        def version(b: int) -> int:
            return fls[b].noise_version  # type: ignore[union-attr]

        def tokens(key: str, spec: dict[int, Any]) -> TokenNoise | None:
            return TokenNoise(key, spec, B) if spec else None

        spec = {p: rows(p) for p in ("temperature", "logits", "hidden", "embedding")}
        logits1 = {b: v for b, v in spec["logits"].items() if version(b) == 1}
        logits2 = {b: v for b, v in spec["logits"].items() if version(b) == 2}
        gumbel = rows("draw", lambda e: e.mode == "gumbel")
        gumbel1 = {b: v for b, v in gumbel.items() if version(b) == 1}
        gumbel2 = {b: v for b, v in gumbel.items() if version(b) == 2}
        quantile = rows("draw", lambda e: e.mode == "quantile")
        self.temp = source("temperature", 1, spec["temperature"])
        self.logits = source("logits", vocab_size, logits1)
        self.logits2 = tokens("logits", logits2)  # noise version 2: candidates only
        self.gumbel = source("draw", vocab_size, gumbel1)
        self.gumbel2 = tokens("draw", gumbel2)
        self.quantile = source("draw", 1, quantile)
        self.hidden = source("hidden", hidden_size, spec["hidden"])
        self.embed = source("embedding", hidden_size, spec["embedding"])
        self.has = {p: mask(s) for p, s in spec.items()} | {
            "logits": mask(logits1),
            "logits2": mask(logits2),
            "gumbel": mask(gumbel1),
            "gumbel2": mask(gumbel2),
            "quantile": mask(quantile),
        }
        self.sigma = {p: sigma(p) for p in ("logits", "hidden", "embedding")}
        self.temp_x = [0.0] * B  # last temperature noise per row (trace)
        self._layers: dict[int, dict[int, torch.Tensor]] = {}  # num_layers → layer → rows perturbed there

    @property
    def active(self) -> bool:
        return any(
            s is not None
            for s in (
                self.temp,
                self.logits,
                self.logits2,
                self.gumbel,
                self.gumbel2,
                self.quantile,
                self.hidden,
                self.embed,
            )
        )

    def select(self, keep: torch.Tensor) -> None:
        """Keep rows ``keep`` (indices, in order), as :meth:`SamplerBatch.select`."""
        idx = keep.tolist()
        self.fls = [self.fls[i] for i in idx]
        self.temp_x = [self.temp_x[i] for i in idx]
        for s in (
            self.temp,
            self.logits,
            self.logits2,
            self.gumbel,
            self.gumbel2,
            self.quantile,
            self.hidden,
            self.embed,
        ):
            if s is not None:
                s.select(keep)
        self.has = {k: v[keep] for k, v in self.has.items()}
        self.trunc = {k: v[keep] for k, v in self.trunc.items()}
        self.sigma = {k: v[keep] for k, v in self.sigma.items()}
        self.batch = len(idx)
        self._layers = {}

    @contextmanager
    def only(self, live: torch.Tensor) -> Iterator[None]:
        """Within: only rows where ``live`` (B,) is True step their noise (every point reads the
        rows it steps from ``has``); the others keep their state (speculative verification)."""
        saved = self.has
        self.has = {k: v & live for k, v in saved.items()}
        try:
            yield
        finally:
            self.has = saved

    # -- sampler side (once per generated token) -----------------------------------------------
    def perturb_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Step 2: logits (B, V) + σ · std · x_t on rows with a ``logits`` entry; −inf stays −inf.

        Version-2 rows: on their candidate tokens only (:func:`perturb_candidates`)."""
        out = logits
        if self.logits is not None:
            rows, z = self.logits.step(self.has["logits"])  # (n,), (n, V)
            every = rows.numel() == logits.shape[0] and bool((rows == torch.arange(rows.numel())).all())
            x = logits if every else logits[rows]
            std = logit_std(x)
            new = x + (self.sigma["logits"][rows] * std)[:, None] * z
            if every:
                return new
            out = logits.clone()
            out[rows] = new
        if self.logits2 is not None and bool(self.has["logits2"].any()):
            rows = self.has["logits2"].nonzero().flatten()
            trunc = {k: v[rows] for k, v in self.trunc.items()}
            every = rows.numel() == logits.shape[0] and out is logits
            new = perturb_candidates(
                logits if every else logits[rows], self.logits2, rows, self.sigma["logits"][rows], trunc
            )
            if every:
                return new
            out = out.clone() if out is logits else out
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

    def colored(self) -> torch.Tensor:
        """(B,) bool: the rows whose token :meth:`draw` draws (a ``draw`` entry, any mode)."""
        return self.has["gumbel"] | self.has["gumbel2"] | self.has["quantile"]

    def draw(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Step 5 for rows with a ``draw`` entry: exact samples of softmax(logits) from colored noise."""
        out = tokens
        if self.gumbel is not None:
            rows, z = self.gumbel.step(self.has["gumbel"])
            out = out.clone()
            every = rows.numel() == logits.shape[0] and bool((rows == torch.arange(rows.numel())).all())
            x = logits if every else logits[rows]
            out[rows] = gumbel_argmax(x, z)  # = (x.double() + gumbel_from_normal(z)).argmax(-1)
        if self.gumbel2 is not None and bool(self.has["gumbel2"].any()):
            rows = self.has["gumbel2"].nonzero().flatten()
            out = out.clone() if out is tokens else out
            every = rows.numel() == logits.shape[0]
            out[rows] = gumbel_candidates(logits if every else logits[rows], self.gumbel2, rows)
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
            if fl is None or not fl.active:
                out.append(None)
                continue
            d: dict[str, float] = {}
            if fl.temperature is not None:
                d["temperature"] = self.temp_x[b]
            for name, sources in (
                ("logits", (("logits", self.logits), ("logits2", self.logits2))),
                ("draw", (("gumbel", self.gumbel), ("gumbel2", self.gumbel2), ("quantile", self.quantile))),
                ("hidden", (("hidden", self.hidden),)),
            ):
                for has, src in sources:
                    if src is not None and bool(self.has[has][b]) and not math.isnan(float(src.last[b])):
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
