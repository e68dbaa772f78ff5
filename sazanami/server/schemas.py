"""HTTP request bodies: OpenAI's fields plus sazanami's extensions, mapped onto the library's objects.

The sampling fields are generated from :class:`~sazanami.sampling.params.SamplingParams` (one per
dataclass field, same name, documented by the field's docstring), so every parameter of the
Python API is reachable from the body and SamplingParams stays the one place that checks
ranges: the server's 400 carries its message ("top_p must be in (0, 1], got 1.5") and param.

Extensions in the body (pass them with the openai client's ``extra_body``):

- ``fluctuation`` — a preset name or the fluctuation object (a SamplingParams field; never a
  file path over HTTP: the server opens no file a request names);
- ``search`` — ``{"strategy", "budget", "scorer", "options", "return_tree"}``;
- ``server_tools`` — names of tools the server runs (``["calc"]``); the model's calls are
  run and their results injected into the text. ``tools`` as a list of names is the old
  spelling (deprecated); ``tools`` as OpenAI function objects is OpenAI function calling
  (:mod:`sazanami.server.tool_calls`: ``tool_choice``, ``parallel_tool_calls``, answers with
  ``message.tool_calls``), and ``tool_grammar: false`` generates those calls unconstrained;
- ``grammar`` (Lark) / ``regex`` / ``json_schema`` — a constraint the output follows
  (OpenAI's ``response_format`` with ``json_schema`` or ``json_object`` maps here too);
  a schema is at most :data:`MAX_SCHEMA_DEPTH` deep and :data:`MAX_SCHEMA_NODES` values big;
- ``batch_invariant`` — run the request's rows in engine batches of their own, so that a
  seeded request's tokens do not depend on what else the server runs.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from sazanami.errors import ParameterError
from sazanami.field_docs import field_docs
from sazanami.sampling.params import SamplingParams
from sazanami.search.budget import DEFAULT_BUDGET_SAMPLES, Budget, search_budget
from sazanami.server.limits import Limits

Prompt = str | list[dict[str, str]]

MAX_SCHEMA_DEPTH = 32
"""Nesting of a JSON schema (objects and arrays) at most; deeper is 400."""
MAX_SCHEMA_NODES = 4096
"""Values (objects, arrays, scalars) in a JSON schema at most; more is 413."""


def _sampling_fields() -> dict[str, Any]:
    """One optional pydantic field per SamplingParams field (None = the library's default)."""
    hints = typing.get_type_hints(SamplingParams)
    docs = field_docs(SamplingParams)
    wire = {
        "stop": str | list[str],
        "fluctuation": str | dict[str, Any],
        "beams": int | dict[str, Any],
        "logit_bias": dict[str, float],  # OpenAI's {"token id": bias}
        "dry_sequence_breakers": list[str],
    }
    return {
        f.name: (wire.get(f.name, hints[f.name]) | None, Field(None, description=docs.get(f.name)))
        for f in dataclasses.fields(SamplingParams)
    }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SamplingFields = create_model("SamplingFields", __base__=_Strict, **_sampling_fields())
"""Every :class:`SamplingParams` field, optional; request bodies extend it."""


class SearchSpec(_Strict):
    """The ``search`` extension: spend more compute, answer with the winner."""

    strategy: str = Field("best_of_n", description="best_of_n, anneal, noise_search, beam, tree, optimize, synthesize.")
    budget: int | dict[str, Any] | None = Field(
        None,
        description=f"Generated tokens (or {{tokens, wall_s}}); default {DEFAULT_BUDGET_SAMPLES} × max_tokens, capped by the server.",
    )
    scorer: str | dict[str, Any] | None = Field(
        None, description="logprob, judge, novelty, contains:a,b, regex:PATTERN, or a combination (default judge)."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The strategy's own options (rounds, keep …).")
    return_tree: bool = Field(False, description="Add the whole search tree to the response.")


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    type: str
    json_schema: dict[str, Any] | None = None


class Message(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(None, description="An assistant message's calls (OpenAI's shape).")
    tool_call_id: str | None = Field(None, description="A tool message: the call it answers.")


class _Request(SamplingFields):  # type: ignore[misc, valid-type]
    model: str | None = Field(None, description="The served model's id (GET /v1/models); default: it.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # accepted and ignored, as some clients send them
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    # OpenAI function calling (chat): functions the client runs (a list of names: server_tools, deprecated)
    tools: list[str | dict[str, Any]] | None = Field(
        None, description="OpenAI function objects the model may call (answered with message.tool_calls)."
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="none, auto (default), required, or {type: function, function: {name}}."
    )
    parallel_tool_calls: bool | None = Field(None, description="Several calls in one answer (default true).")
    # sazanami's extensions
    search: SearchSpec | None = None
    server_tools: list[str] | None = Field(
        None, description="Tools the server runs (calc, search, load, copy): their results are injected into the text."
    )
    tool_grammar: bool | None = Field(
        None, description="Generate function calls under their JSON schemas' grammar (default true)."
    )
    grammar: str | None = Field(None, description="A Lark grammar (llguidance dialect) the output must follow.")
    regex: str | None = Field(None, description="A regex the whole output must match.")
    json_schema: dict[str, Any] | str | None = Field(None, description="A JSON schema the output must follow.")
    response_format: ResponseFormat | None = None
    batch_invariant: bool | None = Field(
        None,
        description="Run this request's rows in engine batches of their own: a seeded request's tokens "
        "do not depend on what else runs (default: the server's setting).",
    )

    # -- to the library's objects ---------------------------------------------------------------
    def sampling_params(self, limits: Limits) -> SamplingParams:
        """The request's SamplingParams (None fields keep the library's defaults), within ``limits``."""
        values = {name: getattr(self, name) for name in SamplingParams.field_names() if getattr(self, name) is not None}
        if isinstance(values.get("stop"), list):
            values["stop"] = tuple(values["stop"])
        values.setdefault("max_tokens", min(SamplingParams.max_tokens, limits.max_tokens))
        fl = values.get("fluctuation")
        if isinstance(fl, str) and fl.strip() not in _presets():
            # Fluctuation.parse would also take a JSON text or a .json path: over HTTP only names.
            raise ParameterError(
                "fluctuation",
                f"fluctuation must be a preset ({', '.join(_presets())}) or an object, got {_short(fl)}",
            )
        params = SamplingParams(**values)
        if params.n > limits.max_n:
            raise ParameterError("n", f"n must be in [1, {limits.max_n}] on this server, got {params.n}")
        if params.max_tokens > limits.max_tokens:
            raise ParameterError(
                "max_tokens", f"max_tokens must be in [1, {limits.max_tokens}] on this server, got {params.max_tokens}"
            )
        return params

    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _constraint_spec(self) -> dict[str, Any]:
        """The grammar fields of an islands spec (OpenAI's ``response_format`` mapped onto ``json_schema``)."""
        spec = {k: getattr(self, k) for k in ("regex", "json_schema", "grammar") if getattr(self, k) is not None}
        if "json_schema" in spec:
            _check_schema(spec["json_schema"], "json_schema")
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return spec
        if fmt.type not in ("json_object", "json_schema"):
            raise ParameterError(
                "response_format.type",
                f"response_format.type must be text, json_object or json_schema, got {fmt.type!r}",
            )
        if spec:
            raise ParameterError(
                "response_format",
                f"give one of grammar, regex, json_schema, response_format; got {', '.join(spec)} too",
            )
        schema = {"type": "object"} if fmt.type == "json_object" else (fmt.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise ParameterError(
                "response_format.json_schema.schema", "response_format.json_schema needs a 'schema' object"
            )
        _check_schema(schema, "response_format.json_schema.schema")
        from sazanami.server.tool_calls import check_json_schema

        check_json_schema(schema, "response_format.json_schema.schema")  # the metaschema
        return {"json_schema": schema}

    def constraint(self) -> Any:
        """The grammar the output must follow (a :class:`sazanami.islands.Constraint`), or None."""
        from sazanami.islands import Islands

        return Islands.from_dict(self._constraint_spec()).constraint

    def server_tool_names(self) -> tuple[str, list[str]]:
        """``(field, names)`` of the tools the server is asked to run: ``server_tools``, or
        ``tools`` given as a list of names (the deprecated spelling); ``("", [])`` for none."""
        names = [t for t in self.tools or [] if isinstance(t, str)]
        if names and len(names) != len(self.tools or []):
            raise ParameterError(
                "tools", "tools must be all function objects (OpenAI function calling) or all names (server tools)"
            )
        if names and self.server_tools is not None:
            raise ParameterError(
                "tools", "give server tools once: server_tools (tools as a list of names is deprecated)"
            )
        if self.server_tools is not None:
            return "server_tools", list(self.server_tools)
        return ("tools", names) if names else ("", [])

    def function_calling(self, limits: Limits) -> Any:
        """OpenAI function calling of this request (:class:`~sazanami.server.tool_calls.FunctionCalling`;
        with ``tool_choice`` none the functions are described and nothing is called), or None
        when ``tools`` holds no function objects."""
        from sazanami.server.tool_calls import FunctionCalling, response_schema

        functions = [t for t in self.tools or [] if not isinstance(t, str)]
        field, _ = self.server_tool_names()
        if not functions:
            if self.tool_choice not in (None, "auto", "none"):
                raise ParameterError(
                    "tool_choice",
                    f"tool_choice {_short(self.tool_choice)} needs function objects in tools"
                    + (f" (the {field} are run by the server)" if field else ""),
                )
            if self.parallel_tool_calls is not None or self.tool_grammar is not None:
                name = "parallel_tool_calls" if self.parallel_tool_calls is not None else "tool_grammar"
                raise ParameterError(name, f"{name} applies to function objects in tools; there are none")
            return None
        fmt = self.response_format
        schema = response_schema(fmt.model_dump()) if fmt is not None else None
        calling = FunctionCalling.from_openai(
            functions,
            self.tool_choice,
            self.parallel_tool_calls,
            grammar=self.tool_grammar is not False,
            content_schema=schema,
            max_tools=limits.max_tools,
        )
        if calling is None or not calling.calls:
            return calling  # none: the functions are described, the request's own grammar applies
        given = [k for k in ("regex", "json_schema", "grammar") if getattr(self, k) is not None]
        if given:
            raise ParameterError(given[0], f"{given[0]} cannot be combined with function calling (tools)")
        return calling

    def islands(self, server_tools: Any, calling: Any = None, tokenizer: Any = None) -> Any:
        """Tools and grammar of this request (:class:`sazanami.islands.Islands`), or None.

        ``server_tools`` is the server's :class:`~sazanami.islands.ToolRegistry`; a request
        names the tools it lets the model call (case-insensitive). ``calling``
        (:meth:`function_calling`) puts its grammar in place of the request's own
        (``response_format`` is then part of it).
        """
        from sazanami.islands import Islands, ToolRegistry

        calls = calling is not None and calling.calls
        spec = {} if calls else self._constraint_spec()
        field, names = self.server_tool_names()
        if names and self.tool_choice != "none":
            spec["tools"] = names
        try:
            islands = Islands.from_dict(spec, available=server_tools if server_tools is not None else ToolRegistry())
        except ParameterError as exc:  # the field the client used
            raise ParameterError(exc.param.replace("tools", field, 1) if field else exc.param, str(exc)) from exc
        if calls:
            constraint = calling.constraint(tokenizer)
            if constraint is not None:
                islands = dataclasses.replace(islands, constraint=constraint)
        return islands if islands.active else None

    def check_search(self, params: SamplingParams, limits: Limits) -> None:
        """Reject what a search cannot do and budgets over the server's limit."""
        spec = self.search
        if spec is None:
            return
        if params.n != 1:
            raise ParameterError("n", "n must be 1 with search (the strategy's options set how many candidates)")
        from sazanami.search import check_strategy_options, make_scorer

        try:
            budget = self.search_budget(params, limits)
        except ParameterError as exc:
            raise ParameterError("search." + _under("budget.", exc.param), str(exc)) from exc
        if budget.tokens > limits.max_search_budget:
            raise ParameterError(
                "search.budget",
                f"search.budget must be in [1, {limits.max_search_budget}] tokens on this server, got {budget.tokens}",
            )
        for key in ("synthesizer", "base_options"):  # objects the strategy reads fields of
            value = spec.options.get(key)
            if value is not None and not isinstance(value, dict):
                raise ParameterError(f"search.options.{key}", f"{key} must be an object, got {_short(value)}")
        try:
            # Every option within its range (rounds within the budget, rows within a batch) before any work.
            check_strategy_options(spec.strategy, spec.options, budget.tokens, limits.max_batch_rows)
        except ParameterError as exc:
            param = exc.param if exc.param == "strategy" else f"search.options.{exc.param}"
            raise ParameterError(param, str(exc)) from exc
        _check_synthesizer(spec.options.get("synthesizer"), limits)
        check_scorer(spec.scorer)
        if spec.scorer is not None:
            try:
                make_scorer(spec.scorer)  # raises for a bad spec
            except ParameterError as exc:
                raise ParameterError(_under("search.", exc.param), str(exc)) from exc
            except (TypeError, ValueError) as exc:
                raise ParameterError("search.scorer", f"bad scorer: {exc}") from exc

    def search_budget(self, params: SamplingParams, limits: Limits) -> Any:
        """The search's :class:`~sazanami.search.Budget`: its wall time at most the server's limit."""
        spec = self.search.budget if self.search is not None else None
        budget = search_budget(spec, params.max_tokens, cap=limits.max_search_budget)
        wall_s = min(budget.wall_s or limits.max_search_seconds, limits.max_search_seconds)
        return Budget(budget.tokens, wall_s)


def _check_synthesizer(synth: dict[str, Any] | None, limits: Limits) -> None:
    """A synthesizer's ``max_tokens`` within the server's ``max_tokens``, its ``n`` (rows of one
    engine call) within ``max_batch_rows``; its other checks are :class:`Synthesizer`'s own."""
    if not synth:
        return
    for key, high in (("max_tokens", limits.max_tokens), ("n", limits.max_batch_rows)):
        value = synth.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > high:
            raise ParameterError(
                f"search.options.synthesizer.{key}",
                f"synthesizer.{key} must be in [1, {high}] on this server, got {value}",
            )


def _presets() -> list[str]:
    from sazanami.noise.fluctuation import PRESETS

    return list(PRESETS)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _under(prefix: str, param: str) -> str:
    """``param`` under ``prefix`` (``budget`` → ``search.budget``), once."""
    return param if param.startswith(prefix) else prefix + param


def _check_schema(schema: Any, param: str) -> None:
    """Refuse a JSON schema nested deeper than MAX_SCHEMA_DEPTH (400) or bigger than MAX_SCHEMA_NODES (413)."""
    if isinstance(schema, str):  # a schema given as JSON text
        try:
            schema = json.loads(schema)
        except RecursionError as exc:
            raise ParameterError(param, f"{param} is nested deeper than {MAX_SCHEMA_DEPTH} levels") from exc
        except ValueError:
            return  # Constraint.json_schema says why
    nodes, stack = 0, [(schema, 1)]
    while stack:  # iterative: a hostile schema must not exhaust the recursion limit here either
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaTooLarge(
                param, f"{param} has more than {MAX_SCHEMA_NODES} values; this server takes at most that"
            )
        if isinstance(value, (dict, list)):
            if depth > MAX_SCHEMA_DEPTH:
                raise ParameterError(param, f"{param} is nested deeper than {MAX_SCHEMA_DEPTH} levels")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _check_pattern(pattern: Any, where: str) -> None:
    """Refuse a regex scorer pattern that Python's backtracking ``re`` may take exponential time
    on: a repetition inside a repetition (``(a+)+``), an alternation inside one (``(a|ab)*``) or a
    backreference. The scorer runs on the search's thread, where no deadline can interrupt it."""
    if not isinstance(pattern, str):
        return  # the scorer itself refuses it
    from re import _parser as sre  # the stdlib's own parse tree of a pattern

    def risk(items: Any, repeated: bool) -> str | None:
        for op, av in items:
            found = None
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
                many = av[1] > 1
                if many and repeated:
                    return "a repetition inside a repetition"
                found = risk(av[2], repeated or many)
            elif op is sre.BRANCH:
                if repeated:
                    return "an alternation inside a repetition"
                found = next((r for b in av[1] if (r := risk(b, repeated))), None)
            elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
                return "a backreference"
            elif op is sre.SUBPATTERN:
                found = risk(av[3], repeated)
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                found = risk(av[1], repeated)
            if found:
                return found
        return None

    try:
        why = risk(sre.parse(pattern), False)
    except RecursionError:
        why = "too deep a nesting"
    except Exception:  # noqa: BLE001 - a pattern that does not compile: the scorer says why
        return
    if why:
        raise ParameterError(
            where,
            f"regex scorer pattern {_short(pattern)} has {why}, which may take exponential time; "
            "over HTTP give simpler patterns (a list of them scores the fraction found)",
        )


class SchemaTooLarge(ParameterError):
    """A JSON schema over :data:`MAX_SCHEMA_NODES` (answered with 413)."""


def check_scorer(spec: Any, where: str = "search.scorer") -> None:
    """Refuse Python verifiers (``py:module:function``, ``{"type": "verifier"}``): they import
    code; and regex patterns that may backtrack for exponential time (see :func:`_check_pattern`)."""
    if isinstance(spec, str):
        if spec.strip().startswith("regex:"):
            _check_pattern(spec.strip()[len("regex:") :], where)
            return
        text = spec.strip().removeprefix("rank:")
        for term in text.split("+"):
            if term.split("*")[-1].strip().startswith("py:"):
                raise ParameterError(where, "Python verifier scorers (py:...) cannot be used over HTTP")
    elif isinstance(spec, dict):
        if spec.get("type") == "verifier":
            raise ParameterError(where, "verifier scorers cannot be used over HTTP")
        if spec.get("type") == "regex":
            patterns = spec.get("patterns", spec.get("pattern", []))
            for pattern in [patterns] if isinstance(patterns, str) else patterns if isinstance(patterns, list) else []:
                _check_pattern(pattern, where)
        for i, part in enumerate(spec.get("parts") or []):
            check_scorer(
                part.get("scorer") if isinstance(part, dict) and "scorer" in part else part, f"{where}.parts[{i}]"
            )


class CompletionRequest(_Request):
    """POST /v1/completions: plain text in, no chat template."""

    prompt: str | list[str]
    logprobs: int | None = Field(
        None, ge=0, le=5, description="Return each token's log-prob and this many top alternatives (raw model)."
    )
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self, limits: Limits) -> list[Prompt]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise ParameterError("prompt", "prompt must not be an empty list")
        if len(prompts) > limits.max_prompts:
            raise ParameterError("prompt", f"prompt must have at most {limits.max_prompts} strings, got {len(prompts)}")
        if self.suffix:
            raise ParameterError("suffix", "suffix is not supported")
        if self.best_of not in (None, self.n or 1):
            raise ParameterError("best_of", "best_of is not supported; use the search extension (strategy best_of_n)")
        return prompts  # type: ignore[return-value]

    @property
    def raw(self) -> bool:
        return True

    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    def sampling_params(self, limits: Limits) -> SamplingParams:
        params = super().sampling_params(limits)
        if self.logprobs and not params.top_logprobs:  # the legacy field's int is the number of alternatives
            params = params.replace(top_logprobs=self.logprobs)
        return params


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions: messages through the model's chat template."""

    messages: list[Message]
    logprobs: bool = False
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="Top alternatives per token (with logprobs), from the raw model distribution."
    )
    max_completion_tokens: int | None = None

    def prompts(self, limits: Limits) -> list[Prompt]:
        if not self.messages:
            raise ParameterError("messages", "messages must not be empty")
        out: list[dict[str, Any]] = []
        for i, m in enumerate(self.messages):
            content = m.content
            if isinstance(content, list):
                parts = []
                for j, part in enumerate(content):
                    if part.get("type") != "text" or not isinstance(part.get("text"), str):
                        raise ParameterError(f"messages[{i}].content[{j}]", "only text content parts are supported")
                    parts.append(part["text"])
                content = "".join(parts)
            role = "system" if m.role == "developer" else m.role
            msg: dict[str, Any] = {"role": role, "content": content or ""}
            if m.tool_calls:
                msg["tool_calls"] = m.tool_calls
            if m.tool_call_id is not None:
                msg["tool_call_id"] = m.tool_call_id
            out.append(msg)
        from sazanami.server.tool_calls import check_messages

        check_messages(out)
        return [out]  # type: ignore[list-item]

    def sampling_params(self, limits: Limits) -> SamplingParams:
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise ParameterError("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
            try:
                update = {"max_tokens": self.max_completion_tokens, "max_completion_tokens": None}
                return self.model_copy(update=update).sampling_params(limits)
            except ParameterError as exc:  # the error names the field the client sent
                if exc.param != "max_tokens":
                    raise
                raise ParameterError(
                    "max_completion_tokens", str(exc).replace("max_tokens", "max_completion_tokens")
                ) from exc
        return super().sampling_params(limits)

    @property
    def raw(self) -> bool:
        return False

    def wants_logprobs(self) -> bool:
        return self.logprobs
