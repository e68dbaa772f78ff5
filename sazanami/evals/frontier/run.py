"""One frontier run: its configuration, its results, and :func:`run_frontier`, which makes them.

A setting's **frontier gain** (see :func:`summarize`) is its mean diversity minus the
temperature curve at its mean log-perplexity; the verdict says whether its interval lies
``beyond`` the curve, ``below`` it, ``on`` it, or ``outside`` the curve's range.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sazanami.errors import ParameterError
from sazanami.evals.frontier.generation import GenerationCache, generate_setting
from sazanami.evals.frontier.methods import METHODS, Setting, method_settings
from sazanami.evals.frontier.prompts import DEFAULT_PROMPTS, PromptItem, load_prompts
from sazanami.evals.frontier.statistics import (
    METRICS,
    bootstrap_ci,
    frontier_gain,
    nanmean,
    prompt_metrics,
    resample_indices,
)
from sazanami.models import DEFAULT_MODEL, cpu_model, load

if TYPE_CHECKING:
    from sazanami.engine.loop import Engine
    from sazanami.measure.embeddings import TextEncoder


@dataclass(frozen=True)
class FrontierConfig:
    """What one benchmark run does. ``None`` sizes take the quick or full defaults."""

    prompts: str | Path = DEFAULT_PROMPTS
    """JSONL prompts ({id, prompt} per line)."""
    methods: tuple[str, ...] | None = None
    """Method names (:data:`METHODS`, comma-separated on the command line; see --list-methods); None = all. ``temperature`` is always added: it is the reference."""
    samples: int | None = None
    """Samples per prompt and setting (default 8; quick 4)."""
    max_tokens: int | None = None
    """New tokens per sample (default 48; quick 32)."""
    limit: int | None = None
    """Use the first ``limit`` prompts (default all; quick 6)."""
    quick: bool = False
    """Few prompts, samples, tokens and settings: minutes on a laptop CPU."""
    model: str | None = None
    """Registry name, HF directory or .gguf; None = the embedded default."""
    seed: int = 0
    """Base seed of the samples and the bootstrap."""
    n_boot: int = 2000
    """Bootstrap resamples."""
    level: float = 0.95
    """Confidence level of the bootstrap intervals."""
    cache: str | Path | None = None
    """Generation cache (JSONL), shared by runs (None: none)."""
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
        """One CSV row per setting (:meth:`SettingResult.row`)."""
        return [r.row() for r in self.results]

    def prompt_rows(self) -> list[dict[str, Any]]:
        """One CSV row per setting and prompt: the per-prompt metrics."""
        return [
            {"method": r.setting.method, "label": r.setting.label, "prompt": p.id}
            | {m: _round(float(r.per_prompt[m][i])) for m in METRICS}
            for r in self.results
            for i, p in enumerate(self.prompts)
        ]


def _round(v: float) -> float:
    return float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else v


def machine_info() -> dict[str, Any]:
    """What ran the benchmark (for the report)."""
    return {
        "cpu": cpu_model(),
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
        from sazanami.engine.loop import Engine

        engine = Engine(load(cfg.model or DEFAULT_MODEL))
    caps = getattr(engine.backend, "capabilities", None)
    for setting in settings if caps is not None else ():  # refuse up front what the backend cannot run
        caps.check(setting.sampling_params(cfg.max_tokens or 1).fluctuation)
    if embedder is None:
        from sazanami.measure.embeddings import get_embedder

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
            f"{s.name:32} diversity {nanmean(res.per_prompt['semantic_diversity']):.3f}  "
            f"ppl {math.exp(nanmean(res.per_prompt['nll'])):7.2f}  gap {nanmean(res.per_prompt['gap']):+.2f}  "
            f"({generated} generated, {res.seconds:.0f} s)"
        )
    bar.close()
    summarize(results, resample_indices(len(prompts), cfg.n_boot, cfg.seed), cfg.level)
    return FrontierResult(cfg, prompts, results, time.perf_counter() - t0, machine_info())
