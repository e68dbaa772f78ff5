"""OpenAI function calling: tools the *client* runs, calls guaranteed valid by a grammar.

An agent sends function definitions (``tools``), the model answers with calls
(``message.tool_calls``), the agent runs them and sends the results back as ``tool``
messages. This module is the one place that knows how (the server and :func:`chat` use it):

1. **checking** — :meth:`FunctionCalling.from_openai` takes OpenAI's ``tools``,
   ``tool_choice`` and ``parallel_tool_calls``; every ``parameters`` is checked against
   JSON Schema's metaschema and the grammar bounds (:mod:`sazanami.islands.bounds`);
   errors name the field (``tools[1].function.parameters``);
2. **rendering** — :func:`render_prompt` writes the conversation (tool definitions,
   assistant calls, ``tool`` results) through the model's own chat template when it knows
   tools in the format parsed here (Qwen2.5's, Hermes'), otherwise through the
   :data:`FALLBACK` format (SmolLM2, Gemma 3, templates without tools): the tools in a
   system message, calls and results as text in the same tags;
3. **generation** — :meth:`FunctionCalling.constraint` is a grammar over the whole output:
   for ``required`` or a named function it is one call (or several with
   ``parallel_tool_calls``) whose ``arguments`` follow that function's JSON schema; for
   ``auto`` the text is free until the model opens a call (``<tool_call>``), and from there
   on the call must be valid — a hard island inside free text. With ``grammar=False``
   nothing is constrained and calls are parsed afterwards, as llama.cpp-style tool parsers
   do (they may fail to parse: such text is returned as content);
4. **parsing** — :meth:`FunctionCalling.parse` turns an output into content and calls;
   :class:`CallStream` does it piece by piece for streaming (OpenAI's
   ``tool_calls[i].function.arguments`` deltas).

The call format (both the templates' and the fallback's)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A bare call is accepted too — an answer that is only ``{"name": …, "arguments": …}``, or that
object in a json code block — because small models write that (Qwen2.5-Coder-0.5B never writes
the tags); several calls in one answer need the tags. With ``auto``, an answer that starts
with ``{"name"`` or a json fence is therefore a call (other JSON stays free text). Under the
grammar the JSON is written as ``json.dumps`` writes it (``", "`` and ``": "`` separators, no
other whitespace), so every call parses with ``json.loads`` and its arguments validate against
the function's schema.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sazanami.errors import ParameterError

OPEN = "<tool_call>"
"""Opens a call in the output (Qwen2.5's and Hermes' tag; the fallback format's too)."""
CLOSE = "</tool_call>"
"""Closes a call."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A function name (OpenAI's rule)."""
MODES = ("none", "auto", "required")
"""``tool_choice`` strings; an object ``{"type": "function", "function": {"name": …}}`` names one."""
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How the grammar writes JSON (``json.dumps``' default): small models ramble in free whitespace."""

FALLBACK = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
"""The system text that describes the tools for a chat template without tools (one JSON
object per tool in ``{tools}``). Calls in earlier assistant messages are written in the
same tags; ``tool`` results go into a user message as ``<tool_response>…</tool_response>``."""


@dataclass(frozen=True)
class Function:
    """One function the model may call (OpenAI's ``tools[i].function``)."""

    name: str
    """``[A-Za-z0-9_-]{1,64}``, unique among the request's tools."""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema of the arguments object."""
    strict: bool = False
    """OpenAI's flag; the arguments follow the schema whether or not it is set (under the grammar)."""

    def to_openai(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = self.parameters
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made; ``arguments`` is the JSON text it wrote."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: new_call_id())

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    """An identifier for a call (``call_`` + 24 hex digits); ids label calls, they draw no token."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class FunctionCalling:
    """What one request may call and how: the functions, ``tool_choice`` and the grammar switch."""

    functions: tuple[Function, ...]
    choice: str = "auto"
    """``auto`` (text or calls), ``required`` (at least one call), a function's name (calls of it
    only) or ``none`` (the functions are described to the model, which answers in text)."""
    parallel: bool = True
    """Several calls in one answer (OpenAI's ``parallel_tool_calls``); False: at most one."""
    grammar: bool = True
    """Constrain calls by the grammar; False parses free text afterwards (the unconstrained way)."""
    content_schema: dict[str, Any] | None = None
    """With ``auto``: a JSON schema the answer follows when it is not a call (``response_format``;
    with ``none`` the caller constrains the text itself)."""

    def __post_init__(self) -> None:
        if not self.functions:
            raise ParameterError("tools", "tools must name at least one function")
        if self.choice not in MODES and self.choice not in self.names:
            raise ParameterError(
                "tool_choice",
                f"tool_choice names function {self.choice!r}, which is not among tools ({', '.join(self.names)})",
            )
        if self.content_schema is not None and self.choice not in ("auto", "none"):
            raise ParameterError(
                "response_format",
                "response_format shapes content; with tool_choice required or named the answer is calls",
            )
        if self.content_schema is not None and self.choice == "auto" and not self.grammar:
            raise ParameterError(
                "tool_grammar", "response_format with tools in auto needs the grammar (tool_grammar true)"
            )

    @property
    def calls(self) -> bool:
        """Whether the model may call (every choice but ``none``)."""
        return self.choice != "none"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    def function(self, name: str) -> Function | None:
        return next((f for f in self.functions if f.name == name), None)

    # -- 1. from the request ------------------------------------------------------------------
    @classmethod
    def from_openai(
        cls,
        tools: Sequence[Any],
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        *,
        grammar: bool = True,
        content_schema: dict[str, Any] | None = None,
        max_tools: int = 128,
    ) -> FunctionCalling | None:
        """From OpenAI's request fields; None when ``tools`` is empty and ``tool_choice`` is
        ``auto`` or ``none`` (nothing to call, nothing to describe).

        ``ParameterError`` names the field: a tool that is not a function object, a bad or
        duplicate name, ``parameters`` that is not a valid JSON schema (metaschema) or passes
        the grammar bounds, more than ``max_tools`` tools, a ``tool_choice`` that is not one
        of :data:`MODES` or names an unknown function.
        """
        if not isinstance(tools, (list, tuple)):
            raise ParameterError("tools", f"tools must be a list of function objects, got {type(tools).__name__}")
        if len(tools) > max_tools:
            raise ParameterError(
                "tools", f"tools must have at most {max_tools} functions on this server, got {len(tools)}"
            )
        functions, seen = [], set()
        for i, tool in enumerate(tools):
            fn = parse_function(tool, f"tools[{i}]")
            if fn.name in seen:
                raise ParameterError(f"tools[{i}].function.name", f"tools has two functions named {fn.name!r}")
            seen.add(fn.name)
            functions.append(fn)
        choice = parse_choice(tool_choice)
        if not functions:
            if choice in ("auto", "none"):
                return None
            raise ParameterError("tool_choice", f"tool_choice is {choice!r} but tools is empty")
        if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
            raise ParameterError(
                "parallel_tool_calls", f"parallel_tool_calls must be true or false, got {parallel_tool_calls!r}"
            )
        parallel = True if parallel_tool_calls is None else parallel_tool_calls
        return cls(tuple(functions), choice, parallel, grammar, content_schema)

    # -- 3. the grammar -----------------------------------------------------------------------
    def lark(self, tokenizer: Any) -> str:
        """The Lark grammar (llguidance dialect) of a whole output; see the module docstring.

        A call is tagged (``<tool_call>`` … ``</tool_call>``, after optional text, several with
        ``parallel``) or, at the very start of the answer, bare (``{"name": …}``, or fenced in
        a json code block; one call). ``tokenizer`` decides how the tags are written: as
        the special tokens the model has for them (Qwen2.5: ``<tool_call>`` is one special
        token, which free text never contains), or as text (free text then excludes the
        opening tag, and a lazy lexeme ends at its first occurrence). With ``auto``, free
        text never starts with ``{"name"`` or a json fence: such an answer is a call.
        """
        names = self.names if self.choice in ("auto", "required") else [self.choice]
        open_, close = _tag(tokenizer, OPEN), _tag(tokenizer, CLOSE)
        more = ' ("\\n" call)*' if self.parallel else ""
        lines = [
            f"calls: call{more}",
            f'call: {open_} "\\n" body "\\n" {close}',
            f"bare: body | {json.dumps(FENCE)} body {json.dumps(chr(10) + FENCE_END)}",
            "body: " + " | ".join(f"body_{i}" for i in range(len(names))),
        ]
        for i, name in enumerate(names):
            fn = self.function(name)
            assert fn is not None
            schema = {**fn.parameters, "x-guidance": JSON_STYLE}
            head = json.dumps(f'{{"name": "{name}", "arguments": ')
            lines.append(f'body_{i}: {head} %json {json.dumps(schema)} "}}"')
        not_bare = '& ~/\\s*\\{\\s*"name"(?s:.*)/ & ~/\\s*```json(?s:.*)/'  # what starts a bare call
        if self.choice != "auto":
            start = ["start: calls | bare"]
        elif self.content_schema is not None:  # the answer is JSON of that schema, or calls
            content = json.dumps({**self.content_schema, "x-guidance": JSON_STYLE})
            start = ["start: content | calls", f"content: %json {content}"]
        elif open_.startswith("<["):  # special tokens: free text cannot contain them
            start = ["start: TEXT | TEXT? calls | bare", f"TEXT: /(?s:.+)/ {not_bare}"]
        else:  # text tags: free text never holds the opening tag; a lazy lexeme stops at its first one
            start = [
                "start: FREE | opened after | bare",
                f"opened[lazy]: /(?s:.*){re.escape(OPEN)}/ {not_bare}",
                f'after: "\\n" body "\\n" {close}{more}',
                f"FREE: /(?s:.*)/ & ~/(?s:.*){re.escape(OPEN)}(?s:.*)/ {not_bare}",
            ]
        return "\n".join(start + lines) + "\n"

    def constraint(self, tokenizer: Any) -> Any:
        """The grammar as a :class:`~sazanami.islands.Constraint` (None with ``grammar=False``).

        Bounded like every grammar (:mod:`sazanami.islands.bounds`); a grammar over the bounds
        is a ``ParameterError`` naming ``tools``.
        """
        if not self.grammar or not self.calls:
            return None
        from sazanami.islands import Constraint

        try:
            return Constraint.lark(self.lark(tokenizer))
        except ParameterError as exc:
            raise ParameterError("tools", f"the tools' grammar is too large: {exc}") from exc

    # -- 4. parsing ---------------------------------------------------------------------------
    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """``(content, calls)`` of a whole output.

        Calls are the ``<tool_call>`` blocks after the content, or bare JSON calls that are the
        whole answer (``{"name": …}``, possibly in a json code block, as small models write
        them; the grammar allows one, unconstrained models write several); each must be a JSON object with a known ``name`` and an ``arguments``
        object (or its JSON text). If any fails that (possible only with ``grammar=False``,
        or a call cut by ``max_tokens``), the whole text is content and there are no calls.
        Content is None when calls come without text before them. With ``none`` it is all content.
        """
        if not self.calls:
            return text, []
        kind, at = _opening(text)
        if kind == "bare":
            bare = [self._call(body) for body in _bare_bodies(text[at:])]
            return (None, bare) if bare and None not in bare else (text, [])  # type: ignore[return-value]
        if kind != "tagged":
            return text, []
        blocks, rest = _tagged_blocks(text[at:])
        calls = [self._call(body) if closed else None for body, closed in blocks]
        if None in calls or rest.strip():  # a block that is no call, one left open, text after them
            return text, []
        content = text[:at].rstrip()
        return content or None, calls

    def _call(self, block: str) -> ToolCall | None:
        """The call one block holds, or None. The arguments are the text the model wrote when
        the block has the grammar's shape (so streamed pieces add up to them)."""
        m = _HEAD.match(block)
        if m is not None and self.function(m.group(1)) is not None:
            rest = block[m.end() :]
            try:
                args, end = _DECODER.raw_decode(rest)
            except ValueError:
                args, end = None, 0
            if isinstance(args, dict) and rest[end:].strip() == "}":
                return ToolCall(m.group(1), rest[:end])
        try:
            obj = json.loads(block)
        except ValueError:
            return None
        if not isinstance(obj, dict) or self.function(obj.get("name")) is None:  # type: ignore[arg-type]
            return None
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))

    def validate(self, call: ToolCall) -> str | None:
        """Why ``call``'s arguments do not follow its function's schema, or None (they do)."""
        import jsonschema

        fn = self.function(call.name)
        if fn is None:
            return f"unknown function {call.name!r}"
        try:
            args = json.loads(call.arguments)
        except ValueError as exc:
            return f"arguments are not JSON: {exc}"
        error = jsonschema.exceptions.best_match(_validator(fn.parameters).iter_errors(args))
        return None if error is None else error.message


_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*')
_DECODER = json.JSONDecoder()


FENCE = "```json\n"
"""Opens a bare call written in a json code block."""
FENCE_END = "```"


BARE = '{"name"'
"""How a bare call starts under the grammar (its JSON is compact)."""


def _opening(text: str, exact: bool = False) -> tuple[str, int]:
    """Where calls begin: ``("bare", i)`` for an answer that is a JSON object or a json fence
    (``i``: after leading whitespace), ``("tagged", i)`` at the first ``<tool_call>``,
    ``("none", -1)`` otherwise. ``exact``: the answer was written under the grammar, so a bare
    call starts exactly with :data:`BARE` (a prefix of it may still become one)."""
    body = text.lstrip()
    if body.startswith(FENCE.strip()) or (
        body.startswith(BARE) or (BARE.startswith(body) and body) if exact else body.startswith("{")
    ):
        return "bare", len(text) - len(body)
    at = text.find(OPEN)
    return ("tagged", at) if at >= 0 else ("none", -1)


def _bare_bodies(text: str) -> list[str]:
    """The JSON objects of a bare answer: ``{…}`` or fenced, several separated by whitespace
    (what unconstrained models write; the grammar allows one), trailing whitespace or a stray
    fence allowed; ``[]`` when anything else is there."""
    if text.startswith(FENCE.strip()):
        text = text[len(FENCE.strip()) :]
        if text.rstrip().endswith(FENCE_END):
            text = text.rstrip()[: -len(FENCE_END)]
    text, bodies = text.strip(), []
    while text and text != FENCE_END:
        try:
            _, end = _DECODER.raw_decode(text)
        except ValueError:
            return []
        bodies.append(text[:end])
        text = text[end:].strip()
    return bodies


def _tagged_blocks(text: str) -> tuple[list[tuple[str, bool]], str]:
    """``([(body, closed), …], rest)`` of the ``<tool_call>…</tool_call>`` blocks that start
    ``text`` (whitespace between them); the last may be open (``closed`` False); ``rest`` is
    the text after the last closed block that does not open another."""
    blocks: list[tuple[str, bool]] = []
    pos = 0
    while True:
        rest = text[pos:].lstrip()
        if not rest.startswith(OPEN):
            return blocks, text[pos:]
        start = len(text) - len(rest) + len(OPEN)
        end = text.find(CLOSE, start)
        if end < 0:
            blocks.append((text[start:], False))
            return blocks, ""
        blocks.append((text[start:end], True))
        pos = end + len(CLOSE)


def _tag(tokenizer: Any, tag: str) -> str:
    """The tag as a Lark atom: ``<[id]>`` when the tokenizer has it as one special token, else a string."""
    ids = tokenizer.encode(tag)
    if len(ids) == 1:
        from sazanami.islands.constraints import ll_tokenizer

        if ll_tokenizer(tokenizer).is_special_token(ids[0]):
            return f"<[{ids[0]}]>"
    return json.dumps(tag)


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    return jsonschema.validators.validator_for(schema)(schema)


# -- checking the request ---------------------------------------------------------------------------


def check_json_schema(schema: Any, param: str) -> None:
    """Raise ``ParameterError`` naming ``param`` unless ``schema`` is a JSON schema object within
    the grammar bounds and valid against its metaschema (the draft its ``$schema`` names,
    else 2020-12)."""
    import jsonschema

    from sazanami.islands.bounds import check_schema

    if not isinstance(schema, dict):
        raise ParameterError(param, f"{param} must be a JSON schema object, got {type(schema).__name__}")
    check_schema(schema, param)  # bounded before the metaschema check recurses into it
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ParameterError(
            param, f"{param} is not a valid JSON schema{f' (at {where})' if where else ''}: {exc.message}"
        ) from exc
    except (RecursionError, jsonschema.exceptions.RefResolutionError) as exc:  # type: ignore[attr-defined]
        raise ParameterError(param, f"{param} is not a valid JSON schema: {exc}") from exc


def parse_function(tool: Any, where: str) -> Function:
    """One OpenAI tool object → :class:`Function` (``where``: ``tools[i]``, named in errors)."""
    if (
        not isinstance(tool, dict)
        or tool.get("type", "function") != "function"
        or not isinstance(tool.get("function"), dict)
    ):
        raise ParameterError(
            where, f'{where} must be {{"type": "function", "function": {{"name": …}}}}, got {_short(tool)}'
        )
    extra = sorted(set(tool) - {"type", "function"})
    if extra:
        raise ParameterError(f"{where}.{extra[0]}", f"unknown field {extra[0]!r} in {where}")
    fn = tool["function"]
    extra = sorted(set(fn) - {"name", "description", "parameters", "strict"})
    if extra:
        raise ParameterError(f"{where}.function.{extra[0]}", f"unknown field {extra[0]!r} in {where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ParameterError(
            f"{where}.function.name", f"{where}.function.name must match [A-Za-z0-9_-]{{1,64}}, got {_short(name)}"
        )
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise ParameterError(f"{where}.function.description", f"{where}.function.description must be text")
    strict = fn.get("strict") or False
    if not isinstance(strict, bool):
        raise ParameterError(
            f"{where}.function.strict", f"{where}.function.strict must be true or false, got {strict!r}"
        )
    param = f"{where}.function.parameters"
    parameters = fn.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    check_json_schema(parameters, param)
    if parameters.get("type", "object") != "object":
        raise ParameterError(param, f"{param} must describe an object (the arguments), got type {parameters['type']!r}")
    from sazanami.islands import Constraint

    try:  # what the grammar compiler supports of JSON Schema
        Constraint.json_schema(parameters)
    except ParameterError as exc:
        raise ParameterError(param, f"{param}: {exc}") from exc
    return Function(name, description, parameters, strict)


def parse_choice(tool_choice: Any) -> str:
    """``tool_choice`` → ``none``, ``auto``, ``required`` or a function's name."""
    if tool_choice is None:
        return "auto"
    if isinstance(tool_choice, str):
        if tool_choice not in MODES:
            raise ParameterError(
                "tool_choice",
                f"tool_choice must be one of {', '.join(MODES)} or a function object, got {tool_choice!r}",
            )
        return tool_choice
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    if tool_choice.get("type") != "function" or not isinstance(name, str):  # type: ignore[union-attr]
        raise ParameterError(
            "tool_choice",
            f'tool_choice must be none, auto, required or {{"type": "function", "function": {{"name": …}}}}, got {_short(tool_choice)}',
        )
    return name


def check_messages(messages: Sequence[dict[str, Any]]) -> None:
    """Each ``tool`` message answers a call of an earlier assistant message (by ``tool_call_id``);
    each assistant call has an id, a function name and arguments text."""
    ids: set[str] = set()
    for i, m in enumerate(messages):
        for j, call in enumerate(m.get("tool_calls") or []):
            where = f"messages[{i}].tool_calls[{j}]"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ParameterError(
                    f"{where}.function", f"{where} must be {{id, type: function, function: {{name, arguments}}}}"
                )
            if not isinstance(fn.get("arguments", ""), str):
                raise ParameterError(f"{where}.function.arguments", f"{where}.function.arguments must be JSON text")
            if not isinstance(call.get("id"), str):
                raise ParameterError(f"{where}.id", f"{where}.id is required (tool messages answer it)")
            ids.add(call["id"])
        if m.get("role") == "tool":
            cid = m.get("tool_call_id")
            if not isinstance(cid, str):
                raise ParameterError(f"messages[{i}].tool_call_id", f"messages[{i}] (role tool) needs tool_call_id")
            if cid not in ids:
                raise ParameterError(
                    f"messages[{i}].tool_call_id",
                    f"messages[{i}].tool_call_id {cid!r} matches no tool call of an earlier assistant message",
                )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# -- 2. rendering -------------------------------------------------------------------------------------


def template_has_tools(tokenizer: Any) -> bool:
    """Whether the model's chat template renders tools in the format parsed here."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tools" in template and OPEN in template


def has_tool_messages(messages: Sequence[dict[str, Any]]) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]], functions: Sequence[Function] = ()) -> str:
    """The prompt text of a conversation with tools (generation prompt appended).

    Through the model's template when :func:`template_has_tools` (tools as OpenAI objects,
    call arguments as objects, as Hugging Face templates expect); else through
    :func:`fallback_messages` and the template.
    """
    if template_has_tools(tokenizer):
        msgs = [_template_message(m) for m in messages]
        tools = [f.to_openai() for f in functions] or None
        return (
            _environment()
            .from_string(tokenizer.chat_template)
            .render(
                messages=msgs,
                tools=tools,
                add_generation_prompt=True,
                bos_token=getattr(tokenizer, "bos_token", None) or "",
            )
        )
    return tokenizer.apply_chat_template(fallback_messages(messages, functions))


def fallback_messages(messages: Sequence[dict[str, Any]], functions: Sequence[Function] = ()) -> list[dict[str, str]]:
    """Plain ``{role, content}`` messages in the :data:`FALLBACK` format: the tools' description
    joins the system message (or starts one), calls are written into the assistant's text and
    consecutive ``tool`` results become one user message."""
    out: list[dict[str, str]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "tool":
            piece = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + piece
            else:
                out.append({"role": "user", "content": piece, "_tool": "1"})
            continue
        if m.get("tool_calls"):
            calls = [_call_text(c) for c in m["tool_calls"]]
            content = "\n".join(([content] if content else []) + calls)
        out.append({"role": role, "content": content})
    for m in out:
        m.pop("_tool", None)
    if functions:
        text = FALLBACK.format(tools="\n".join(json.dumps(f.to_openai(), ensure_ascii=False) for f in functions))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{text}"}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _arguments(call: dict[str, Any]) -> Any:
    """A call's arguments as an object when its text is JSON (templates write them with ``tojson``)."""
    args = call.get("function", {}).get("arguments", "")
    try:
        return json.loads(args) if isinstance(args, str) else args
    except ValueError:
        return args


def _call_text(call: dict[str, Any]) -> str:
    body = {"name": call["function"]["name"], "arguments": _arguments(call)}
    return f"{OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{CLOSE}"


def _template_message(m: dict[str, Any]) -> dict[str, Any]:
    out = dict(m)
    if out.get("content") is None:
        out["content"] = ""
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {**c, "function": {"name": c["function"]["name"], "arguments": _arguments(c)}} for c in m["tool_calls"]
        ]
    return out


def _environment() -> Any:
    """A sandboxed Jinja environment as Hugging Face renders chat templates (``tojson`` without
    HTML escaping, ``raise_exception``, loop controls)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from sazanami.errors import SazanamiError

    def raise_exception(message: str) -> None:
        raise SazanamiError(f"the chat template refused the messages: {message}")

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


# -- 4b. streaming --------------------------------------------------------------------------------------


class CallStream:
    """Turns one choice's text, piece by piece, into OpenAI chat deltas.

    ``feed(piece)`` returns the deltas that are certain so far: ``{"content": …}`` for text
    before the first call (a tail that may still open a call is held back), and
    ``{"tool_calls": [{"index", "id", "type", "function": {"name", "arguments"}}]}`` — the
    first delta of a call carries its id and name, the next ones pieces of its arguments
    (under the grammar as they are generated; with ``grammar=False`` calls come whole at the
    end, once they parsed). ``finish()`` returns the rest: joined, the pieces are
    :meth:`FunctionCalling.parse`'s content and calls (under the grammar; unconstrained, a
    text that turns out not to be calls is content).
    """

    def __init__(self, calling: FunctionCalling) -> None:
        self.calling = calling
        self.text = ""
        self.sent = ""
        """Content sent."""
        self.calls: list[tuple[str, str]] = []
        """(id, arguments sent) per call announced."""

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        return self._deltas(final=False)

    def finish(self) -> list[dict[str, Any]]:
        return self._deltas(final=True)

    @property
    def called(self) -> bool:
        """Whether any call was announced (the finish reason is then ``tool_calls``)."""
        return bool(self.calls)

    def _deltas(self, final: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if final:  # the whole text: what parse says, less what was sent
            content, calls = self.calling.parse(self.text)
            if not calls and self.calls:
                return out  # a call cut by max_tokens: what was sent of it stays (finish_reason length)
            self._content(out, content or "")
            for i, call in enumerate(calls):
                self._args(out, i, call.name, call.arguments)
            return out
        kind, at = _opening(self.text, exact=self.calling.grammar) if self.calling.calls else ("none", -1)
        if not self.calling.calls:
            self._content(out, self.text)
            return out
        if kind == "none":
            if not self.text.strip() or FENCE.startswith(self.text.lstrip()):
                return out  # may still open a bare call
            self._content(out, self.text[: _safe_end(self.text)])
            return out
        if kind == "tagged":
            self._content(out, self.text[:at].rstrip())
        if not self.calling.grammar:
            return out  # calls are sent once they parsed, at the end
        if kind == "bare":
            start = self.text.find("{", at)
            blocks = [(self.text[start:], False)] if start >= 0 else []
        else:
            blocks = _tagged_blocks(self.text[at:])[0]
        for i, (body, closed) in enumerate(blocks):
            m = _HEAD.match(body)
            if m is None or self.calling.function(m.group(1)) is None:
                break
            args = body[m.end() :]
            if closed:
                args = args.rstrip()
                args = args[:-1].rstrip() if args.endswith("}") else args
            else:
                args = _ARGS_TAIL.sub("", args)
            self._args(out, i, m.group(1), args)
        return out

    def _content(self, out: list[dict[str, Any]], content: str) -> None:
        if len(content) > len(self.sent) and content.startswith(self.sent):
            out.append({"content": content[len(self.sent) :]})
            self.sent = content

    def _args(self, out: list[dict[str, Any]], i: int, name: str, args: str) -> None:
        if i == len(self.calls):
            call_id = new_call_id()
            self.calls.append((call_id, ""))
            out.append(_call_delta(i, {"name": name, "arguments": ""}, call_id))
        if i >= len(self.calls):
            return
        call_id, sent = self.calls[i]
        if len(args) > len(sent) and args.startswith(sent):
            out.append(_call_delta(i, {"arguments": args[len(sent) :]}))
            self.calls[i] = (call_id, args)


_ARGS_TAIL = re.compile(r"[\s}`]*(<(/(t(o(o(l(_(c(a(l(l)?)?)?)?)?)?)?)?)?)?)?$")
"""What may still be the end of the call (``}`` of the outer object, the closing tag or fence): held back."""


def _safe_end(text: str) -> int:
    """How much of ``text`` is content for sure: all but a tail that could begin ``<tool_call>``
    (and the whitespace before it, which a call's content drops)."""
    end = len(text)
    for k in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-k:]):
            end = len(text) - k
            break
    return len(text[:end].rstrip())


def _call_delta(index: int, function: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if call_id is not None:
        call |= {"id": call_id, "type": "function"}
    return {"tool_calls": [call | {"function": function}]}


# -- the Python API ----------------------------------------------------------------------------------------


@dataclass
class ChatChoice:
    """One answer of :func:`chat`: an OpenAI assistant message and why it ended."""

    message: dict[str, Any]
    """``{"role": "assistant", "content": …, "tool_calls": [...]}`` (``tool_calls`` only when it called)."""
    finish_reason: str
    """``tool_calls``, ``stop`` or ``length``."""
    completion: Any
    """The engine's :class:`~sazanami.sampling.rows.Completion` (tokens, log-probs, seed)."""


def message_of(calling: FunctionCalling | None, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason of an output (``tool_calls`` when it called and
    stopped; ``length`` stays ``length``, as when streamed)."""
    if calling is None:
        return {"role": "assistant", "content": text}, finish_reason
    content, calls = calling.parse(text)
    if not calls:
        return {"role": "assistant", "content": text}, finish_reason
    reason = "tool_calls" if finish_reason == "stop" else finish_reason  # length stays: more may have come
    return {"role": "assistant", "content": content, "tool_calls": [c.to_openai() for c in calls]}, reason


def chat(
    engine: Any,
    messages: Sequence[dict[str, Any]],
    *,
    tools: Sequence[Any] = (),
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
    params: Any = None,
    grammar: bool = True,
    response_format: dict[str, Any] | None = None,
) -> list[ChatChoice]:
    """Chat with OpenAI function calling through an :class:`~sazanami.engine.loop.Engine`; ``params.n`` choices.

    ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``messages`` (with assistant
    ``tool_calls`` and ``tool`` results) are OpenAI's; ``response_format`` is
    ``{"type": "json_schema", "json_schema": {"schema": …}}`` (or ``json_object``).
    ``grammar=False`` generates unconstrained and parses afterwards.

    >>> from sazanami import Engine, SamplingParams, load
    >>> engine = Engine(load("qwen2.5-coder-0.5b"))
    >>> add = {"type": "function", "function": {"name": "add", "parameters": {
    ...     "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}
    >>> (c,) = chat(engine, [{"role": "user", "content": "2+3?"}], tools=[add], tool_choice="required",
    ...             params=SamplingParams(seed=1))
    >>> c.finish_reason, len(c.message["tool_calls"])
    ('tool_calls', 1)
    """
    from sazanami.islands import Constraint, Islands
    from sazanami.sampling.params import SamplingParams

    params = params or SamplingParams()
    msgs = [dict(m) for m in messages]
    check_messages(msgs)
    schema = response_schema(response_format)
    calling = FunctionCalling.from_openai(
        tools, tool_choice, parallel_tool_calls, grammar=grammar, content_schema=schema
    )
    if calling is not None or has_tool_messages(msgs):
        prompt: Any = render_prompt(engine.tokenizer, msgs, calling.functions if calling else ())
        raw = True
    else:
        prompt, raw = msgs, False
    constraint = calling.constraint(engine.tokenizer) if calling is not None else None
    if schema is not None and (calling is None or not calling.calls):  # the content alone is JSON
        constraint = Constraint.json_schema(schema)
    islands = Islands(constraint=constraint) if constraint is not None else None
    out = []
    for comp in engine.generate([prompt], params, raw=raw, islands=islands):
        message, reason = message_of(calling, comp.text, comp.finish_reason)
        out.append(ChatChoice(message, reason, comp))
    return out


def response_schema(response_format: dict[str, Any] | None, where: str = "response_format") -> dict[str, Any] | None:
    """The JSON schema an OpenAI ``response_format`` asks for (None for text), checked."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise ParameterError(f"{where}.type", f"{where}.type must be text, json_object or json_schema, got {kind!r}")
    schema = (response_format.get("json_schema") or {}).get("schema")
    check_json_schema(schema, f"{where}.json_schema.schema")
    return schema  # type: ignore[no-any-return]
