"""Built-in tools: CALC (arithmetic), SEARCH (BM25 over a local corpus), LOAD (a document),
COPY (a verbatim span of a document: seed 002's "400 bytes at offset 489 of x003.txt").

``CALC`` walks the expression's syntax tree and computes only numbers, operators and a
short list of math functions — it never calls ``eval``; names, attributes, calls of
anything else, subscripts, comparisons, shifts and comprehensions are rejected. Every
operation's operands are checked *before* it is computed, so that no operation can run
long: integers stay within :data:`MAX_INT_BITS` bits (``9**9**9`` and ``2**4097`` are
refused, not computed), exponents within :data:`MAX_EXPONENT`, ``round``'s digits within
:data:`MAX_ROUND_DIGITS` (``round(1, -10**7)`` would compute ``10**(10**7)``), and an
expression has at most :data:`MAX_EXPR_CHARS` characters, so at most a few hundred such
operations: the worst expression takes milliseconds, well inside the tool's time limit,
and never holds the interpreter long enough to stall a server.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sazanami.errors import ParameterError
from sazanami.islands.tools import ToolError, ToolRegistry

MAX_EXPR_CHARS = 500
"""Characters of one CALC expression at most."""
MAX_INT_BITS = 4096
"""Bits of any integer CALC computes (an operand or a result) at most."""
MAX_EXPONENT = 10_000
"""The magnitude of an exponent at most."""
MAX_ROUND_DIGITS = 1000
"""The magnitude of ``round``'s digits at most (``round(x, -n)`` computes 10**n)."""
LOAD_CHARS = 600
COPY_CHARS = 4000
"""Characters one COPY call may insert at most (the row's ``max_result_tokens`` cuts it further)."""

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max,
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log2": math.log2, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil,
}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e}
_TOO_LARGE = f"result too large (more than {MAX_INT_BITS} bits)"


def _number(value: Any) -> int | float:
    """``value`` if it is a real number (a complex result, such as (-8)**0.5, is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError(f"not a real number: {value!r}"[:80])
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(_TOO_LARGE)
    return value


def _check_binary(op: type, left: int | float, right: int | float) -> None:
    """Refuse an operation whose result would be too large to compute quickly (before computing it)."""
    ints = isinstance(left, int) and isinstance(right, int)
    if op is ast.Pow:
        if abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent too large (more than {MAX_EXPONENT})")
        if ints and right > 0 and abs(left) > 1 and right * math.log2(abs(left)) > MAX_INT_BITS:
            raise ToolError(_TOO_LARGE)
    elif op is ast.Mult and ints and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:  # type: ignore[union-attr]
        raise ToolError(_TOO_LARGE)


def _check_call(name: str, args: list[int | float]) -> None:
    """Refuse a function call whose work would not be bounded (before calling it)."""
    if name == "round" and len(args) == 2:
        digits = args[1]
        if not isinstance(digits, int):
            raise ToolError("round's digits must be an integer")
        if abs(digits) > MAX_ROUND_DIGITS:
            raise ToolError(f"round's digits must be in [-{MAX_ROUND_DIGITS}, {MAX_ROUND_DIGITS}], got {digits}")
    elif name == "round" and len(args) > 2 or name in ("abs", "sqrt", "exp", "floor", "ceil") and len(args) != 1:
        raise ToolError(f"{name} takes {'1 or 2 arguments' if name == 'round' else '1 argument'}")


def _eval_node(node: ast.AST) -> int | float:
    """Compute one node of an arithmetic expression; anything else is refused."""
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _number(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval_node(node.left), _eval_node(node.right)
        _check_binary(type(node.op), left, right)
        return _number(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and 1 <= len(node.args) <= 8
    ):
        args = [_eval_node(a) for a in node.args]
        _check_call(node.func.id, args)
        return _number(_FUNCTIONS[node.func.id](*args))
    what = type(node.op if isinstance(node, (ast.BinOp, ast.UnaryOp)) else node).__name__
    if isinstance(node, ast.Call):
        what = "call of " + (node.func.id if isinstance(node.func, ast.Name) else "an expression")
    elif isinstance(node, ast.Name):
        what = f"name {node.id!r}"
    raise ToolError(f"not arithmetic: {what}")


def calc(expr: str) -> str:
    """Evaluate an arithmetic expression: + - * / // % **, parentheses, sqrt, log, sin, pi …"""
    text = expr.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise ToolError("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ToolError(f"cannot parse {text[:40]!r}") from exc
    try:
        value = _eval_node(tree)
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolError(str(exc) or "math error") from exc
    except RecursionError as exc:
        raise ToolError("expression nested too deeply") from exc
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".12g")
    return str(value)


class Corpus:
    """Documents (id → text) searchable by BM25 (``bm25s``).

    Load a folder of ``.txt`` files (id = path relative to the folder, without ``.txt``)
    or a JSONL file with one ``{"id": …, "text": …}`` object per line.
    """

    def __init__(self, docs: dict[str, str]) -> None:
        if not docs:
            raise ParameterError("corpus", "corpus must hold at least one document")
        import bm25s

        self.ids = list(docs)
        self.docs = docs
        self._bm25s = bm25s
        self._index = bm25s.BM25()
        tokens = bm25s.tokenize([docs[i] for i in self.ids], stopwords="en", show_progress=False)
        self._index.index(tokens, show_progress=False)

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        p = Path(path).expanduser()
        if p.is_dir():
            files = sorted(p.rglob("*.txt"))
            if not files:
                raise ParameterError("corpus", f"corpus folder {str(p)!r} has no .txt files")
            return cls({f.relative_to(p).with_suffix("").as_posix(): f.read_text(errors="replace") for f in files})
        if p.is_file():
            docs: dict[str, str] = {}
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    docs[str(obj["id"])] = str(obj["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ParameterError(
                        "corpus", f"corpus line {n} of {str(p)!r} is not a JSON object with id and text"
                    ) from exc
            return cls(docs)
        raise ParameterError("corpus", f"corpus must be a folder of .txt files or a JSONL file, got {str(path)!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int = 3) -> list[str]:
        """Ids of the ``k`` best-matching documents (those sharing no term are left out)."""
        words = self._bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not words or not words[0]:
            return []
        docs, scores = self._index.retrieve(words, k=min(k, len(self.ids)), show_progress=False)
        return [self.ids[int(d)] for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

    def get(self, doc_id: str, limit: int = LOAD_CHARS) -> str:
        """The document's text, cut to ``limit`` characters."""
        if doc_id not in self.docs:
            raise ToolError(f"no document {doc_id!r}")
        text = " ".join(self.docs[doc_id].split())
        return text if len(text) <= limit else text[:limit] + "…"

    def span(self, doc_id: str, start: int | str, length: int) -> str:
        """``length`` characters of the document, verbatim, from character ``start`` or from
        the first occurrence of the text ``start``."""
        if doc_id not in self.docs:
            raise ToolError(f"no document {doc_id!r}")
        text = self.docs[doc_id]
        if not 1 <= length <= COPY_CHARS:
            raise ToolError(f"length must be in [1, {COPY_CHARS}], got {length}")
        if isinstance(start, str):
            at = text.find(start) if start else -1
            if at < 0:
                raise ToolError(f"document {doc_id!r} does not contain {start[:40]!r}")
            start = at
        if not 0 <= start < len(text):
            raise ToolError(f"start must be in [0, {len(text) - 1}] for document {doc_id!r}, got {start}")
        return text[start : start + length]


BUILTINS = ("calc", "search", "load", "copy")


def builtin_tools(
    names: list[str] | tuple[str, ...] = BUILTINS, corpus: Corpus | None = None, k: int = 3
) -> ToolRegistry:
    """A registry with the chosen built-ins; ``search``, ``load`` and ``copy`` need a corpus."""
    registry = ToolRegistry()
    for name in names:
        key = name.strip().lower()
        if key == "calc":
            registry.register(calc, name="CALC", example="17*23")
        elif key in ("search", "load", "copy"):
            if corpus is None:
                raise ParameterError(
                    "corpus", f"the {key} tool needs a corpus (a folder of .txt files or a JSONL file)"
                )
            if key == "search":

                def search(query: str) -> list[str]:
                    return corpus.search(query, k)

                registry.register(
                    search, name="SEARCH", description=f"Ids of the {k} documents that best match the query."
                )
            elif key == "copy":

                def copy(doc_id: str, start: str, length: int = 400) -> str:
                    return corpus.span(doc_id, int(start) if start.strip().isdigit() else start, length)

                registry.register(
                    copy,
                    name="COPY",
                    description="A verbatim span of a document: from a character offset or from a quoted "
                    f"text, `length` characters (at most {COPY_CHARS}).",
                    example="notes, 489, 400",
                )
            else:

                def load(doc_id: str) -> str:
                    return corpus.get(doc_id)

                registry.register(
                    load, name="LOAD", description=f"The text of a document (at most {LOAD_CHARS} characters)."
                )
        else:
            raise ParameterError("tools", f"unknown tool {name!r}; built-ins: {', '.join(BUILTINS)}")
    return registry
