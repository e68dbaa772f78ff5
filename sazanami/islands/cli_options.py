"""Command-line options for islands, shared by ``sazanami generate`` and ``sazanami search``.

``island_options`` adds the options to a click command; ``islands_from_options`` turns
them into an :class:`~sazanami.islands.Islands` (or None when none was given).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sazanami.errors import ParameterError

ISLAND_OPTIONS = ("tools", "corpus", "regex", "json_schema", "grammar", "tool_timeout", "max_tool_calls")


def island_options(fn: Any) -> Any:
    """Add ``--tools``, ``--corpus``, ``--regex``, ``--json-schema``, ``--grammar`` and the tool limits."""
    options = [
        click.option(
            "--tools", default=None, metavar="LIST",
            help="Tools the model may call, comma-separated: calc, search, load. It writes NAME(args); "
            "the result is injected as ' => result'.",
        ),
        click.option(
            "--corpus", default=None, metavar="PATH",
            help="Documents for SEARCH/LOAD: a folder of .txt files or a JSONL file of {id, text}.",
        ),
        click.option("--regex", default=None, metavar="R", help="The output must match this regular expression."),
        click.option(
            "--json-schema", default=None, metavar="FILE",
            help="The output must be JSON following this schema (a file, or an inline JSON object).",
        ),
        click.option(
            "--grammar", default=None, metavar="FILE.lark", help="The output must follow this Lark grammar.",
        ),
        click.option("--tool-timeout", type=float, default=5.0, show_default=True, help="Seconds per tool call."),
        click.option("--max-tool-calls", type=int, default=8, show_default=True, help="Tool calls per variant."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _read(value: str, param: str) -> str:
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    if param == "json_schema" and value.lstrip().startswith("{"):
        return value
    raise ParameterError(param, f"{param.replace('_', '-')} must be a readable file, got {value!r}")


def islands_from_options(kw: dict[str, Any], tokenizer: Any = None) -> Any:
    """An ``Islands`` from the options ``island_options`` added, or None if none was used.

    ``tokenizer`` (optional) checks the grammar against the model's vocabulary up front.
    """
    from sazanami.islands import Constraint, Corpus, Islands, builtin_tools

    given = [k for k in ("regex", "json_schema", "grammar") if kw.get(k)]
    if len(given) > 1:
        names = " and ".join("--" + k.replace("_", "-") for k in given)
        raise ParameterError(given[1], f"use at most one of --regex, --json-schema, --grammar; got {names}")
    constraint = None
    if kw.get("regex"):
        constraint = Constraint.regex(kw["regex"])
    elif kw.get("json_schema"):
        text = _read(kw["json_schema"], "json_schema")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParameterError("json_schema", f"json-schema is not valid JSON: {exc}") from exc
        constraint = Constraint.json_schema(schema)
    elif kw.get("grammar"):
        constraint = Constraint.lark(_read(kw["grammar"], "grammar"))
    if constraint is not None and tokenizer is not None:
        error = constraint.error(tokenizer)
        if error:
            raise ParameterError(given[0], f"invalid {given[0].replace('_', '-')}: {error}")
    tools = None
    names = [n.strip() for n in (kw.get("tools") or "").split(",") if n.strip()]
    if names:
        corpus = Corpus.load(kw["corpus"]) if kw.get("corpus") else None
        tools = builtin_tools(names, corpus)
    elif kw.get("corpus"):
        raise ParameterError("corpus", "--corpus is for the search and load tools: add --tools search,load")
    if tools is None and constraint is None:
        return None
    return Islands(
        tools=tools,
        constraint=constraint,
        timeout=kw.get("tool_timeout") if kw.get("tool_timeout") is not None else 5.0,
        max_calls=kw.get("max_tool_calls") if kw.get("max_tool_calls") is not None else 8,
    )


def highlight(completion: Any, style: Any) -> str:
    """The completion's (or a tree node's) text with each injected span passed through ``style``."""
    from sazanami.islands.runtime import marked_text

    return marked_text(completion.text, completion.spans, style)
