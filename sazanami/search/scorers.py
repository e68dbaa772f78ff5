"""Scorers: text(s) in, one float per text out (higher is better), with a reason where there is one.

Every scorer implements ``score(items, ctx=None) -> list[Score]`` over a batch (some scorers,
like novelty and mean rank, compare the items with each other) and is callable on plain
strings: ``ContainsScorer(["dog", "ball"])("A dog and a ball.")``. A :class:`Score` whose
``value`` is None is *unscored* — a judge that answered no number, a verifier that returned
None — and ranks below every scored item; it never raises.

Built-ins:

- :class:`LogprobScorer` — mean token log-probability (perplexity in the reason), under the
  generating model or, with ``engine=``, another one;
- :class:`JudgeScorer` — LLM-as-judge: the model is asked for a 0–100 score, the reply
  parsed robustly by :func:`parse_judge_score`; value in [0, 1];
- :class:`NoveltyScorer` — mean cosine distance to the other items' embeddings
  (all-MiniLM-L6-v2);
- :class:`VerifierScorer` — any callable text → float | bool | None (| (value, reason));
  :class:`RegexScorer` and :class:`ContainsScorer` (keyword coverage, inflection-tolerant);
- :class:`CombinedScorer` — weighted sum or mean rank of several scorers.

:func:`~sazanami.search.scorer_specs.make_scorer` builds any of them from a spec string
(``"contains:dog,ball"``, ``"0.7*judge+0.3*novelty"``, ``"rank:judge+logprob"``) or a dict
(flows); the inflection rules behind ``contains`` live in :mod:`sazanami.search.inflection`.

Scorers that run the model (the judge) charge the tokens they generate to the search's
budget through ``ctx``; ``cost_per_item`` is the most one item may cost, so strategies can
keep room for scoring when they plan a round.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sazanami.errors import ParameterError, check_int, check_range
from sazanami.search.inflection import concept_coverage

if TYPE_CHECKING:
    from sazanami.engine.loop import Engine
    from sazanami.measure.embeddings import TextEncoder

__all__ = [
    "CombinedScorer",
    "ContainsScorer",
    "JudgeScorer",
    "LogprobScorer",
    "NoveltyScorer",
    "RegexScorer",
    "Score",
    "Scorer",
    "VerifierScorer",
    "parse_judge_score",
    "token_logprobs",
]


@dataclass(frozen=True)
class Score:
    """One scorer's verdict on one item."""

    value: float | None
    """Higher is better; None = unscored."""
    reason: str = ""
    parts: dict[str, float | None] = field(default_factory=dict)
    """Per-scorer values for combined scorers."""

    @property
    def scored(self) -> bool:
        return self.value is not None


class Candidate(Protocol):
    """What scorers read from an item (a tree node or a plain text)."""

    text: str
    logprobs: list[float]
    token_ids: list[int]


@dataclass
class _Text:
    text: str
    logprobs: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)


class Host(Protocol):
    """The running search, as scorers see it (see :class:`sazanami.search.context.SearchContext`)."""

    engine: Engine
    task: str
    cache: dict[Any, Any]

    def complete(
        self, prompts: list[str], max_tokens: int, kind: str, engine: Engine | None = None, prefix: str = ""
    ) -> list[str | None]:
        """Greedy replies to chat ``prompts`` (after ``prefix``), charged to the budget; None where it ran out."""
        ...


def as_items(items: Any) -> list[Any]:
    """Candidates as items with a ``.text``: a lone string, or a list of strings and items."""
    if isinstance(items, str):
        return [_Text(items)]
    return [_Text(x) if isinstance(x, str) else x for x in items]


class Scorer:
    """Base class: subclasses implement :meth:`score`."""

    name: str = "scorer"
    cost_per_item: int = 0
    """Most tokens the model may generate to score one item."""

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        raise NotImplementedError

    def __call__(self, items: str | Sequence[Any], ctx: Host | None = None) -> Score | list[Score]:
        """Score one text (returns a Score) or a list (returns a list)."""
        out = self.score(as_items(items), ctx)
        return out[0] if isinstance(items, str) else out

    def spec(self) -> Any:
        """A JSON-able description (recorded in the tree's config)."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"


# --------------------------------------------------------------------------- logprob


class LogprobScorer(Scorer):
    """Mean token log-probability; the reason gives the perplexity.

    Without ``engine`` the log-probs recorded when the item was generated are used (under
    whatever prompt produced it). With ``engine`` (the same model or another) the text is
    re-scored by teacher forcing after the task prompt; those prompt tokens are reported,
    nothing is generated. Items with no tokens are unscored.
    """

    name = "logprob"

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        items = as_items(items)
        out = []
        for it in items:
            lps = list(getattr(it, "logprobs", []) or [])
            # Injected tool results are given, not drawn: they carry no evidence of the model's belief.
            injected = {i for sp in getattr(it, "spans", None) or [] for i in range(sp["token_start"], sp["token_end"])}
            lps = [x for i, x in enumerate(lps) if i not in injected]
            if self.engine is not None or (not lps and ctx is not None and it.text):
                engine = self.engine or ctx.engine  # type: ignore[union-attr]
                task = ctx.task if ctx is not None else ""
                lps = token_logprobs(engine, task, it.text)
            if not lps:
                out.append(Score(None, "no tokens"))
                continue
            mean = sum(lps) / len(lps)
            out.append(Score(mean, f"perplexity {math.exp(-mean):.2f}"))
        return out


def token_logprobs(engine: Engine, task: str, text: str) -> list[float]:
    """Log-probability of each token of ``text`` as the answer to ``task`` (teacher forcing)."""
    import torch

    prompt_ids = engine.encode(task) if task else []
    answer = engine.tokenizer.encode(text)
    if not answer:
        return []
    ids = prompt_ids + answer
    backend = engine.backend
    with torch.inference_mode():
        cache = backend.new_cache(1, len(ids) + 1)
        logits = backend.forward(
            torch.tensor([ids]), cache, torch.zeros(1, dtype=torch.long), last_only=False
        )  # (1, T, V)
        logp = torch.log_softmax(logits[0].float(), -1)  # (T, V)
    # Position t predicts token t+1; the first answer token is predicted by the last prompt token.
    start = len(prompt_ids)
    positions = range(max(start, 1), len(ids))
    return [float(logp[t - 1, ids[t]]) for t in positions]


# --------------------------------------------------------------------------- judge

DEFAULT_JUDGE_TEMPLATE = (
    "Rate how well the answer below fulfils the task, on a scale from 0 (useless) to 100 (perfect).\n\n"
    "Task: {task}\n\nAnswer: {text}\n\nReply with the number only."
)
DEFAULT_JUDGE_PREFIX = "Score: "

_RATIO = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of|of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")
_NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)")
_WORDS = {
    "zero": 0,
    "ten": 10,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
}


def parse_judge_score(reply: str) -> float | None:
    """The 0–100 score in a judge's reply, or None when there is none.

    Accepts ``"85"``, ``"Score: 85."``, ``"85/100"``, ``"8/10"`` (→ 80), ``"4 out of 5"``
    (→ 80), ``"85%"``, ``"eighty"``; a ratio wins over a percentage, which wins over a bare
    number. Numbers outside [0, 100], ratios above 1 and replies without a number give None.
    """
    if not isinstance(reply, str):
        return None
    text = reply.strip()
    m = _RATIO.search(text)
    if m:
        num, den = float(m.group(1)), float(m.group(2))
        # A ratio that is not a score ("12/5", a date) means the reply is not a score at all.
        return 100.0 * num / den if den > 0 and 0 <= num <= den else None
    # A percentage wins over a bare number; either must lie in [0, 100].
    m = _PERCENT.search(text) or _NUMBER.search(text)
    if m:
        v = float(m.group(1))
        return v if 0 <= v <= 100 else None
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _WORDS:
            return float(_WORDS[word])
    return None


class JudgeScorer(Scorer):
    """LLM-as-judge: asks for a 0–100 score; value = score / 100 in [0, 1].

    Args:
        template: the judge prompt, with ``{task}`` and ``{text}``.
        max_tokens: reply length; a number needs 1–4 tokens.
        engine: the judging model (default: the search's own engine).
        fn: a callable ``prompt -> reply`` used instead of a model (tests, remote judges);
            its replies cost no budget.
        prefix: the start of the judge's reply, written for it ("Score: "), so that the
            number comes first; what the model adds is parsed.

    The reply is decoded greedily, so a judge is deterministic. Replies that hold no
    number in range are *unscored* (reason: the reply), never an error. Identical texts
    are judged once per search.
    """

    name = "judge"

    def __init__(
        self,
        template: str = DEFAULT_JUDGE_TEMPLATE,
        max_tokens: int = 4,
        engine: Engine | None = None,
        fn: Callable[[str], str] | None = None,
        prefix: str = DEFAULT_JUDGE_PREFIX,
    ) -> None:
        if "{text}" not in template:
            raise ParameterError("template", "judge template must contain {text}")
        check_int("max_tokens", max_tokens, 1, 64)
        self.template = template
        self.max_tokens = max_tokens
        self.engine = engine
        self.fn = fn
        self.prefix = str(prefix)
        self.cost_per_item = 0 if fn is not None else max_tokens

    def prompt_for(self, task: str, text: str) -> str:
        return self.template.replace("{task}", task).replace("{text}", text)

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        items = as_items(items)
        task = ctx.task if ctx is not None else ""
        # Cached per search (ctx.cache), so a shared scorer never hands out free verdicts.
        cache: dict[Any, Score] | None = getattr(ctx, "cache", None)
        if cache is None:
            cache = {}
        key = ("judge", self.template, task)
        out: list[Score | None] = [cache.get((*key, it.text)) for it in items]
        todo = sorted({it.text for it, s in zip(items, out, strict=False) if s is None})
        if todo:
            prompts = [self.prompt_for(task, t) for t in todo]
            if self.fn is not None:
                replies: list[str | None] = [self.fn(p) for p in prompts]
            elif ctx is not None:
                replies = ctx.complete(prompts, self.max_tokens, "judge", self.engine, self.prefix)
            elif self.engine is not None:
                replies = _greedy(self.engine, prompts, self.max_tokens, self.prefix)
            else:
                raise ParameterError("judge", "the judge needs a model: pass engine= or fn=, or score inside a search")
            for text, reply in zip(todo, replies, strict=False):
                if reply is None:
                    score = Score(None, "unscored: budget spent")
                else:
                    value = parse_judge_score(reply)
                    said = " ".join(str(reply).split())[:60]
                    score = Score(None if value is None else value / 100.0, f"judge said {said!r}")
                    cache[(*key, text)] = score
                for i, it in enumerate(items):
                    if out[i] is None and it.text == text:
                        out[i] = score
        return [s if s is not None else Score(None, "unscored") for s in out]

    def spec(self) -> Any:
        if self.template == DEFAULT_JUDGE_TEMPLATE and self.max_tokens == 4 and self.prefix == DEFAULT_JUDGE_PREFIX:
            return "judge"
        return {"type": "judge", "template": self.template, "max_tokens": self.max_tokens, "prefix": self.prefix}


def _greedy(engine: Engine, prompts: list[str], max_tokens: int, prefix: str = "") -> list[str | None]:
    from sazanami.sampling.params import SamplingParams
    from sazanami.sampling.rows import RowRequest

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0)
    extra = engine.tokenizer.encode(prefix) if prefix else []
    rows = [RowRequest(engine.encode(p) + extra, params, 0, index=i) for i, p in enumerate(prompts)]
    return [c.text for c in engine.run(rows)]


# --------------------------------------------------------------------------- novelty


class NoveltyScorer(Scorer):
    """Mean cosine distance (1 − cos) of an item's embedding to the other items scored with it.

    In [0, 2], in practice [0, 1]. With ``reference`` texts, the distance is to those
    instead (e.g. what an earlier round produced). A lone item with no reference is
    unscored. Embeddings come from all-MiniLM-L6-v2 unless ``embedder`` is given.
    """

    name = "novelty"

    def __init__(self, embedder: TextEncoder | None = None, reference: Sequence[str] | None = None) -> None:
        self.embedder = embedder
        self.reference = list(reference) if reference is not None else None

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        import torch

        items = as_items(items)
        texts = [it.text for it in items]
        ref = self.reference
        if not texts or (ref is None and len(texts) < 2) or (ref is not None and not ref):
            return [Score(None, "nothing to compare with") for _ in texts]
        embedder = self.embedder
        if embedder is None:
            from sazanami.measure.embeddings import get_embedder

            embedder = get_embedder()
        emb = torch.nn.functional.normalize(embedder.encode(texts + (ref or [])).float(), dim=-1)  # (N+R, D)
        x = emb[: len(texts)]
        if ref is None:
            sim = x @ x.T  # (N, N)
            n = len(texts)
            mean_sim = (sim.sum(-1) - sim.diagonal()) / (n - 1)
        else:
            mean_sim = (x @ emb[len(texts) :].T).mean(-1)
        return [Score(float(1 - s), f"mean cosine {float(s):.2f} to the others") for s in mean_sim]


# --------------------------------------------------------------------------- verifiers


class VerifierScorer(Scorer):
    """Any callable ``text -> float | bool | None`` (or ``(value, reason)``) as a scorer.

    True/False become 1.0/0.0; None and NaN are unscored. Exceptions raised by the
    callable propagate (a broken verifier should not pass silently).
    """

    def __init__(self, fn: Callable[[str], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise ParameterError("verifier", f"verifier must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "verifier")

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        return [_as_score(self.fn(it.text)) for it in as_items(items)]

    def spec(self) -> Any:
        mod = getattr(self.fn, "__module__", None)
        return f"py:{mod}:{self.fn.__qualname__}" if mod and hasattr(self.fn, "__qualname__") else self.name


def _as_score(result: Any) -> Score:
    reason = ""
    if isinstance(result, tuple) and len(result) == 2:
        result, reason = result
    if isinstance(result, Score):
        return result
    if result is None:
        return Score(None, reason or "verifier returned None")
    if isinstance(result, bool):
        return Score(1.0 if result else 0.0, reason)
    try:
        value = float(result)
    except (TypeError, ValueError):
        return Score(None, f"verifier returned {result!r}")
    return Score(value, str(reason)) if math.isfinite(value) else Score(None, f"verifier returned {value}")


class RegexScorer(Scorer):
    """Fraction of ``patterns`` found (searched for anywhere) in the text: 1.0 when all match.

    Patterns run on RE2 (``google-re2``), whose matching takes time linear in the text, so no
    pattern can stall a search (Python's backtracking ``re`` takes exponential time on
    ``(.?){22}.{22}Z``, and holds the GIL throughout); RE2 also releases the GIL while it
    matches. RE2's syntax is Python's less backreferences and lookaround, which it refuses
    (``ParameterError`` naming ``patterns``).
    """

    name = "regex"

    def __init__(self, patterns: str | Sequence[str], ignore_case: bool = False) -> None:
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        if not pats:
            raise ParameterError("patterns", "regex scorer needs at least one pattern")
        self.compiled = [compile_regex(p, "patterns", ignore_case) for p in pats]
        self.patterns = pats
        self.ignore_case = ignore_case

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        out = []
        for it in as_items(items):
            missing = [p for p, c in zip(self.patterns, self.compiled, strict=False) if not c.search(it.text)]
            value = 1 - len(missing) / len(self.patterns)
            out.append(Score(value, "all patterns match" if not missing else "no match: " + ", ".join(missing)))
        return out

    def spec(self) -> Any:
        if len(self.patterns) == 1 and not self.ignore_case:
            return f"regex:{self.patterns[0]}"
        return {"type": "regex", "patterns": self.patterns, "ignore_case": self.ignore_case}


MAX_PATTERN_CHARS = 1000
"""Characters of one regex scorer pattern at most."""


def compile_regex(pattern: Any, param: str, ignore_case: bool = False) -> Any:
    """A user's regex compiled by RE2 (linear-time matching; ``.search(text)`` as in ``re``).

    ``ParameterError`` naming ``param`` for a pattern that is not text, longer than
    :data:`MAX_PATTERN_CHARS`, or that RE2 refuses (backreferences, lookaround, a bad
    syntax, more than RE2's memory for one pattern).
    """
    import re2

    if not isinstance(pattern, str):
        raise ParameterError(param, f"{param} must hold text patterns, got {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ParameterError(
            param, f"a {param} pattern must be at most {MAX_PATTERN_CHARS} characters, got {len(pattern)}"
        )
    options = re2.Options()
    options.log_errors = False  # the error is the client's, said in the ParameterError
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ParameterError(
            param,
            f"invalid regular expression {pattern[:60]!r}: {why} (patterns run on RE2, which matches in linear "
            "time and has no backreferences or lookaround)",
        ) from exc


class ContainsScorer(Scorer):
    """Keyword coverage: the fraction of ``words`` the text uses, inflections included.

    "jumps", "jumped" and "jumping" all use "jump"; irregular forms of common words too
    ("ran" uses "run", "knives" uses "knife"). The reason names the missing words.
    """

    name = "contains"

    def __init__(self, words: Sequence[str]) -> None:
        if isinstance(words, str):
            words = [w.strip() for w in words.split(",")]
        words = [w for w in words if isinstance(w, str) and w.strip()]
        if not words:
            raise ParameterError("words", "contains scorer needs at least one word")
        self.words = list(words)

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        out = []
        for it in as_items(items):
            value, missing = concept_coverage(it.text, self.words)
            out.append(Score(value, "uses every word" if not missing else "missing: " + ", ".join(missing)))
        return out

    def spec(self) -> Any:
        return "contains:" + ",".join(self.words)


# --------------------------------------------------------------------------- combine


class CombinedScorer(Scorer):
    """Several scorers in one: ``mode="sum"`` or ``"rank"``.

    - ``sum``: the weighted mean Σ wᵢ·vᵢ / Σ wᵢ over the parts that scored the item (an
      unscored part drops out; all unscored → unscored). Parts should share a scale
      (judge, contains, regex and novelty lie in [0, 1]; logprob does not — use rank).
    - ``rank``: the weighted mean of each part's normalised rank of the item among the
      items scored together (0 = worst, 1 = best; ties share the mean rank; unscored = 0).

    Per-part values are kept in ``Score.parts`` (a tree node's ``scores``).
    """

    name = "combine"

    def __init__(self, parts: Sequence[tuple[Scorer, float]], mode: str = "sum") -> None:
        if mode not in ("sum", "rank"):
            raise ParameterError("mode", f"combine mode must be 'sum' or 'rank', got {mode!r}")
        if not parts:
            raise ParameterError("parts", "combine needs at least one scorer")
        for _, w in parts:
            check_range("weight", w, 0, None, low_open=True)
        self.parts = list(parts)
        self.mode = mode
        self.cost_per_item = sum(s.cost_per_item for s, _ in parts)
        names: list[str] = []
        for s, _ in self.parts:
            base, k = s.name, 2
            while (s.name if k == 2 else f"{base}{k - 1}") in names:
                k += 1
            names.append(base if k == 2 else f"{base}{k - 1}")
        self.names = names

    def score(self, items: Sequence[Any], ctx: Host | None = None) -> list[Score]:
        items = as_items(items)
        per = [s.score(items, ctx) for s, _ in self.parts]  # per[part][item]
        weights = [w for _, w in self.parts]
        if self.mode == "rank":
            per_values = [_ranks([x.value for x in scores]) for scores in per]
        else:
            per_values = [[x.value for x in scores] for scores in per]
        out = []
        for i in range(len(items)):
            pairs = [(vals[i], w) for vals, w in zip(per_values, weights, strict=False) if vals[i] is not None]
            value = sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None
            parts = {name: scores[i].value for name, scores in zip(self.names, per, strict=False)}
            reason = "; ".join(
                f"{name}: {scores[i].reason}" for name, scores in zip(self.names, per, strict=False) if scores[i].reason
            )
            out.append(Score(value, reason, parts))
        return out

    def spec(self) -> Any:
        return {
            "type": "combine",
            "mode": self.mode,
            "parts": [{"scorer": s.spec(), "weight": w} for s, w in self.parts],
        }


def _ranks(values: list[float | None]) -> list[float | None]:
    """Normalised ranks in [0, 1] (ties averaged); unscored items rank 0; one item → 1."""
    scored = sorted((v, i) for i, v in enumerate(values) if v is not None)
    out: list[float | None] = [0.0] * len(values)
    n = len(values)
    j = 0
    while j < len(scored):
        k = j
        while k + 1 < len(scored) and scored[k + 1][0] == scored[j][0]:
            k += 1
        # Unscored items occupy the bottom ranks 0..(n - len(scored) - 1).
        mean_rank = (n - len(scored)) + (j + k) / 2
        for t in range(j, k + 1):
            out[scored[t][1]] = mean_rank / (n - 1) if n > 1 else 1.0
        j = k + 1
    return out
