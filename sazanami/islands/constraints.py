"""Grammar constraints through llguidance: regex, JSON schema or Lark grammar.

A constrained row gets a token mask before every draw: tokens the grammar cannot take
next get −inf logits. The mask is applied to the logits the sampler receives, so every
later step keeps them out: penalties, temperature and logit noise leave −inf at −inf,
truncation never revives a token and the draw never picks a zero-probability token. A
guard after the draw checks this and, should a sampler ever break it, replaces the token
by the most likely allowed one (counted in ``ConstraintBatch.repairs``).

Tokens injected by tools are not shown to the grammar: an injected result is exempt.

Every grammar is checked against :mod:`sazanami.islands.bounds` (size, rules, nesting, the
depth of its reference chains) before llguidance compiles it: its compiler recurses in
native code, and a grammar deep enough would crash the process instead of failing.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sazanami.errors import ParameterError
from sazanami.islands.bounds import check_grammar, check_schema, loads_json

KINDS = {"regex": "regex", "json_schema": "json_schema", "lark": "grammar"}
"""Constraint kind → the parameter name used in error messages (CLI option)."""

_TOKENIZERS: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()
NEG_INF = float("-inf")


@dataclass(frozen=True)
class Constraint:
    """A grammar the output must follow; serialisable as ``{"kind": …, "source": …}``.

    The grammar is validated on construction (``ParameterError`` naming ``regex``,
    ``json_schema`` or ``grammar``): first against the bounds of :mod:`sazanami.islands.bounds`,
    then by llguidance. A regex must match the whole output.
    """

    kind: str
    """``regex``, ``json_schema`` or ``lark`` (llguidance's Lark dialect)."""
    source: str
    """The regex, the schema as JSON text, or the Lark grammar."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParameterError("kind", f"constraint kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.source, str) or not self.source.strip():
            raise ParameterError(KINDS[self.kind], f"{KINDS[self.kind]} must be a non-empty string")
        check_grammar(self.kind, self.source, KINDS[self.kind])  # before the compiler sees it
        error = self.error()
        if error:
            raise ParameterError(KINDS[self.kind], f"invalid {KINDS[self.kind]}: {error}")

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls("regex", pattern)

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> Constraint:
        if isinstance(schema, str):
            schema = loads_json(schema, "json_schema")  # its nesting checked first: never a RecursionError
        if not isinstance(schema, dict):
            raise ParameterError("json_schema", f"json_schema must be a JSON object, got {type(schema).__name__}")
        check_schema(schema, "json_schema")  # bounded before json.dumps recurses into it
        return cls("json_schema", json.dumps(schema))

    @classmethod
    def lark(cls, grammar: str) -> Constraint:
        return cls("lark", grammar)

    def grammar(self) -> str:
        """The llguidance grammar (its JSON form)."""
        from llguidance import LLMatcher

        if self.kind == "regex":
            return LLMatcher.grammar_from_regex(self.source)
        if self.kind == "json_schema":
            # Compact JSON unless the schema's "x-guidance" says otherwise: small models ramble in whitespace.
            return LLMatcher.grammar_from_json_schema(self.source, defaults={"whitespace_flexible": False})
        return LLMatcher.grammar_from_lark(self.source)

    def error(self, tokenizer: Any = None) -> str:
        """Why the grammar is invalid, or ``""`` (checked against ``tokenizer`` when given)."""
        from llguidance import LLMatcher

        try:
            grammar = self.grammar()
        except (ValueError, TypeError) as exc:
            return str(exc)
        llt = ll_tokenizer(tokenizer) if tokenizer is not None else None
        return LLMatcher.validate_grammar(grammar, llt).strip()

    def matcher(self, tokenizer: Any, vocab_size: int | None = None) -> Any:
        """A fresh ``llguidance.LLMatcher`` for one row."""
        from llguidance import LLMatcher

        m = LLMatcher(ll_tokenizer(tokenizer, vocab_size), self.grammar(), log_level=0)
        if m.is_error():
            raise ParameterError(KINDS[self.kind], f"invalid {KINDS[self.kind]}: {m.get_error()}")
        return m

    def matches(self, text: str, tokenizer: Any) -> bool:
        """Whether ``text`` is a complete output of the grammar (for checks and verifiers)."""
        m = self.matcher(tokenizer)
        ids = tokenizer.encode(text)
        return m.consume_tokens(ids) and m.is_accepting() if ids else m.is_accepting()

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Constraint:
        """The constraint :meth:`to_dict` wrote: ``{"kind": …, "source": …}``."""
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("kind"), str)
            or not isinstance(data.get("source"), str)
        ):
            raise ParameterError(
                "constraint",
                f"constraint must be an object {{kind: {' | '.join(KINDS)}, source: text}}, got {_short(data)}",
            )
        extra = sorted(str(k) for k in set(data) - {"kind", "source"})
        if extra:
            raise ParameterError(
                f"constraint.{extra[0]}", f"unknown constraint field {extra[0]!r}; known: kind, source"
            )
        return cls(data["kind"], data["source"])


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def ll_tokenizer(tokenizer: Any, vocab_size: int | None = None) -> Any:
    """llguidance's view of a :class:`~sazanami.backends.tokenizer.Tokenizer` (built once, cached).

    Built from the ``tokenizers`` JSON, so no ``transformers`` import; ``vocab_size`` is the
    model's (it may exceed the tokenizer's when the embedding matrix is padded).
    """
    from llguidance import LLTokenizer

    n = vocab_size or tokenizer.vocab_size
    per = _TOKENIZERS.setdefault(tokenizer, {})
    if n not in per:
        own = getattr(tokenizer, "lltokenizer", None)  # a tokenizer without a `tokenizers` JSON builds its own
        per[n] = (
            own(n)
            if own
            else LLTokenizer(tokenizer.rust.to_str(), n_vocab=n, eos_token=sorted(tokenizer.eos_token_ids))
        )
    return per[n]


def _bits(bitmask: torch.Tensor, vocab_size: int) -> np.ndarray:
    """Packed int32 masks (B, ⌈V/32⌉) → (B, V) uint8 0/1; bit j of word w is token 32w + j."""
    return np.unpackbits(bitmask.numpy().view(np.uint8), axis=-1, bitorder="little")[:, :vocab_size]


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """llguidance's packed int32 masks (B, ⌈V/32⌉) → allowed tokens (B, V) bool."""
    return torch.from_numpy(_bits(bitmask, vocab_size) == 1)


class ConstraintBatch:
    """The matchers of the constrained rows of an engine batch (None for free rows)."""

    def __init__(self, matchers: list[Any], vocab_size: int) -> None:
        self.matchers = matchers
        self.vocab_size = vocab_size
        self.bitmask = torch.full((len(matchers), (vocab_size + 31) // 32), -1, dtype=torch.int32)
        self.allowed: np.ndarray | None = None  # (n, V) uint8 0/1 of the last mask
        self.masked_rows: list[int] = []
        self.repairs = 0
        """Draws the post-draw guard had to correct (0 unless a sampler step unmasked a token)."""

    def select(self, keep: list[int]) -> None:
        self.matchers = [self.matchers[i] for i in keep]

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) with disallowed tokens at −inf on constrained rows; a new tensor.

        Everything here runs in the calling thread (llguidance's per-row mask takes tens of
        µs; numpy for the rest): a thread-pool round trip would cost more than it saves, and
        its spinning workers slow the model's own threads on a small CPU.
        """
        rows = [i for i, m in enumerate(self.matchers) if m is not None]
        self.masked_rows = rows
        if not rows:
            self.allowed = None
            return logits
        packed = self.bitmask[: len(rows)]  # (n, W) int32, contiguous
        nbytes = packed.shape[1] * 4
        for j, b in enumerate(rows):
            self.matchers[b].unsafe_compute_mask_ptr(packed[j].data_ptr(), nbytes)
        allowed = _bits(packed, self.vocab_size)  # (n, V)
        self.allowed = allowed
        x = logits.numpy()
        if len(rows) == len(x):
            return torch.from_numpy(np.where(allowed.view(np.bool_), x, NEG_INF))
        out = x.copy()
        out[rows] = np.where(allowed.view(np.bool_), x[rows], NEG_INF)
        return torch.from_numpy(out)

    def guard(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Tokens (B,) with any draw outside its mask replaced by the best allowed token."""
        if self.allowed is None:
            return tokens
        drawn = tokens.tolist()
        bad = [j for j, b in enumerate(self.masked_rows) if not self.allowed[j, drawn[b]]]
        if not bad:
            return tokens
        tokens = tokens.clone()
        for j in bad:
            b = self.masked_rows[j]
            keep = torch.from_numpy(self.allowed[j].astype(np.bool_))
            tokens[b] = masked[b].masked_fill(~keep, NEG_INF).argmax()
            self.repairs += 1
        return tokens

    def consume(self, b: int, token: int) -> bool:
        """Advance row ``b``'s matcher; True when the grammar is complete (the row should stop)."""
        m = self.matchers[b]
        if m is None:
            return False
        m.consume_token(token)
        return m.is_stopped() or m.is_error()

    def replace_last(self, b: int, old: int, new: int) -> bool:
        """Swap the last consumed token ``old`` for ``new``; False (and no change) if the grammar refuses."""
        m = self.matchers[b]
        if m is None:
            return True
        m.rollback(1)
        if m.try_consume_tokens([new]) == 1:
            return True
        m.consume_token(old)
        return False
