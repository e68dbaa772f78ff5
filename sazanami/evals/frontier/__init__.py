"""The diversity-coherence frontier benchmark: does noise buy diversity that temperature cannot?

For each method (a sampler family) and each setting of its sweep, the benchmark draws
``samples`` completions of every prompt, each from its own seed, and measures per prompt:

- **semantic diversity** — :func:`sazanami.measure.metrics.semantic_diversity` of the prompt's samples
  (mean pairwise cosine distance of all-MiniLM-L6-v2 embeddings);
- **lexical diversity** — distinct-2 and self-BLEU (:mod:`sazanami.measure.metrics`);
- **perplexity** under the reference model, i.e. the generating model itself at T = 1 without
  any processing: ``exp(mean −log p)`` over the prompt's tokens, pooled over its samples. The
  engine reports the raw model's log-probabilities with every completion, so this is free;
  noise that enters the forward pass (``hidden``, ``embedding``) changes those, so such
  completions are re-scored by a clean forward pass (:func:`score_completions`);
- **Radvand gap** — mean(−log p) − mean(entropy) of the raw model's next-token distributions
  (:func:`sazanami.measure.metrics.surprisal_entropy_gap`): ≈ 0 for faithful T = 1 samples, < 0 for
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

Modules, one concept each: :mod:`~.methods` (the method catalogue and its settings),
:mod:`~.prompts` (the prompt file), :mod:`~.generation` (the cache and batched generation),
:mod:`~.statistics` (metrics, bootstrap intervals, frontier gains), :mod:`~.run` (config,
results, :func:`run_frontier`), :mod:`~.plots` and :mod:`~.outputs` (CSV, PNG, JSON).

Entry points: :func:`run_frontier` (Python), ``sazanami bench frontier`` (CLI, see
:mod:`sazanami.cli.bench`) and ``bench/frontier.py``.
"""

from sazanami.evals.frontier.generation import GenerationCache, code_fingerprint, score_completions
from sazanami.evals.frontier.methods import METHODS, Method, Setting, method_settings
from sazanami.evals.frontier.outputs import read_csv, write_csv, write_outputs
from sazanami.evals.frontier.plots import plot_frontier, plot_gains
from sazanami.evals.frontier.prompts import DEFAULT_PROMPTS, PromptItem, load_prompts
from sazanami.evals.frontier.run import FrontierConfig, FrontierResult, SettingResult, run_frontier, summarize
from sazanami.evals.frontier.statistics import (
    bootstrap_ci,
    frontier_gain,
    interpolate_curve,
    prompt_metrics,
    resample_indices,
)

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
