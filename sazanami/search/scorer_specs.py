"""Scorer specs: :func:`make_scorer` builds a scorer from a string (``"contains:dog,ball"``,
``"0.7*judge+0.3*novelty"``, ``"rank:judge+logprob"``), a dict (flows) or a callable.

Moved out of :mod:`sazanami.search.scorers`, which holds the scorers themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sazanami.errors import ParameterError
from sazanami.search.doctest_scorer import DoctestScorer
from sazanami.search.scorers import (
    CombinedScorer,
    ContainsScorer,
    JudgeScorer,
    LogprobScorer,
    NoveltyScorer,
    RegexScorer,
    Scorer,
    VerifierScorer,
)

__all__ = ["SCORER_NAMES", "make_scorer", "with_judge_template"]

SCORER_NAMES = ("logprob", "judge", "novelty", "doctest", "contains:WORDS", "regex:PATTERN", "py:MODULE:FUNCTION")


def make_scorer(spec: Any) -> Scorer:
    """A scorer from a spec: a Scorer, a callable (verifier), a string or a dict.

    Strings: ``logprob``, ``judge``, ``novelty``, ``contains:dog,ball,park``,
    ``doctest`` (the fraction of the task's ``>>>`` examples a code candidate passes, run in
    the sandbox), ``regex:PATTERN`` (the rest of the string is the pattern), ``py:module:function``
    (a verifier), ``0.7*judge+0.3*novelty`` (weighted sum), ``rank:judge+logprob``
    (mean rank). Dicts: ``{"type": "contains", "words": [...]}``, ``{"type": "judge",
    "template": ..., "max_tokens": 4}``, ``{"type": "combine", "mode": "sum", "parts":
    [{"scorer": ..., "weight": 1.0}, ...]}`` and so on.
    """
    if isinstance(spec, Scorer):
        return spec
    if isinstance(spec, dict):
        return _from_dict(spec)
    if callable(spec):
        return VerifierScorer(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError("scorer", f"scorer must be a name, spec string, dict or callable, got {spec!r}")
    text = spec.strip()
    if text.startswith("regex:"):
        try:
            return RegexScorer(text[len("regex:") :])
        except ParameterError as exc:
            raise ParameterError("scorer", str(exc)) from exc
    mode = "sum"
    if text.startswith("rank:"):
        mode, text = "rank", text[len("rank:") :]
    terms = [t.strip() for t in text.split("+")]
    if len(terms) == 1 and mode == "sum" and "*" not in terms[0]:
        return _single(terms[0])
    parts = []
    for term in terms:
        weight = 1.0
        if "*" in term:
            w, term = term.split("*", 1)
            try:
                weight = float(w)
            except ValueError as exc:
                raise ParameterError("scorer", f"bad weight {w!r} in scorer spec {spec!r}") from exc
        parts.append((_single(term.strip()), weight))
    return CombinedScorer(parts, mode)


def with_judge_template(scorer: Scorer, template: str) -> Scorer:
    """``scorer`` with every judge in it (combined parts included) using ``template``."""

    def swap(s: Scorer) -> tuple[Scorer, bool]:
        if isinstance(s, JudgeScorer):
            return JudgeScorer(template, s.max_tokens, s.engine, s.fn, s.prefix), True
        if isinstance(s, CombinedScorer):
            parts = [(swap(p), w) for p, w in s.parts]
            return CombinedScorer([(p, w) for (p, _), w in parts], s.mode), any(f for (_, f), _ in parts)
        return s, False

    out, found = swap(scorer)
    if not found:
        raise ParameterError("judge_template", "a judge template needs a judge scorer (e.g. --scorer judge)")
    return out


def _single(name: str) -> Scorer:
    if name == "logprob":
        return LogprobScorer()
    if name == "judge":
        return JudgeScorer()
    if name == "novelty":
        return NoveltyScorer()
    if name == "doctest":
        return DoctestScorer()
    if name.startswith("contains:"):
        return ContainsScorer(name[len("contains:") :])
    if name.startswith("py:"):
        return VerifierScorer(_import(name[3:]))
    raise ParameterError("scorer", f"unknown scorer {name!r}; known: {', '.join(SCORER_NAMES)}")


def _import(path: str) -> Callable[[str], Any]:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ParameterError("scorer", f"a Python verifier is py:module:function, got py:{path}")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ParameterError("scorer", f"cannot import verifier {path!r}: {exc}") from exc
    if not callable(obj):
        raise ParameterError("scorer", f"verifier {path!r} is not callable")
    return obj


_DICT_KEYS = {
    "logprob": set(),
    "judge": {"template", "max_tokens", "prefix"},
    "novelty": {"reference"},
    "doctest": {"prompt"},
    "contains": {"words"},
    "regex": {"patterns", "pattern", "ignore_case"},
    "verifier": {"function"},
    "combine": {"mode", "parts"},
}


def _from_dict(spec: dict[str, Any]) -> Scorer:
    kind = spec.get("type")
    if kind not in _DICT_KEYS:
        raise ParameterError("scorer.type", f"scorer type must be one of {', '.join(_DICT_KEYS)}, got {kind!r}")
    extra = sorted(set(spec) - _DICT_KEYS[kind] - {"type"})
    if extra:
        known = ", ".join(sorted(_DICT_KEYS[kind])) or "none"
        raise ParameterError(f"scorer.{extra[0]}", f"unknown field {extra[0]!r} for a {kind} scorer; known: {known}")
    try:
        if kind == "logprob":
            return LogprobScorer()
        if kind == "judge":
            return JudgeScorer(**{k: spec[k] for k in ("template", "max_tokens", "prefix") if k in spec})
        if kind == "novelty":
            return NoveltyScorer(reference=spec.get("reference"))
        if kind == "doctest":
            prompt = spec.get("prompt")
            if prompt is not None and not isinstance(prompt, str):
                raise ParameterError("scorer.prompt", f"scorer.prompt must be a string, got {type(prompt).__name__}")
            return DoctestScorer(prompt)
        if kind == "contains":
            return ContainsScorer(spec.get("words") or [])
        if kind == "regex":
            patterns = spec.get("patterns", spec.get("pattern", []))
            try:
                return RegexScorer(patterns, bool(spec.get("ignore_case", False)))
            except ParameterError as exc:
                raise ParameterError("scorer.patterns", str(exc)) from exc
        if kind == "verifier":
            return VerifierScorer(_import(str(spec.get("function", ""))))
    except TypeError as exc:
        raise ParameterError("scorer", f"bad {kind} scorer: {exc}") from exc
    parts = spec.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ParameterError("scorer.parts", "combine needs a non-empty list of parts")
    built = []
    for i, p in enumerate(parts):
        if isinstance(p, dict) and "scorer" in p:
            built.append((make_scorer(p["scorer"]), float(p.get("weight", 1.0))))
        elif isinstance(p, (str, dict)):
            built.append((make_scorer(p), 1.0))
        else:
            raise ParameterError(f"scorer.parts[{i}]", f"bad combine part {p!r}")
    return CombinedScorer(built, spec.get("mode", "sum"))
