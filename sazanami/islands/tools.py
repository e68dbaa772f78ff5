"""Tool calls: a registry of typed functions, the call syntax, detection and safe execution.

The model writes ``NAME(args)``; the engine finds the complete call in the row's new
text, runs the registered tool and injects `` => result`` and a newline. Safety rules:

- only registered tools run; an unknown name becomes an injected error;
- arguments are *parsed* against the function's annotations (literals only), never
  evaluated;
- each call runs in a worker thread with a time limit; a call that does not finish in
  time is injected as ``error: timed out after Xs`` (Python cannot kill a thread, so the
  worker is left to finish on its own: tools must bound their own work, as CALC does);
- results are cut to a size limit; any exception becomes ``error: …``, never a crash.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sazanami.errors import ParameterError

_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}
MAX_NAME_CHARS = 32


class ToolError(Exception):
    """A tool refused its input; the message is injected as ``error: message``."""


@dataclass(frozen=True)
class CallSyntax:
    """How the model writes a call and how its result is injected.

    The default is ``NAME(args)`` followed by `` => result`` and a newline. A call is
    ``prefix + NAME + open + args + close``. When ``open``/``close`` are one bracket pair,
    nested brackets inside the arguments are balanced (``CALC((1+2)*3)``); text inside
    quotes is skipped.
    """

    prefix: str = ""
    """Text before the tool name (e.g. ``"<<"``); empty by default."""
    open: str = "("
    """Text between the name and the arguments."""
    close: str = ")"
    """Text that ends the call; non-empty."""
    result_prefix: str = " => "
    """Injected before the result."""
    result_suffix: str = "\n"
    """Injected after the result."""
    name_pattern: str = r"[A-Z][A-Z0-9_]*"
    """Regular expression of a tool name as the model writes it (upper case by default, so
    ordinary code such as ``print(x)`` is not taken for a call)."""
    max_args_chars: int = 1000
    """An open call whose arguments grow longer than this is abandoned."""

    def __post_init__(self) -> None:
        if not self.close:
            raise ParameterError("close", "close must be a non-empty string")
        if not self.open:
            raise ParameterError("open", "open must be a non-empty string")
        try:
            re.compile(self.name_pattern)
        except re.error as exc:
            raise ParameterError("name_pattern", f"name_pattern is not a valid regex: {exc}") from exc
        if self.max_args_chars < 1:
            raise ParameterError("max_args_chars", f"max_args_chars must be in [1, inf), got {self.max_args_chars}")

    @property
    def nested(self) -> bool:
        return _BRACKETS.get(self.open) == self.close

    def format_call(self, name: str, args: str) -> str:
        return f"{self.prefix}{name}{self.open}{args}{self.close}"

    def format_result(self, result: str) -> str:
        return f"{self.result_prefix}{result}{self.result_suffix}"

    def start_regex(self) -> re.Pattern[str]:
        """Where a call may start: prefix, a name not glued to a preceding word, open."""
        guard = r"(?<![A-Za-z0-9_])" if not self.prefix else ""
        return re.compile(f"{re.escape(self.prefix)}{guard}({self.name_pattern}){re.escape(self.open)}")


@dataclass(frozen=True)
class Call:
    """A complete call found in a row's text; ``start``/``end`` are character offsets."""

    name: str
    args: str
    start: int
    end: int


def _scan_args(text: str, i: int, syntax: CallSyntax) -> int | None:
    """Index just past the call's closing text, or None while the call is still open."""
    depth = 0
    quote = ""
    prev = ","  # last non-space character; the arguments start like after a comma
    n = len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
                prev = ch
            i += 1
            continue
        # A quote opens a string literal only where a value starts (so "Kool's" is plain text).
        if ch in "\"'" and prev in ",=([{" and syntax.close not in "\"'":
            quote = ch
            i += 1
            continue
        if text.startswith(syntax.close, i):
            if depth == 0:
                return i + len(syntax.close)
            depth -= 1
            i += len(syntax.close)
            prev = syntax.close[-1]
            continue
        if syntax.nested and text.startswith(syntax.open, i):
            depth += 1
        if not ch.isspace():
            prev = ch
        i += 1
    return None


class CallWatcher:
    """Finds complete calls in the text a row has generated, each once.

    Cheap when idle: the text is only searched when the closing text appears in what
    was added since the last look. ``lead`` is output that came before the row's own text
    (a search continuing a prefix that ends inside an open call): it is searched as if
    it began the text, and positions stay relative to the row's own text (a call that
    started in the lead has a negative ``start``).
    """

    def __init__(self, syntax: CallSyntax, lead: str = "") -> None:
        self.syntax = syntax
        self.start_re = syntax.start_regex()
        self.lead = lead
        self.region = 0  # text before this is settled: no call can start there
        self.checked = 0  # text before this has been looked at for `close`

    def settle(self, position: int) -> None:
        """Nothing before ``position`` may start a call (it was injected or consumed)."""
        position += len(self.lead)
        self.region = max(self.region, position)
        self.checked = max(self.checked, position)

    def find(self, text: str) -> Call | None:
        """The first complete, not yet reported call in ``text[region:]``, if any."""
        full = self.lead + text
        look = max(self.region, self.checked - len(self.syntax.close))
        # A partial UTF-8 character may decode differently next step: look back a little.
        self.checked = max(self.region, len(full) - 3)
        if self.syntax.close not in full[look:]:
            return None
        call, _ = self._scan(full)
        if call is None:
            return None
        shift = len(self.lead)
        return Call(call.name, call.args, call.start - shift, call.end - shift)

    def open_call(self, text: str) -> int | None:
        """Where an open (started, not closed) call begins in ``text[region:]``, if one does."""
        call, start = self._scan(self.lead + text)
        return None if call is not None or start is None else start - len(self.lead)

    def _scan(self, full: str) -> tuple[Call | None, int | None]:
        """(the first complete call, None) or (None, start of an open call) or (None, None)."""
        s = self.syntax
        for m in self.start_re.finditer(full, self.region):
            end = _scan_args(full, m.end(), s)
            args_end = len(full) if end is None else end - len(s.close)
            if args_end - m.end() > s.max_args_chars:
                continue  # abandoned: too long to be a call
            if end is not None:
                return Call(m.group(1), full[m.end() : args_end], m.start(), end), None
            return None, m.start()  # an open call: wait for more text
        # No call started: keep only a tail that could still become a name.
        self.region = max(self.region, len(full) - len(s.prefix) - MAX_NAME_CHARS)
        return None, None


# -- the registry -------------------------------------------------------------------------------


@dataclass
class Tool:
    """A registered function the model may call by ``name``."""

    name: str
    fn: Callable[..., Any]
    description: str
    example: str | None = None
    """Arguments of an example call shown in the prompt preamble."""
    timeout: float | None = None
    """Seconds; None uses the ``Islands`` default."""
    params: list[inspect.Parameter] = field(default_factory=list)
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> str:
        return ", ".join(p.name for p in self.params)

    def parse(self, raw: str) -> tuple[list[Any], dict[str, Any]]:
        """Arguments of a call from the text the model wrote: parsed, never evaluated.

        A tool with one parameter gets the whole text (stripped; surrounding quotes
        removed). Otherwise the text is split at top-level commas; ``key=value`` pieces are
        keywords. Each value is converted to its parameter's annotation.
        """
        raw = raw.strip()
        positional = [p for p in self.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) <= 1 and len(self.params) <= 1:
            if not self.params:
                if raw:
                    raise ToolError(f"{self.name} takes no arguments")
                return [], {}
            p = self.params[0]
            if not raw and p.default is not p.empty:
                return [], {}
            return [_convert(raw, self.hints.get(p.name, str), p.name)], {}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        names = {p.name: p for p in self.params}
        for i, piece in enumerate(_split_top_level(raw) if raw else []):
            m = re.match(r"\s*([A-Za-z_]\w*)\s*=(?!=)(.*)$", piece, re.S)
            if m and m.group(1) in names:
                key = m.group(1)
                kwargs[key] = _convert(m.group(2).strip(), self.hints.get(key, str), key)
                continue
            if kwargs or i >= len(positional):
                raise ToolError(f"{self.name} takes {len(positional)} positional argument(s): {self.signature}")
            p = positional[i]
            args.append(_convert(piece.strip(), self.hints.get(p.name, str), p.name))
        missing = [p.name for p in positional[len(args) :] if p.default is p.empty and p.name not in kwargs]
        if missing:
            raise ToolError(f"{self.name} is missing argument(s): {', '.join(missing)}")
        return args, kwargs


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside quotes and brackets."""
    parts, depth, quote, cur = [], 0, "", []
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        try:
            value = ast.literal_eval(text)  # a string literal only: literal_eval never runs code
        except (ValueError, SyntaxError):
            return text[1:-1]
        if isinstance(value, str):
            return value
    return text


def _convert(text: str, hint: Any, name: str) -> Any:
    """Convert argument text to the annotated type (literals only)."""
    origin = typing.get_origin(hint)
    if hint is str or hint is Any or hint is inspect.Parameter.empty:
        return _unquote(text)
    try:
        if hint is bool:
            low = _unquote(text).lower()
            if low in ("true", "yes", "1"):
                return True
            if low in ("false", "no", "0"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(_unquote(text))
        if hint is float:
            return float(_unquote(text))
        if hint in (list, dict, tuple) or origin in (list, dict, tuple):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = ast.literal_eval(text)  # literals only: never runs code
            want = origin or hint
            if not isinstance(value, (list, tuple) if want in (list, tuple) else want):
                raise ValueError(text)
            return tuple(value) if want is tuple else value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        kind = getattr(hint, "__name__", str(hint))
        raise ToolError(f"argument {name!r}: expected {kind}, got {text[:40]!r}") from exc
    return _unquote(text)


class ToolRegistry:
    """Named tools the model may call.

    >>> tools = ToolRegistry()
    >>> @tools.register
    ... def double(x: int) -> int:
    ...     "Twice x."
    ...     return 2 * x
    >>> tools.names
    ['DOUBLE']
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        example: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Decorator: make ``fn`` callable as ``NAME(args)`` (default name: the function's, upper case).

        The description defaults to the docstring's first line; ``example`` is the
        argument text of an example call for the prompt preamble.
        """

        def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or f.__name__.upper()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tool_name) or len(tool_name) > MAX_NAME_CHARS:
                raise ParameterError(
                    "name", f"tool name must be an identifier of at most {MAX_NAME_CHARS} chars, got {tool_name!r}"
                )
            if timeout is not None and not timeout > 0:
                raise ParameterError("timeout", f"timeout must be in (0, inf), got {timeout!r}")
            doc = (description or inspect.getdoc(f) or "").strip().splitlines()
            params = list(inspect.signature(f).parameters.values())
            if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                raise ParameterError("fn", f"tool {tool_name} must not take *args or **kwargs")
            try:
                hints = typing.get_type_hints(f)
            except Exception:  # unresolved annotations: treat as text
                hints = {}
            self._tools[tool_name] = Tool(tool_name, f, doc[0] if doc else "", example, timeout, params, hints)
            return f

        return wrap(fn) if fn is not None else wrap

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def describe(self, syntax: CallSyntax | None = None) -> str:
        """A prompt preamble that tells the model which tools exist and how to call them."""
        s = syntax or CallSyntax()
        lines = [
            f"You can use tools. To call one, write {s.format_call('NAME', 'arguments')}; "
            f'the result is written right after it as "{s.result_prefix.strip()} result". Tools:'
        ]
        for t in self._tools.values():
            lines.append(f"- {s.format_call(t.name, t.signature)}: {t.description}")
        examples = [t for t in self._tools.values() if t.example is not None]
        if examples:
            lines.append("Example: " + " ".join(s.format_call(t.name, t.example or "") for t in examples[:1]))
        return "\n".join(lines)


# -- running calls ------------------------------------------------------------------------------


@dataclass
class CallResult:
    """What a call produced: the text to inject (``error: …`` on failure)."""

    text: str
    error: bool
    seconds: float
    cached: bool = False


def format_result(value: Any) -> str:
    """Text of a tool's return value: lists as ``[a, b]``, dicts as JSON, the rest as str."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_result(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, float):
        return format(value, ".12g")
    return str(value)


def _error_text(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    return msg if isinstance(exc, ToolError) else f"{type(exc).__name__}: {msg}"


MAX_STRAY_CALLS = 16
"""Timed-out tool calls that may still be running before new calls are refused."""
_STRAYS: set[threading.Thread] = set()
_STRAY_LOCK = threading.Lock()


def _strays() -> int:
    """Timed-out calls whose threads are still running (finished ones are forgotten)."""
    with _STRAY_LOCK:
        for t in [t for t in _STRAYS if not t.is_alive()]:
            _STRAYS.discard(t)
        return len(_STRAYS)


def run_calls(
    calls: list[tuple[Tool | None, Call]],
    registry: ToolRegistry,
    default_timeout: float,
    max_chars: int,
    cache: dict[tuple[str, str], CallResult] | None = None,
    lock: threading.Lock | None = None,
) -> list[CallResult]:
    """Run calls concurrently, each in its own daemon thread with its time limit.

    Identical calls (same tool, same argument text) are answered from ``cache``.
    Never raises for a tool's failure: errors come back as ``error: …`` results. A call
    that times out keeps its thread until the tool returns (Python cannot kill a thread);
    while :data:`MAX_STRAY_CALLS` such threads are still running, new calls are refused
    with an error instead of piling up more (a server stays up when a tool hangs).
    """
    lock = lock or threading.Lock()
    results: list[CallResult | None] = [None] * len(calls)
    pending: list[tuple[int, threading.Thread, dict[str, Any], float, float]] = []
    first: dict[tuple[str, str], int] = {}  # the same call twice in one batch runs once
    for i, (tool, call) in enumerate(calls):
        key = (call.name, call.args.strip())
        if key in first:
            continue
        first[key] = i
        if cache is not None:
            with lock:
                hit = cache.get(key)
            if hit is not None:
                results[i] = CallResult(hit.text, hit.error, 0.0, cached=True)
                continue
        if tool is None:
            results[i] = CallResult(
                f"error: unknown tool {call.name} (available: {', '.join(registry.names) or 'none'})", True, 0.0
            )
            continue
        try:
            args, kwargs = tool.parse(call.args)
        except ToolError as exc:
            results[i] = CallResult(f"error: {exc}", True, 0.0)
            continue
        strays = _strays()
        if strays >= MAX_STRAY_CALLS:
            results[i] = CallResult(
                f"error: not run: {strays} earlier tool calls are still running past their time limit", True, 0.0
            )
            continue
        box: dict[str, Any] = {}

        def work(
            fn: Callable[..., Any] = tool.fn, a: list[Any] = args, k: dict[str, Any] = kwargs, out: dict[str, Any] = box
        ) -> None:
            try:
                out["value"] = fn(*a, **k)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an injected error
                out["error"] = exc

        thread = threading.Thread(target=work, name=f"sazanami-tool-{tool.name}", daemon=True)
        limit = tool.timeout if tool.timeout is not None else default_timeout
        pending.append((i, thread, box, limit, time.perf_counter()))
        thread.start()
    for i, thread, box, limit, started in pending:
        thread.join(max(0.0, started + limit - time.perf_counter()))
        took = time.perf_counter() - started
        if thread.is_alive():
            with _STRAY_LOCK:
                _STRAYS.add(thread)
            results[i] = CallResult(f"error: timed out after {limit:g}s", True, took)
        elif "error" in box:
            results[i] = CallResult(f"error: {_error_text(box['error'])}", True, took)
        else:
            try:
                text = format_result(box.get("value"))
            except Exception as exc:  # noqa: BLE001
                results[i] = CallResult(f"error: {_error_text(exc)}", True, took)
                continue
            results[i] = CallResult(text, False, took)
    for i, r in enumerate(results):
        if r is not None and len(r.text) > max_chars:
            results[i] = CallResult(r.text[:max_chars] + "…", r.error, r.seconds, r.cached)
    out: list[CallResult] = []
    for i, (_, call) in enumerate(calls):
        key = (call.name, call.args.strip())
        r = results[first[key]]
        assert r is not None
        if first[key] != i:
            r = CallResult(r.text, r.error, 0.0, cached=True)
        elif cache is not None and not r.cached:
            with lock:
                cache[key] = r
        out.append(r)
    return out
