"""The long-form benchmark: does colored noise help where its color can matter?

Issue #17. The frontier benchmark (:mod:`sazanami.evals.frontier`) measures 32-token samples
under their own generator; here each sample is long (256–512 new tokens), so slow temperature
drifts have room to act, and is measured per sample and per prompt:

- the **surprisal spectrum** of the text under the generator at T = 1 (Welch PSD slope and
  DFA exponent, :mod:`sazanami.noise.spectra`), against a **human reference** — running prose of the
  Python Language Reference shipped in the standard library (:mod:`~.judge`);
- **repetition** inside a sample (distinct-2, the longest repeated word n-gram) and the
  **degeneration point** (first verbatim token loop or first token with p < 1e-4);
- **perplexity under the generator and under an independent judge**, Gemma 3 270M run by
  llama.cpp (skipped, with a message, when its wheels or llama-cpp-python are missing);
- **distinct_k**, NoveltyBench's number of equivalence classes among a prompt's k samples,
  with an embedding-threshold partitioner validated on hand-labelled pairs (:mod:`~.measures`),
  beside semantic diversity.

Gains over the temperature curve are taken at equal log-perplexity under the judge, with
paired percentile bootstrap intervals over prompts — the frontier's generation cache,
statistics and plot helpers, reused. Held out: the default prompts are
``bench/data/creative_test.jsonl``; tune on ``creative_dev.jsonl``.

Entry points: :func:`run_longform` and ``sazanami bench longform``.
"""

from sazanami.evals.longform.judge import GemmaJudge, human_passages, human_prose, judge_unavailable
from sazanami.evals.longform.measures import (
    PARTITIONERS,
    degeneration_point,
    distinct_k,
    first_improbable,
    first_loop,
    longest_repeat,
    partition,
    validate_partitioner,
)
from sazanami.evals.longform.outputs import write_outputs
from sazanami.evals.longform.run import (
    LONGFORM_METHODS,
    QUICK_METHODS,
    TEST_PROMPTS,
    LongformConfig,
    LongformResult,
    longform_settings,
    run_longform,
)

__all__ = [
    "LONGFORM_METHODS",
    "PARTITIONERS",
    "QUICK_METHODS",
    "TEST_PROMPTS",
    "GemmaJudge",
    "LongformConfig",
    "LongformResult",
    "degeneration_point",
    "distinct_k",
    "first_improbable",
    "first_loop",
    "human_passages",
    "human_prose",
    "judge_unavailable",
    "longest_repeat",
    "longform_settings",
    "partition",
    "run_longform",
    "validate_partitioner",
    "write_outputs",
]
