"""The diversity-coherence frontier benchmark: does noise buy diversity that temperature cannot?

For each method (a sampler family) and each setting of its sweep, the benchmark draws
``samples`` completions of every prompt, each from its own seed, and measures per prompt:

- **semantic diversity** — :func:`sazanami.metrics.semantic_diversity` of the prompt's samples
  (mean pairwise cosine distance of all-MiniLM-L6-v2 embeddings);
- **lexical diversity** — distinct-2 and self-BLEU (:mod:`sazanami.metrics`);
- **perplexity** under the reference model, i.e. the generating model itself at T = 1 without
  any processing: ``exp(mean −log p)`` over the prompt's tokens, pooled over its samples. The
  engine reports the raw model's log-probabilities with every completion, so this is free;
  noise that enters the forward pass (``hidden``, ``embedding``) changes those, so such
  completions are re-scored by a clean forward pass (:func:`score_completions`);
- **Radvand gap** — mean(−log p) − mean(entropy) of the raw model's next-token distributions
  (:func:`sazanami.metrics.surprisal_entropy_gap`): ≈ 0 for faithful T = 1 samples, < 0 for
  samplers that favour likely tokens.

Metrics are averaged over prompts, with percentile bootstrap intervals that resample prompts
(one seeded set of resamples shared by all settings, so comparisons are paired). Seeds are
common random numbers: sample j of prompt p has the same seed under every setting.

The **temperature frontier** is the curve of mean semantic diversity against mean
log-perplexity traced by the temperature sweep. A setting's **frontier gain** is its mean
diversity minus that curve interpolated (linearly in log-perplexity) at its mean
log-perplexity; positive = more diversity than temperature gives at the same perplexity.
Its interval comes from the same prompt resamples, recomputing the curve each time. Settings
outside the temperature curve's perplexity range get no gain (nan): no extrapolation. The
verdict is ``beyond`` (interval above 0), ``below`` (under 0), ``on`` or ``outside``.

Semantic diversity alone can be fooled: rows that each loop on their own word are far apart
in embedding space, and repetition is cheap in perplexity. So the same gain is computed for
distinct-2 (``distinct_2_gain``, ``distinct_2_verdict``); a setting ``beyond`` on meaning but
``below`` on distinct-2 is reported as repetitive, not as a win.

Generations are cached in a JSONL file keyed by model, sampling parameters, prompt, seed,
``max_tokens`` and a fingerprint of the generating code (:func:`code_fingerprint`), so a rerun
only generates what changed.

Entry points: :func:`run_frontier` (Python), ``sazanami bench frontier`` (CLI, see
:mod:`sazanami.cli.bench`) and ``bench/frontier.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sazanami.errors import ParameterError

if TYPE_CHECKING:
    from sazanami.embeddings import TextEncoder
    from sazanami.engine import Completion, Engine
    from sazanami.params import SamplingParams

__all__ = [
    "DEFAULT_PROMPTS",
    "METHODS",
    "FrontierConfig",
    "FrontierResult",
    "GenerationCache",
    "Method",
    "PromptItem",
    "Setting",
    "SettingResult",
    "bootstrap_ci",
    "code_fingerprint",
    "frontier_gain",
    "interpolate_curve",
    "load_prompts",
    "method_settings",
    "plot_frontier",
    "plot_gains",
    "prompt_metrics",
    "read_csv",
    "resample_indices",
    "run_frontier",
    "score_completions",
    "summarize",
    "write_csv",
    "write_outputs",
]

#: The development prompt set shipped in the repository.
DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "bench" / "data" / "creative_dev.jsonl"

#: Rows per engine call: bounds memory (B × V logits, KV cache) and keeps progress moving.
MAX_BATCH = 64

#: The per-prompt metrics, in CSV order. ``nll`` is log-perplexity (the frontier's x axis).
METRICS = ("semantic_diversity", "distinct_2", "self_bleu", "nll", "gap", "tokens")

#: Base temperature of the noise methods: a point of the temperature sweep (their σ → 0 limit),
#: below T = 1, so noise can move a setting either way along the frontier.
NOISE_T0 = 0.8


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A sampler family and its sweep: one curve on the frontier plot.

    ``sweep`` names what varies: a :class:`~sazanami.params.SamplingParams` field, or
    ``sigma`` (the fluctuation's σ). ``betas`` adds off-curve points: the fluctuation at its
    preset σ (or the base setting) with these noise colors instead.
    """

    name: str
    description: str
    sweep: str
    values: tuple[float, ...]
    quick_values: tuple[float, ...]
    base: tuple[tuple[str, Any], ...] = ()
    fluctuation: str | None = None
    """Preset name or JSON object (as a string) of the fluctuation, if any."""
    betas: tuple[float, ...] = ()


def _noise(
    name: str,
    sweep: str,
    values: tuple[float, ...],
    quick: tuple[float, ...],
    description: str,
    betas: tuple[float, ...] = (),
    fluctuation: str | None = None,
) -> Method:
    return Method(name, description, sweep, values, quick, (("temperature", NOISE_T0),), fluctuation or name, betas)


_SIGMA_T = (0.15, 0.3, 0.6, 1.0)
_SIGMA_LOGITS = (0.05, 0.1, 0.2, 0.3)
_SIGMA_HIDDEN = (0.02, 0.05, 0.1, 0.2)

#: Every method the benchmark knows, by name (the ``--methods`` vocabulary).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "temperature",
            "temperature sweep (the reference frontier)",
            "temperature",
            (0.3, 0.4, 0.55, 0.7, 0.8, 0.85, 1.0, 1.15, 1.3),
            (0.4, 0.7, 1.0, 1.3),
        ),
        Method(
            "top_p",
            "nucleus sampling at T = 1",
            "top_p",
            (0.5, 0.7, 0.8, 0.9, 0.95),
            (0.7, 0.9),
            (("temperature", 1.0),),
        ),
        Method("min_p", "min-p at T = 1", "min_p", (0.02, 0.05, 0.15, 0.3), (0.05, 0.15), (("temperature", 1.0),)),
        Method(
            "typical",
            "locally typical sampling at T = 1",
            "typical_p",
            (0.5, 0.7, 0.9, 0.95),
            (0.7, 0.9),
            (("temperature", 1.0),),
        ),
        Method(
            "dynatemp",
            "llama.cpp dynamic temperature, range 0.5, T0 swept",
            "temperature",
            (0.6, 0.8, 1.1, 1.3),
            (0.8, 1.1),
            (("dynatemp_range", 0.5),),
        ),
        Method(
            "mirostat",
            "mirostat v2 (η = 0.1), target surprise τ in bits",
            "mirostat_tau",
            (2.0, 3.0, 5.0, 7.0),
            (3.0, 5.0),
            (("temperature", 1.0),),
        ),
        _noise(
            "white-logits",
            "sigma",
            _SIGMA_LOGITS,
            (0.1, 0.2),
            "white noise on the logits, T0 = 0.8",
            fluctuation='{"logits": {"sigma": 0.1, "beta": 0.0}}',
        ),
        _noise("white-temperature", "sigma", _SIGMA_T, (0.3, 0.6), "white noise on log T, T0 = 0.8"),
        _noise("pink-temperature", "sigma", _SIGMA_T, (0.3, 0.6), "pink noise on log T, T0 = 0.8"),
        _noise("brown-temperature", "sigma", _SIGMA_T, (0.3, 0.6), "brown noise on log T, T0 = 0.8"),
        _noise("pink-logits", "sigma", _SIGMA_LOGITS, (0.1, 0.2), "pink noise on the logits, T0 = 0.8", betas=(2.0,)),
        _noise(
            "pink-draw",
            "temperature",
            (0.6, 0.8, 1.1, 1.3),
            (0.8, 1.1),
            "pink Gumbel-max draw (no σ), temperature swept",
            betas=(2.0,),
        ),
        _noise(
            "white-draw",
            "temperature",
            (0.6, 0.8, 1.1, 1.3),
            (0.8, 1.1),
            "white Gumbel-max draw: pink-draw's β = 0 control, exact sampling like temperature",
            fluctuation='{"draw": {"sigma": 0.0, "beta": 0.0}}',
        ),
        _noise(
            "pink-hidden",
            "sigma",
            _SIGMA_HIDDEN,
            (0.05, 0.1),
            "pink noise on the middle layer, T0 = 0.8",
            betas=(0.0, 2.0),
        ),
        _noise(
            "pink-embedding",
            "sigma",
            _SIGMA_HIDDEN,
            (0.05, 0.1),
            "pink noise on input embeddings, T0 = 0.8",
            betas=(0.0, 2.0),
        ),
    )
}


@dataclass(frozen=True)
class Setting:
    """One point of a method's sweep: the sampling parameters that generate it."""

    method: str
    sweep: str
    """What varies along the method's curve; ``beta`` for an off-curve noise-color point."""
    value: float
    params: tuple[tuple[str, Any], ...]
    """SamplingParams keyword arguments (fluctuation in its JSON form), sorted by name."""

    @property
    def label(self) -> str:
        symbol = {
            "temperature": "T",
            "sigma": "σ",
            "beta": "β",
            "mirostat_tau": "τ",
            "top_p": "p",
            "min_p": "p",
            "typical_p": "p",
        }
        return f"{symbol.get(self.sweep, self.sweep)}={self.value:g}"

    @property
    def name(self) -> str:
        return f"{self.method} {self.label}"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """Canonical JSON of the parameters: the setting's part of the cache key."""
        return json.dumps(self.kwargs, sort_keys=True, separators=(",", ":"))

    @property
    def perturbs_forward(self) -> bool:
        """Noise inside the forward pass: the engine's log-probs are not the clean model's."""
        fl = self.kwargs.get("fluctuation") or {}
        return bool(fl.get("hidden") or fl.get("embedding"))

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        from sazanami.params import SamplingParams

        return SamplingParams(max_tokens=max_tokens, trace=True, **self.kwargs)


def _setting(method: Method, sweep: str, value: float, kwargs: dict[str, Any]) -> Setting:
    return Setting(method.name, sweep, float(value), tuple(sorted(kwargs.items())))


def method_settings(methods: Iterable[str] | None = None, quick: bool = False) -> list[Setting]:
    """The settings of ``methods`` (default: all of :data:`METHODS`), in order.

    Quick mode uses each method's shorter sweep (a subset of the full one, so a full run
    reuses a quick run's cached generations) and leaves out the off-curve β points.
    """
    names = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ParameterError("methods", f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    if not names:
        raise ParameterError("methods", "methods must name at least one method")
    out: list[Setting] = []
    for name in dict.fromkeys(names):
        m = METHODS[name]
        base = dict(m.base)
        fl = None
        if m.fluctuation is not None:
            from sazanami.fluctuation import Fluctuation

            fl = Fluctuation.parse(m.fluctuation)
        for v in m.quick_values if quick else m.values:
            kw = dict(base)
            if m.sweep == "sigma":
                kw["fluctuation"] = fl.override(sigma=v).to_dict()
            else:
                kw[m.sweep] = v
                if fl is not None:
                    kw["fluctuation"] = fl.to_dict()
            out.append(_setting(m, m.sweep, v, kw))
        if fl is not None and not quick:
            for b in m.betas:
                out.append(_setting(m, "beta", b, base | {"fluctuation": fl.override(beta=b).to_dict()}))
    return out


# --------------------------------------------------------------------------- prompts and cache


@dataclass(frozen=True)
class PromptItem:
    id: str
    text: str


def load_prompts(path: str | Path, limit: int | None = None) -> list[PromptItem]:
    """Read a JSONL prompt file: one ``{"id": ..., "prompt": ...}`` object per line."""
    path = Path(path)
    if not path.exists():
        raise ParameterError("prompts", f"prompts file {str(path)!r} does not exist")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            items.append(PromptItem(str(obj.get("id", f"p{n:03d}")), str(obj["prompt"])))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ParameterError("prompts", f"{path}:{n}: each line must be a JSON object with a 'prompt'") from exc
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ParameterError("prompts", f"prompts file {str(path)!r} holds no prompt")
    if len({p.id for p in items}) != len(items):
        raise ParameterError("prompts", f"prompt ids in {str(path)!r} must be unique")
    return items


class GenerationCache:
    """Completions on disk, one JSON object per line, looked up by :meth:`key`.

    Appends only; the last record of a key wins. A truncated last line (interrupted run)
    is skipped.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.records[rec["key"]] = rec

    @staticmethod
    def key(model: str, setting: Setting, prompt: PromptItem, seed: int, max_tokens: int) -> str:
        parts = [model, setting.key, prompt.id, prompt.text, str(seed), str(max_tokens)]
        return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            self.records[rec["key"]] = rec
        if self.path is not None and records:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------- generation


def score_completions(
    backend: Any, prompt_ids: list[int], completions: list[list[int]]
) -> list[tuple[list[float], list[float]]]:
    """Log-probability and entropy (nats) of each completion token under the clean model.

    One prefill of the prompt, copied to every row, then one teacher-forced pass over the
    right-padded completions (padding only follows a row's tokens, so it changes nothing
    they see). Returns ``(logprobs, entropies)`` per completion, each of its length.
    """
    from sazanami.sampling import entropy

    k = len(completions)
    P, T = len(prompt_ids), max((len(c) for c in completions), default=0)
    if T == 0:
        return [([], []) for _ in completions]
    with torch.inference_mode():
        tmp = backend.new_cache(1, P)
        last = backend.forward(torch.tensor([prompt_ids]), tmp, torch.zeros(1, dtype=torch.long))  # (1, V)
        cache = backend.new_cache(k, P + T)
        cache.copy_rows(tmp, 0, torch.arange(k), P)
        ids = torch.tensor([c + [0] * (T - len(c)) for c in completions])  # (k, T)
        logits = backend.forward(ids, cache, torch.full((k,), P, dtype=torch.long), last_only=False)  # (k, T, V)
        # The distribution of completion token t: the prefill's for t = 0, position t-1's after.
        dists = torch.cat([last.expand(k, 1, -1), logits[:, :-1]], dim=1).float()  # (k, T, V)
        logp = dists.log_softmax(-1).gather(-1, ids[:, :, None]).squeeze(-1)  # (k, T)
        ent = entropy(dists.reshape(k * T, -1)).view(k, T)
    return [(logp[i, : len(c)].tolist(), ent[i, : len(c)].tolist()) for i, c in enumerate(completions)]


def _record(
    key: str,
    setting: Setting,
    prompt: PromptItem,
    c: Completion,
    logprobs: list[float],
    entropies: list[float],
    rescored: bool,
) -> dict[str, Any]:
    return {
        "key": key,
        "setting": setting.key,
        "prompt": prompt.id,
        "seed": c.seed,
        "text": c.text,
        "token_ids": c.token_ids,
        "logprobs": [round(x, 5) for x in logprobs],
        "entropies": [round(x, 5) for x in entropies],
        "finish_reason": c.finish_reason,
        "rescored": rescored,
    }


def generate_setting(
    engine: Engine,
    setting: Setting,
    prompts: list[PromptItem],
    samples: int,
    max_tokens: int,
    seed: int,
    cache: GenerationCache,
    on_rows: Callable[[int], None] = lambda n: None,
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The ``samples`` records of every prompt under ``setting``, generating what the cache lacks.

    Returns ``(records by prompt id, rows generated)``. Sample j of prompt p has seed
    ``derive_seed(seed, p.id, j)`` under every setting (common random numbers).
    """
    from sazanami.engine import RowRequest
    from sazanami.seeds import derive_seed

    params = setting.sampling_params(max_tokens)
    model = _model_key(engine)
    out: dict[str, list[dict[str, Any] | None]] = {p.id: [None] * samples for p in prompts}
    todo: list[tuple[RowRequest, str]] = []
    encoded: dict[str, list[int]] = {}
    for p_index, p in enumerate(prompts):
        for j in range(samples):
            s = derive_seed(seed, p.id, j)
            key = GenerationCache.key(model, setting, p, s, max_tokens)
            rec = cache.get(key)
            if rec is not None:
                out[p.id][j] = rec
                continue
            if p.id not in encoded:
                encoded[p.id] = engine.encode(p.text)
            todo.append((RowRequest(encoded[p.id], params, s, p_index, j), key))
    on_rows(samples * len(prompts) - len(todo))
    for start in range(0, len(todo), MAX_BATCH):
        chunk = todo[start : start + MAX_BATCH]
        completions = engine.run([r for r, _ in chunk])
        by_prompt: dict[int, list[int]] = {}
        for i, (r, _) in enumerate(chunk):
            by_prompt.setdefault(r.prompt_index, []).append(i)
        records: list[dict[str, Any] | None] = [None] * len(chunk)
        for p_index, members in by_prompt.items():
            p = prompts[p_index]
            if setting.perturbs_forward:
                scores = score_completions(engine.backend, encoded[p.id], [completions[i].token_ids for i in members])
            else:
                # The trace has one more step than tokens when the row ended on end-of-sequence.
                scores = [
                    (
                        completions[i].logprobs,
                        [t["entropy"] for t in completions[i].trace][: len(completions[i].logprobs)],
                    )
                    for i in members
                ]
            for i, (lp, ent) in zip(members, scores, strict=True):
                records[i] = _record(chunk[i][1], setting, p, completions[i], lp, ent, setting.perturbs_forward)
        done = [r for r in records if r is not None]
        cache.put(done)
        for (r, _), rec in zip(chunk, done, strict=True):
            out[prompts[r.prompt_index].id][r.index] = rec
        on_rows(len(chunk))
    return {k: [r for r in v if r is not None] for k, v in out.items()}, len(todo)


def _model_key(engine: Engine) -> str:
    """Model name, dtype and :func:`code_fingerprint`: what else decides a seeded row's tokens."""
    backend = engine.backend
    dtype = str(getattr(backend, "dtype", "")).replace("torch.", "")
    return f"{getattr(backend, 'name', type(backend).__name__)}/{dtype}@{code_fingerprint()}"


#: Modules whose source decides what a seeded row generates.
GENERATION_MODULES = ("engine", "sampling", "params", "fluctuation", "noise", "seeds", "tokenizer", "backends.llama")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source of :data:`GENERATION_MODULES`, part of every cache key.

    Generations made by other code (an edited noise source, a new sampler step) are not
    reused, at the price of regenerating after any edit to those files.
    """
    h = hashlib.blake2b(digest_size=6)
    for name in GENERATION_MODULES:
        spec = importlib.util.find_spec(f"sazanami.{name}")
        if spec is not None and spec.origin:
            h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- metrics and statistics


def prompt_metrics(records: list[dict[str, Any]], embedder: TextEncoder | None = None) -> dict[str, float]:
    """The per-prompt metrics (:data:`METRICS`) of one prompt's samples under one setting.

    Token statistics are pooled over the samples; samples with no token (end-of-sequence
    first) count for diversity only. nan where a metric is undefined.
    """
    from sazanami import metrics

    texts = [r["text"] for r in records]
    lp = [x for r in records for x in r["logprobs"]]
    ent = [x for r in records for x in r["entropies"]]
    out = {
        "semantic_diversity": metrics.semantic_diversity(texts, embedder) if len(texts) > 1 else math.nan,
        "distinct_2": metrics.distinct_n(texts, 2),
        "self_bleu": metrics.self_bleu(texts) if len(texts) > 1 else math.nan,
        "nll": math.log(metrics.perplexity(lp)) if lp else math.nan,
        "gap": metrics.surprisal_entropy_gap(lp, ent) if lp else math.nan,
        "tokens": sum(len(r["logprobs"]) for r in records) / len(records),
    }
    return out


def resample_indices(n: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of ``n`` items: an (n_boot, n) array of indices, from a seeded Generator."""
    if n < 1:
        raise ParameterError("n", f"n must be in [1, inf), got {n}")
    if n_boot < 1:
        raise ParameterError("n_boot", f"n_boot must be in [1, inf), got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _nanmean(x: np.ndarray, axis: int | None = None) -> Any:
    with warnings.catch_warnings():
        # An all-nan slice (a metric undefined on every resampled prompt) warns; nan is the answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, idx: np.ndarray | None = None, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-prompt ``values`` with a percentile bootstrap interval: ``(mean, lo, hi)``.

    ``idx`` are resamples from :func:`resample_indices` (drawn with ``seed`` when None);
    pass the same ``idx`` to every setting to pair the comparisons. nan values (an
    undefined metric for one prompt) are left out of each mean.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ParameterError("values", f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not 0 < level < 1:
        raise ParameterError("level", f"level must be in (0, 1), got {level}")
    idx = resample_indices(x.size, seed=seed) if idx is None else idx
    lo, hi = _interval(_nanmean(x[idx], axis=1), level)
    return float(_nanmean(x)), lo, hi


def interpolate_curve(curve_x: Sequence[float] | np.ndarray, curve_y: Sequence[float] | np.ndarray, x: float) -> float:
    """The piecewise-linear curve through (curve_x, curve_y), sorted by x, evaluated at ``x``.

    nan outside [min(curve_x), max(curve_x)] (no extrapolation) or with fewer than 2 points.
    """
    cx, cy = np.asarray(curve_x, dtype=float), np.asarray(curve_y, dtype=float)
    keep = np.isfinite(cx) & np.isfinite(cy)
    cx, cy = cx[keep], cy[keep]
    if cx.size < 2 or not math.isfinite(x) or x < cx.min() or x > cx.max():
        return math.nan
    order = np.argsort(cx, kind="stable")
    return float(np.interp(x, cx[order], cy[order]))


def frontier_gain(
    curve_x: np.ndarray,
    curve_y: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Gain of a setting over a reference curve at equal x: ``(gain, lo, hi)``.

    ``curve_x``, ``curve_y``: (J, P) per-prompt values of the J reference settings (here
    log-perplexity and semantic diversity of the temperature sweep); ``x``, ``y``: (P,) those
    of the setting. gain = mean(y) − curve(mean(x)), the curve through the J prompt-means
    interpolated by :func:`interpolate_curve`. The interval resamples prompts (``idx``) and
    recomputes both the curve and the setting's means each time; resamples whose x falls
    outside the curve are left out. nan when mean(x) lies outside the curve.
    """
    cx, cy = np.asarray(curve_x, dtype=float), np.asarray(curve_y, dtype=float)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if cx.ndim != 2 or cx.shape != cy.shape:
        raise ParameterError(
            "curve_x", f"curve_x and curve_y must be (J, P) arrays of one shape, got {cx.shape} and {cy.shape}"
        )
    if x.shape != (cx.shape[1],) or y.shape != x.shape:
        raise ParameterError("x", f"x and y must have shape ({cx.shape[1]},), got {x.shape} and {y.shape}")
    point = float(_nanmean(y)) - interpolate_curve(_nanmean(cx, 1), _nanmean(cy, 1), float(_nanmean(x)))
    if not math.isfinite(point):
        return math.nan, math.nan, math.nan
    idx = resample_indices(x.size, seed=seed) if idx is None else idx
    bx, by = _nanmean(x[idx], 1), _nanmean(y[idx], 1)  # (n_boot,)
    bcx, bcy = _nanmean(cx[:, idx], 2), _nanmean(cy[:, idx], 2)  # (J, n_boot)
    reps = np.array([by[b] - interpolate_curve(bcx[:, b], bcy[:, b], bx[b]) for b in range(idx.shape[0])])
    lo, hi = _interval(reps, level)
    return point, lo, hi


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class FrontierConfig:
    """What one benchmark run does. ``None`` sizes take the quick or full defaults."""

    prompts: str | Path = DEFAULT_PROMPTS
    methods: tuple[str, ...] | None = None
    """Method names (:data:`METHODS`); None = all. ``temperature`` is always added: it is the reference."""
    samples: int | None = None
    """Samples per prompt and setting (default 8; quick 4)."""
    max_tokens: int | None = None
    """New tokens per sample (default 48; quick 32)."""
    limit: int | None = None
    """Use the first ``limit`` prompts (default all; quick 6)."""
    quick: bool = False
    model: str | None = None
    """Registry name or HF directory; None = the embedded default."""
    seed: int = 0
    n_boot: int = 2000
    level: float = 0.95
    cache: str | Path | None = None
    """Generation cache (JSONL); None = no cache."""
    fresh: bool = False
    """Ignore cache hits (still writes new generations)."""

    def resolved(self) -> FrontierConfig:
        q = self.quick
        return dataclasses.replace(
            self,
            samples=self.samples or (4 if q else 8),
            max_tokens=self.max_tokens or (32 if q else 48),
            limit=self.limit or (6 if q else None),
        )

    def check(self) -> None:
        if self.samples is not None and not 2 <= self.samples <= 256:
            raise ParameterError("samples", f"samples must be in [2, 256], got {self.samples}")
        if self.limit is not None and self.limit < 1:
            raise ParameterError("limit", f"limit must be in [1, inf), got {self.limit}")
        if self.n_boot < 10:
            raise ParameterError("n_boot", f"n_boot must be in [10, inf), got {self.n_boot}")


@dataclass
class SettingResult:
    setting: Setting
    per_prompt: dict[str, np.ndarray]
    """Metric name → (P,) values, prompts in file order."""
    summary: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    generated: int = 0

    def row(self) -> dict[str, Any]:
        """The setting's CSV row."""
        s = self.setting
        return {"method": s.method, "sweep": s.sweep, "value": s.value, "label": s.label, "params": s.key} | {
            k: _round(v) for k, v in self.summary.items()
        }


@dataclass
class FrontierResult:
    config: FrontierConfig
    prompts: list[PromptItem]
    results: list[SettingResult]
    wall_s: float
    machine: dict[str, Any]

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]


def _round(v: float) -> float:
    return float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else v


def machine_info() -> dict[str, Any]:
    """What ran the benchmark (for the report)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def summarize(results: list[SettingResult], idx: np.ndarray, level: float) -> None:
    """Fill each result's summary: means and intervals, and the frontier gain of non-temperature settings."""
    for r in results:
        for m in METRICS:
            mean, lo, hi = bootstrap_ci(r.per_prompt[m], idx, level)
            r.summary |= {m: mean, f"{m}_lo": lo, f"{m}_hi": hi}
        r.summary |= {
            "perplexity": math.exp(r.summary["nll"]),
            "perplexity_lo": math.exp(r.summary["nll_lo"]),
            "perplexity_hi": math.exp(r.summary["nll_hi"]),
        }
    ref = [r for r in results if r.setting.method == "temperature"]
    cx = np.array([r.per_prompt["nll"] for r in ref])  # (J, P)
    for metric, prefix in (("semantic_diversity", "gain"), ("distinct_2", "distinct_2_gain")):
        cy = np.array([r.per_prompt[metric] for r in ref])  # (J, P)
        for r in results:
            gain = lo = hi = math.nan
            if r.setting.method != "temperature" and len(ref) >= 2:
                gain, lo, hi = frontier_gain(cx, cy, r.per_prompt["nll"], r.per_prompt[metric], idx, level)
            r.summary |= {prefix: gain, f"{prefix}_lo": lo, f"{prefix}_hi": hi}
            r.summary[f"{prefix.replace('gain', 'verdict')}"] = _verdict(r.setting, lo, hi)


def _verdict(setting: Setting, lo: float, hi: float) -> str:
    """``beyond`` / ``below`` the temperature curve (interval clear of 0), ``on`` it, or ``outside`` its range."""
    if setting.method == "temperature":
        return "reference"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "outside"
    return "beyond" if lo > 0 else "below" if hi < 0 else "on"


def run_frontier(
    config: FrontierConfig,
    engine: Engine | None = None,
    embedder: TextEncoder | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> FrontierResult:
    """Generate, measure and summarise every setting of ``config`` (see the module docstring)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    config.check()
    cfg = config.resolved()
    prompts = load_prompts(cfg.prompts, cfg.limit)
    methods = list(cfg.methods) if cfg.methods else list(METHODS)
    if "temperature" not in methods:
        methods.insert(0, "temperature")
    settings = method_settings(methods, cfg.quick)
    if engine is None:
        from sazanami.engine import Engine
        from sazanami.models import DEFAULT_MODEL, load

        engine = Engine(load(cfg.model or DEFAULT_MODEL))
    if embedder is None:
        from sazanami.embeddings import get_embedder

        embedder = get_embedder()
    cache = GenerationCache(cfg.cache)
    if cfg.fresh:
        cache.records.clear()
    assert cfg.samples is not None and cfg.max_tokens is not None  # resolved
    log = log or (lambda s: tqdm.write(s, file=sys.stderr))
    bar = tqdm(
        total=len(settings) * len(prompts) * cfg.samples,
        unit="row",
        desc="frontier",
        file=sys.stderr,
        disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    results = []
    for s in settings:
        t = time.perf_counter()
        records, generated = generate_setting(
            engine, s, prompts, cfg.samples, cfg.max_tokens, cfg.seed, cache, bar.update
        )
        per = [prompt_metrics(records[p.id], embedder) for p in prompts]
        res = SettingResult(
            s, {m: np.array([d[m] for d in per]) for m in METRICS}, seconds=time.perf_counter() - t, generated=generated
        )
        results.append(res)
        log(
            f"{s.name:32} diversity {_nanmean(res.per_prompt['semantic_diversity']):.3f}  "
            f"ppl {math.exp(_nanmean(res.per_prompt['nll'])):7.2f}  gap {_nanmean(res.per_prompt['gap']):+.2f}  "
            f"({generated} generated, {res.seconds:.0f} s)"
        )
    bar.close()
    summarize(results, resample_indices(len(prompts), cfg.n_boot, cfg.seed), cfg.level)
    return FrontierResult(cfg, prompts, results, time.perf_counter() - t0, machine_info())


# --------------------------------------------------------------------------- output


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """One row per setting: means, interval bounds, frontier gain (see :meth:`SettingResult.row`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ParameterError("rows", "rows must not be empty")
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows written by :func:`write_csv`, numbers parsed back."""
    out = []
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                if k in ("method", "sweep", "label", "params") or k.endswith("verdict"):
                    parsed[k] = v
                elif v in ("True", "False"):
                    parsed[k] = v == "True"
                else:
                    parsed[k] = float(v) if v not in ("", "nan") else math.nan
            out.append(parsed)
    return out


_BASELINES = ("top_p", "min_p", "typical", "dynatemp", "mirostat")


def plot_frontier(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Semantic diversity (top row) and distinct-2 (bottom) vs perplexity (x, log) per method.

    Three panels over the same temperature curve (black): truncation and adaptive baselines;
    noise on the temperature and the logits; noise on the draw and inside the model. Lines
    join a method's sweep; off-curve β points are hollow markers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "temperature"]
    baselines = [m for m in methods if m in _BASELINES]
    outer = [m for m in methods if m not in _BASELINES and ("temperature" in m or "logits" in m)]
    inner = [m for m in methods if m not in baselines and m not in outer]
    panels = [
        ("truncation and adaptive samplers", baselines),
        ("noise on the temperature or the logits", outer),
        ("noise on the draw or inside the model", inner),
    ]
    panels = [p for p in panels if p[1]] or [("temperature", [])]
    metrics = (
        ("semantic_diversity", "semantic diversity (mean pairwise cosine distance)"),
        ("distinct_2", "distinct-2 (distinct bigrams / bigrams)"),
    )
    fig, axes = plt.subplots(
        len(metrics),
        len(panels),
        figsize=(6.5 * len(panels), 5.5 * len(metrics)),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    colors = plt.get_cmap("tab10").colors
    for row, (metric, ylabel) in enumerate(metrics):
        for ax, (name, members) in zip(axes[row], panels, strict=True):
            for i, m in enumerate(["temperature", *members]):
                color = "black" if m == "temperature" else colors[(i - 1) % len(colors)]
                _plot_method(ax, [r for r in rows if r["method"] == m], m, color, m == "temperature", metric)
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
            if row == 0:
                ax.set_title(name)
                ax.legend(fontsize=8, loc="lower right")
            if row == len(metrics) - 1:
                ax.set_xlabel("perplexity under the reference model (T = 1), log scale")
        axes[row][0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_method(ax: Any, rows: list[dict[str, Any]], name: str, color: Any, reference: bool, metric: str) -> None:
    curve = sorted((r for r in rows if r["sweep"] != "beta"), key=lambda r: r["value"])
    for group, hollow in ((curve, False), ([r for r in rows if r["sweep"] == "beta"], True)):
        if not group:
            continue
        x = np.array([r["perplexity"] for r in group])
        y = np.array([r[metric] for r in group])
        xerr = np.array(
            [
                [r["perplexity"] - r["perplexity_lo"] for r in group],
                [r["perplexity_hi"] - r["perplexity"] for r in group],
            ]
        )
        yerr = np.array(
            [
                [r[metric] - r[f"{metric}_lo"] for r in group],
                [r[f"{metric}_hi"] - r[metric] for r in group],
            ]
        )
        ax.errorbar(
            x,
            y,
            xerr=np.clip(xerr, 0, None),
            yerr=np.clip(yerr, 0, None),
            color=color,
            fmt="none" if hollow else "-",
            lw=2.5 if reference else 1.2,
            elinewidth=0.7,
            capsize=2,
            alpha=0.9,
        )
        ax.scatter(
            x,
            y,
            s=28,
            facecolors="none" if hollow else color,
            edgecolors=color,
            zorder=3,
            label=None if hollow else name,
        )
        for r, xi, yi in zip(group, x, y, strict=True):
            if hollow or reference or r is group[0] or r is group[-1]:
                ax.annotate(r["label"], (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7, color=color)


def plot_gains(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Frontier gains of every non-temperature setting with their intervals (a forest plot).

    Left: semantic diversity; right: distinct-2 (a drop there flags repetition). Green: the
    interval lies above 0; red: below; blue: it holds 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [r for r in rows if r["method"] != "temperature"]
    n = len(items)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.22 * n + 1.6), sharey=True, squeeze=False)
    panels = (("gain", "semantic-diversity gain"), ("distinct_2_gain", "distinct-2 gain"))
    for ax, (key, xlabel) in zip(axes[0], panels, strict=True):
        for i, r in enumerate(items):
            y, g, lo, hi = n - 1 - i, r[key], r[f"{key}_lo"], r[f"{key}_hi"]
            if not math.isfinite(g):
                ax.text(0, y, "outside the temperature range", fontsize=7, va="center", ha="center", color="grey")
                continue
            color = "tab:green" if lo > 0 else ("tab:red" if hi < 0 else "tab:blue")
            ax.errorbar([g], [y], xerr=[[g - lo], [hi - g]], fmt="o", color=color, ms=4, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"{xlabel} over the temperature curve\nat equal perplexity (95% interval)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(n))
    axes[0][0].set_yticklabels([f"{r['method']} {r['label']}" for r in reversed(items)], fontsize=7)
    axes[0][0].set_ylim(-0.7, n - 0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (reports do not leak home paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_outputs(result: FrontierResult, out: str | Path, name: str = "frontier") -> dict[str, Path]:
    """Write the run's outputs under ``out``: ``NAME.csv`` (one row per setting), ``NAME.png``
    (the frontier), ``NAME_gain.png`` (gains), ``NAME_prompts.csv`` (per prompt), ``NAME.json`` (run facts)."""
    out = Path(out)
    cfg = result.config
    rows = result.rows()
    title = (
        f"{cfg.model or 'smollm2-135m'} · {Path(cfg.prompts).name} · {len(result.prompts)} prompts × "
        f"{cfg.samples} samples × {cfg.max_tokens} tokens\n95% bootstrap intervals over prompts"
    )
    paths = {"csv": write_csv(rows, out / f"{name}.csv"), "png": plot_frontier(rows, out / f"{name}.png", title)}
    paths["gain_png"] = plot_gains(rows, out / f"{name}_gain.png", title)
    per_prompt = [
        {"method": r.setting.method, "label": r.setting.label, "prompt": p.id}
        | {m: _round(float(r.per_prompt[m][i])) for m in METRICS}
        for r in result.results
        for i, p in enumerate(result.prompts)
    ]
    paths["prompts_csv"] = write_csv(per_prompt, out / f"{name}_prompts.csv")
    meta = {
        "config": {k: (_shown_path(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "prompts": len(result.prompts),
        "settings": len(result.results),
        "wall_s": round(result.wall_s, 1),
        "generated_rows": sum(r.generated for r in result.results),
        "machine": result.machine,
        "timings": [
            {"setting": r.setting.name, "seconds": round(r.seconds, 1), "generated_rows": r.generated}
            for r in result.results
        ],
    }
    paths["json"] = out / f"{name}.json"
    paths["json"].write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return paths
