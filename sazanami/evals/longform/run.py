"""One long-form run: its configuration, the methods it sweeps, :func:`run_longform` and its summary.

Generation, caching, bootstrap intervals and the gain over the temperature curve are the
frontier benchmark's (:mod:`sazanami.evals.frontier`); this module adds the long-form
measures (:mod:`~.measures`), the human reference and the Gemma judge (:mod:`~.judge`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import sazanami.evals.longform.judge as jd
import sazanami.evals.longform.measures as ms
from sazanami.errors import ParameterError
from sazanami.evals.frontier.generation import GenerationCache, generate_setting, score_completions
from sazanami.evals.frontier.methods import METHODS, Method, Setting, method_settings
from sazanami.evals.frontier.prompts import PromptItem, load_prompts
from sazanami.evals.frontier.run import machine_info
from sazanami.evals.frontier.statistics import bootstrap_ci, frontier_gain, nanmean, resample_indices

if TYPE_CHECKING:
    from sazanami.engine.loop import Engine
    from sazanami.measure.embeddings import TextEncoder

#: The held-out long-form prompt set (26 prompts, 13 genres); tune on creative_dev.jsonl instead.
TEST_PROMPTS = Path(__file__).resolve().parents[3] / "bench" / "data" / "creative_test.jsonl"

_QUANTILE = '{{"draw": {{"sigma": 0.0, "beta": {beta}, "mode": "quantile"}}}}'

#: The long-form catalogue: the frontier's methods with long-form sweeps, and the quantile draw.
LONGFORM_METHODS: dict[str, Method] = {
    "temperature": dataclasses.replace(
        METHODS["temperature"], values=(0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2), quick_values=(0.6, 0.8, 1.0, 1.2)
    ),
    "min_p": dataclasses.replace(METHODS["min_p"], values=(0.05, 0.1, 0.2), quick_values=(0.1,)),
    "top_n_sigma": dataclasses.replace(METHODS["top_n_sigma"], values=(1.0, 1.5, 2.0), quick_values=(1.0,)),
    "dynatemp": dataclasses.replace(METHODS["dynatemp"], values=(0.8, 1.0, 1.2), quick_values=(1.0,)),
    "mirostat": dataclasses.replace(METHODS["mirostat"], values=(3.0, 5.0, 7.0), quick_values=(5.0,)),
    **{
        f"{c}-temperature": dataclasses.replace(
            METHODS[f"{c}-temperature"], values=(0.3, 0.6, 1.0), quick_values=(0.6,), betas=()
        )
        for c in ("white", "pink", "brown")
    },
    "pink-quantile": Method(
        "pink-quantile",
        "pink quantile draw (one stream per row sets the inverse-CDF quantile), temperature swept",
        "temperature",
        (0.8, 1.0, 1.2),
        (1.0,),
        (),
        _QUANTILE.format(beta=1.0),
    ),
    "white-quantile": Method(
        "white-quantile",
        "white quantile draw: pink-quantile's β = 0 control, exact sampling like temperature",
        "temperature",
        (0.8, 1.0, 1.2),
        (1.0,),
        (),
        _QUANTILE.format(beta=0.0),
    ),
    "pink-logits": dataclasses.replace(METHODS["pink-logits"], values=(0.1, 0.2), quick_values=(0.1,), betas=()),
    "pink-hidden": dataclasses.replace(METHODS["pink-hidden"], values=(0.05, 0.1), quick_values=(0.05,), betas=()),
    "pink-embedding": dataclasses.replace(
        METHODS["pink-embedding"], values=(0.05, 0.1), quick_values=(0.05,), betas=()
    ),
}
#: Methods of a quick run unless told otherwise (fixed before any long-form result was seen).
QUICK_METHODS = (
    "temperature",
    "white-temperature",
    "pink-temperature",
    "brown-temperature",
    "pink-quantile",
)

#: Per-prompt metrics, in CSV order. nll_* are log-perplexities; *_within are per-sample means.
METRICS = (
    "nll_judge",
    "nll_gen",
    "distinct_k",
    "distinct_k_unigram",
    "semantic_diversity",
    "distinct_2_within",
    "longest_repeat",
    "psd_slope",
    "dfa",
    "loop_frac",
    "improbable_frac",
    "degeneration",
    "tokens",
)
#: Metrics whose gain over the temperature curve at equal judge perplexity is reported.
GAIN_METRICS = ("distinct_k", "semantic_diversity", "distinct_2_within", "psd_slope", "dfa", "degeneration")


@dataclass(frozen=True)
class LongformConfig:
    """What one long-form run does. ``None`` sizes take the quick or full defaults."""

    prompts: str | Path = TEST_PROMPTS
    """JSONL prompts ({id, prompt} per line); the default is the held-out set."""
    methods: tuple[str, ...] | None = None
    """Names in :data:`LONGFORM_METHODS` (comma-separated on the command line; see --list-methods); None = all (quick: :data:`QUICK_METHODS`). temperature is always added."""
    samples: int | None = None
    """Samples per prompt and setting (default 8; quick 4)."""
    max_tokens: int | None = None
    """New tokens per sample (default 512; quick 256)."""
    limit: int | None = None
    """First ``limit`` prompts (default all; quick 6)."""
    judge_samples: int | None = None
    """Samples per prompt and setting scored by the Gemma judge (default all; quick 1). 0 = no judge."""
    quick: bool = False
    """6 prompts × 4 samples × 256 tokens, 8 settings (temperature, white/pink/brown temperature noise, the pink quantile draw), 1 judged sample each."""
    model: str | None = None
    """Registry name or HF directory; None = the embedded default."""
    seed: int = 0
    """Base seed of the samples and the bootstrap."""
    n_boot: int = 2000
    """Bootstrap resamples."""
    level: float = 0.95
    """Confidence level of the bootstrap intervals."""
    cache: str | Path | None = None
    """Generation cache (JSONL); the judge's scores go to a ``-judge`` file beside it."""
    partitioner: str = "embedding"
    """Equivalence of two samples for distinct_k: embedding (MiniLM cosine) or unigram (Jaccard), at the thresholds fixed on bench/data/equivalence_pairs.jsonl."""
    loop_n: int = 12
    """Degeneration: a token that completes a ``loop_n``-token n-gram seen before starts a loop."""
    p_min: float = 1e-4
    """Degeneration: a token with probability below ``p_min`` under the generator at T = 1."""
    threads: int | None = None
    """llama.cpp threads of the judge; None = the physical cores, as the llama.cpp backend."""

    def resolved(self) -> LongformConfig:
        q = self.quick
        return dataclasses.replace(
            self,
            methods=self.methods or (QUICK_METHODS if q else tuple(LONGFORM_METHODS)),
            samples=self.samples or (4 if q else 8),
            max_tokens=self.max_tokens or (256 if q else 512),
            limit=self.limit or (6 if q else None),
            judge_samples=(1 if q else 1_000_000) if self.judge_samples is None else self.judge_samples,
        )

    def check(self) -> None:
        if self.samples is not None and not 2 <= self.samples <= 256:
            raise ParameterError("samples", f"samples must be in [2, 256], got {self.samples}")
        if self.judge_samples is not None and self.judge_samples < 0:
            raise ParameterError("judge_samples", f"judge_samples must be in [0, inf), got {self.judge_samples}")
        if self.partitioner not in ms.PARTITIONERS:
            raise ParameterError(
                "partitioner", f"partitioner must be one of {', '.join(ms.PARTITIONERS)}, got {self.partitioner!r}"
            )
        if self.n_boot < 10:
            raise ParameterError("n_boot", f"n_boot must be in [10, inf), got {self.n_boot}")


def longform_settings(methods: tuple[str, ...], quick: bool) -> list[Setting]:
    """The settings of ``methods`` from :data:`LONGFORM_METHODS`, temperature first."""
    names = list(dict.fromkeys(("temperature", *methods)))
    return method_settings(names, quick, catalogue=LONGFORM_METHODS)


@dataclass
class SettingResult:
    setting: Setting
    per_prompt: dict[str, np.ndarray]
    """Metric → (P,) values, prompts in file order."""
    survival: np.ndarray
    """(max_tokens,) fraction of samples not yet degenerated at each position 0 ... max_tokens − 1."""
    spectrum: tuple[np.ndarray, np.ndarray] | None
    """(freqs, power): mean Welch PSD of the generator surprisal of full-length samples."""
    summary: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    generated: int = 0

    def row(self) -> dict[str, Any]:
        s = self.setting
        return {"method": s.method, "sweep": s.sweep, "value": s.value, "label": s.label, "params": s.key} | {
            k: (float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in self.summary.items()
        }


@dataclass
class LongformResult:
    config: LongformConfig
    prompts: list[PromptItem]
    results: list[SettingResult]
    human: dict[str, Any]
    """Human reference: psd_slope and dfa (mean, lo, hi over passages), passages, spectrum."""
    partitioner: dict[str, float]
    judge: str
    """The judge's name, or why it did not run."""
    wall_s: float
    machine: dict[str, Any]

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]

    def prompt_rows(self) -> list[dict[str, Any]]:
        return [
            {"method": r.setting.method, "label": r.setting.label, "prompt": p.id}
            | {m: float(f"{r.per_prompt[m][i]:.6g}") for m in METRICS}
            for r in self.results
            for i, p in enumerate(self.prompts)
        ]


def sample_measures(rec: dict[str, Any], loop_n: int, p_min: float, max_tokens: int) -> dict[str, float]:
    """Per-sample measures of one cached generation record."""
    from sazanami.measure.metrics import distinct_n, surprisal_spectrum

    deg = ms.degeneration_point(rec["token_ids"], rec["logprobs"], loop_n, p_min)
    spec = surprisal_spectrum(rec["logprobs"]) if rec["logprobs"] else {"psd_slope": math.nan, "dfa_exponent": math.nan}
    return {
        "distinct_2_within": distinct_n([rec["text"]], 2),
        "longest_repeat": float(ms.longest_repeat(rec["text"])),
        "psd_slope": spec["psd_slope"],
        "dfa": spec["dfa_exponent"],
        "loop": deg["loop"] is not None,
        "improbable": deg["improbable"] is not None,
        # Censored at max_tokens: a sample that never degenerates counts as degenerating at the end.
        "first": float(deg["first"] if deg["first"] is not None else max_tokens),
    }


def prompt_metrics(
    records: list[dict[str, Any]],
    judge_nll: list[float],
    cfg: LongformConfig,
    embedder: TextEncoder | None,
) -> dict[str, float]:
    """:data:`METRICS` of one prompt's samples under one setting."""
    from sazanami.measure.metrics import perplexity, semantic_diversity

    assert cfg.max_tokens is not None
    per = [sample_measures(r, cfg.loop_n, cfg.p_min, cfg.max_tokens) for r in records]
    texts = [r["text"] for r in records]
    lp = [x for r in records for x in r["logprobs"]]
    judged = [x for x in judge_nll if math.isfinite(x)]

    def mean(k: str) -> float:
        return float(nanmean(np.array([p[k] for p in per], dtype=float)))

    nonempty = [t if t.strip() else "(empty)" for t in texts]
    return {
        "nll_judge": float(np.mean(judged)) if judged else math.nan,
        "nll_gen": math.log(perplexity(lp)) if lp else math.nan,
        "distinct_k": float(ms.distinct_k(nonempty, cfg.partitioner, embedder=embedder)),
        "distinct_k_unigram": float(ms.distinct_k(nonempty, "unigram")),
        "semantic_diversity": semantic_diversity(nonempty, embedder),
        "distinct_2_within": mean("distinct_2_within"),
        "longest_repeat": mean("longest_repeat"),
        "psd_slope": mean("psd_slope"),
        "dfa": mean("dfa"),
        "loop_frac": mean("loop"),
        "improbable_frac": mean("improbable"),
        "degeneration": mean("first") / cfg.max_tokens,
        "tokens": float(np.mean([len(r["token_ids"]) for r in records])),
    }


def _survival(records: list[dict[str, Any]], cfg: LongformConfig) -> np.ndarray:
    assert cfg.max_tokens is not None
    firsts = np.array([sample_measures(r, cfg.loop_n, cfg.p_min, cfg.max_tokens)["first"] for r in records])
    return (firsts[None, :] > np.arange(cfg.max_tokens)[:, None]).mean(axis=1)  # (max_tokens,)


def _spectrum(series: list[list[float]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean Welch PSD of equal-length surprisal series (the longest common length ≥ 64)."""
    from sazanami.noise.spectra import psd

    series = [s for s in series if len(s) >= 64]
    if not series:
        return None
    n = min(len(s) for s in series)
    return psd(np.array([s[:n] for s in series]).T)  # (steps, streams)


def human_reference(engine: Engine, cfg: LongformConfig, idx_seed: int) -> dict[str, Any]:
    """Surprisal spectrum of :func:`~.judge.human_passages` under the generator (same length as samples)."""
    from sazanami.measure.metrics import surprisal_spectrum

    assert cfg.max_tokens is not None
    passages = jd.human_passages(engine.tokenizer.encode, cfg.max_tokens, 24)
    context = engine.encode("Explain a part of the Python language in a few paragraphs.")
    scored = score_completions(engine.backend, context, passages)
    specs = [surprisal_spectrum(lp) for lp, _ in scored]
    out: dict[str, Any] = {"source": "pydoc_data.topics (Python Language Reference prose)", "passages": len(passages)}
    idx = resample_indices(len(passages), cfg.n_boot, idx_seed)
    for key, name in (("psd_slope", "psd_slope"), ("dfa_exponent", "dfa")):
        m, lo, hi = bootstrap_ci([s[key] for s in specs], idx, cfg.level)
        out |= {name: m, f"{name}_lo": lo, f"{name}_hi": hi}
    out["nll_gen"] = float(np.mean([-np.mean(lp) for lp, _ in scored]))
    out["spectrum"] = _spectrum([[-x for x in lp] for lp, _ in scored])
    return out


def summarize(results: list[SettingResult], idx: np.ndarray, level: float) -> None:
    """Means with intervals, and gains over the temperature curve at equal judge log-perplexity."""
    for r in results:
        for m in METRICS:
            mean, lo, hi = bootstrap_ci(r.per_prompt[m], idx, level)
            r.summary |= {m: mean, f"{m}_lo": lo, f"{m}_hi": hi}
        for pre in ("judge", "gen"):
            for suf in ("", "_lo", "_hi"):
                v = r.summary[f"nll_{pre}{suf}"]
                r.summary[f"ppl_{pre}{suf}"] = math.exp(v) if math.isfinite(v) else math.nan
    ref = [r for r in results if r.setting.method == "temperature"]
    cx = np.array([r.per_prompt["nll_judge"] for r in ref])  # (J, P)
    for metric in GAIN_METRICS:
        cy = np.array([r.per_prompt[metric] for r in ref])  # (J, P)
        for r in results:
            g = lo = hi = math.nan
            if r.setting.method != "temperature" and len(ref) >= 2:
                g, lo, hi = frontier_gain(cx, cy, r.per_prompt["nll_judge"], r.per_prompt[metric], idx, level)
            r.summary |= {f"{metric}_gain": g, f"{metric}_gain_lo": lo, f"{metric}_gain_hi": hi}


def _judge_scores(
    records: dict[str, list[dict[str, Any]]],
    prompts: list[PromptItem],
    cfg: LongformConfig,
    cache: GenerationCache,
    judge: jd.GemmaJudge | None,
) -> dict[str, list[float]]:
    """Gemma mean −log p of the first ``judge_samples`` samples of each prompt (cached); nan for the rest."""
    out = {}
    for p in prompts:
        vals = []
        for j, rec in enumerate(records[p.id]):
            if judge is None or j >= (cfg.judge_samples or 0):
                vals.append(math.nan)
                continue
            key = f"{rec['key']}/{judge.name}"
            hit = cache.get(key)
            if hit is None:
                lp = judge.logprobs(p.text, rec["text"])
                hit = {"key": key, "nll": jd.nll(lp), "tokens": len(lp)}
                cache.put([hit])
            vals.append(float(hit["nll"]) if hit["nll"] is not None else math.nan)
        out[p.id] = vals
    return out


def run_longform(
    config: LongformConfig,
    engine: Engine | None = None,
    embedder: TextEncoder | None = None,
    judge: jd.GemmaJudge | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> LongformResult:
    """Generate, judge, measure and summarise every setting of ``config``.

    ``judge`` defaults to :func:`~.judge.get_judge` when ``judge_samples`` > 0 and Gemma is
    installed; when it is not, the run goes on without it and says why in ``result.judge``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    config.check()
    cfg = config.resolved()
    assert cfg.samples is not None and cfg.max_tokens is not None and cfg.methods is not None
    prompts = load_prompts(cfg.prompts, cfg.limit)
    settings = longform_settings(cfg.methods, cfg.quick)
    if engine is None:
        from sazanami.engine.loop import Engine
        from sazanami.models import DEFAULT_MODEL, load

        engine = Engine(load(cfg.model or DEFAULT_MODEL))
    caps = getattr(engine.backend, "capabilities", None)
    for setting in settings if caps is not None else ():  # refuse up front what the backend cannot run
        caps.check(setting.sampling_params(cfg.max_tokens).fluctuation)
    if embedder is None:
        from sazanami.measure.embeddings import get_embedder

        embedder = get_embedder()
    log = log or (lambda s: tqdm.write(s, file=sys.stderr))
    judge_note = "off (judge_samples = 0)"
    if judge is None and cfg.judge_samples:
        why = jd.judge_unavailable()
        if why:
            judge_note = f"skipped: {why}"
            log(f"Gemma judge {judge_note}; perplexity under the generator only")
        else:
            judge = jd.get_judge(cfg.threads)
    if judge is not None:
        judge_note = judge.name
    cache = GenerationCache(cfg.cache)
    jpath = Path(cfg.cache).with_name(Path(cfg.cache).stem + "-judge.jsonl") if cfg.cache else None
    jcache = GenerationCache(jpath)
    bar = tqdm(
        total=len(settings) * len(prompts) * cfg.samples,
        unit="row",
        desc="longform",
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
        jn = _judge_scores(records, prompts, cfg, jcache, judge)
        per = [prompt_metrics(records[p.id], jn[p.id], cfg, embedder) for p in prompts]
        flat = [rec for p in prompts for rec in records[p.id]]
        res = SettingResult(
            s,
            {m: np.array([d[m] for d in per]) for m in METRICS},
            _survival(flat, cfg),
            _spectrum([[-x for x in rec["logprobs"]] for rec in flat]),
            seconds=time.perf_counter() - t,
            generated=generated,
        )
        results.append(res)
        log(
            f"{s.name:28} judge ppl {math.exp(nanmean(res.per_prompt['nll_judge'])):7.2f}  "
            f"gen ppl {math.exp(nanmean(res.per_prompt['nll_gen'])):7.2f}  "
            f"distinct_k {nanmean(res.per_prompt['distinct_k']):.2f}  slope {nanmean(res.per_prompt['psd_slope']):+.2f}  "
            f"({generated} generated, {res.seconds:.0f} s)"
        )
    bar.close()
    human = human_reference(engine, cfg, cfg.seed)
    summarize(results, resample_indices(len(prompts), cfg.n_boot, cfg.seed), cfg.level)
    part = ms.validate_partitioner(cfg.partitioner, embedder=embedder if cfg.partitioner == "embedding" else None)
    return LongformResult(cfg, prompts, results, human, part, judge_note, time.perf_counter() - t0, machine_info())
