"""Click options derived from the objects that own them.

Every :class:`~sazanami.sampling.params.SamplingParams` field, every :class:`~sazanami.server.limits.Limits`
field, every option of every search strategy and every key of an islands spec becomes an
option here, named after the field (``top_p`` → ``--top-p``), typed and defaulted from it and
documented by its docstring. A new field appears in the CLI at once. The few flags spelled
otherwise are in :data:`FLAGS`, the one alias table.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from sazanami.engine.engine_spec import ENGINE_BACKENDS, EngineSpec
from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.field_docs import field_docs
from sazanami.islands.runtime import ISLAND_INPUTS, ISLAND_LIMITS, Islands, marked_text
from sazanami.models import DEFAULT_MODEL, load, load_for
from sazanami.sampling.beam_params import split_beams
from sazanami.sampling.params import SamplingParams
from sazanami.search.strategies import STRATEGIES, strategy_options
from sazanami.server.limits import Limits

Decorator = Callable[[Any], Any]

FLAGS: dict[str, tuple[str, ...]] = {
    "n": ("-n", "--n"),
    "temperature": ("--temperature", "-t"),
    "fluctuation": ("--fluctuation", "-f"),
    "max_calls": ("--max-tool-calls",),  # Islands: the tool limits say "tool"
    "timeout": ("--tool-timeout",),
    "beta": ("--beam-beta",),  # beam's noise color; --beta overrides the fluctuation's
    "samples": ("--samples", "-k"),  # the benches' samples per prompt
    "model": ("--model", "-m"),
    "n_boot": ("--bootstrap",),
}
"""The flags not spelled ``--field-name`` (the value keeps the field's name)."""

FILE_INPUTS = {"json_schema": "FILE", "grammar": "FILE.lark"}
"""Islands inputs the CLI reads from a file (a JSON schema may also be given inline)."""

_METAVARS = {"tools": "LIST", "corpus": "PATH", "regex": "R", **FILE_INPUTS}


def _flags(name: str) -> tuple[str, ...]:
    return FLAGS.get(name, ("--" + name.replace("_", "-"),))


def _base(hint: Any) -> Any:
    """``int | None`` → int; other unions stay as they are."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0] if len(args) == 1 else hint
    return hint


def _help(doc: str) -> str:
    """A docstring as plain help text: no ``literal`` marks, :role:`~a.b.Name` → Name."""
    return re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", doc).replace("``", "")


def _option(name: str, hint: Any, default: Any, doc: str, dest: str | None = None, **extra: Any) -> Decorator:
    """One click option for the value ``name`` of type ``hint`` (given to the command as ``dest``)."""
    hint, dest = _base(hint), dest or name
    kw: dict[str, Any] = {"help": _help(doc), "show_default": default is not None and default != ()}
    if hint is bool:
        flag = _flags(name)[0]
        if default:
            return click.option(f"{flag}/--no-{flag[2:]}", dest, default=True, show_default=True, help=kw["help"])
        return click.option(flag, dest, is_flag=True, default=False, help=kw["help"])
    if typing.get_origin(hint) is tuple:
        kw.update(multiple=True, type=str, show_default=False)
    elif hint in (int, float, str):
        kw["type"] = hint
    kw.update(extra)
    return click.option(*_flags(name), dest, default=default, **kw)


def _apply(fn: Any, options: Iterable[Decorator]) -> Any:
    for option in reversed(list(options)):
        fn = option(fn)
    return fn


def dataclass_options(
    cls: type, names: Iterable[str] | None = None, defaults: dict[str, Any] | None = None
) -> list[Decorator]:
    """An option per dataclass field (those in ``names``, default all), documented by its docstring;
    ``defaults``: the command's own default of a field where it differs from the dataclass's."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    wanted = None if names is None else set(names)
    defaults = defaults or {}
    return [
        _option(f.name, hints[f.name], defaults.get(f.name, f.default), docs.get(f.name, ""))
        for f in dataclasses.fields(cls)
        if wanted is None or f.name in wanted
    ]


def config_options(cls: type, names: Iterable[str], defaults: dict[str, Any] | None = None) -> Decorator:
    """The options of a run's config dataclass ``cls``: one per field in ``names`` (see
    :func:`dataclass_options`); the command takes them as ``**fields`` for :func:`config_from_options`."""
    options = dataclass_options(cls, names, defaults)
    return lambda fn: _apply(fn, options)


def config_from_options(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` from the values of :func:`config_options`' options: a repeatable (tuple) option
    is split at commas, and given no value it is None where that is the field's default."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if typing.get_origin(_base(hints[f.name])) is tuple:
            value = comma_list(value) or (None if f.default is None else ())
        kw[f.name] = value
    return cls(**kw)


def comma_list(items: Iterable[str]) -> tuple[str, ...]:
    """The names of a repeatable, comma-separated option (``--methods a,b --methods c``), blanks dropped."""
    return tuple(s.strip() for item in items for s in item.split(",") if s.strip())


# -- sampling --------------------------------------------------------------------------------------

PARAM_OPTIONS = tuple(f.name for f in dataclasses.fields(SamplingParams) if f.name != "fluctuation")
"""The SamplingParams fields given as plain values (``fluctuation`` also takes --sigma / --beta)."""


def sampling_options(fn: Any) -> Any:
    """Every SamplingParams field, the fluctuation overrides, ``--model`` and ``--raw``."""
    return _apply(
        fn,
        [
            *dataclass_options(SamplingParams, PARAM_OPTIONS),
            _option("fluctuation", str, None, "Preset name, JSON object or FILE.json: where colored noise enters."),
            click.option("--sigma", type=float, default=None, help="Override the fluctuation's sigma."),
            click.option("--beta", type=float, default=None, help="Override the fluctuation's beta (noise color)."),
            click.option(
                "--model",
                "-m",
                default=DEFAULT_MODEL,
                show_default=True,
                help="Registry name, HF directory or .gguf file.",
            ),
            click.option("--raw", is_flag=True, help="Plain completion: no chat template."),
            prefix_cache_option,
        ],
    )


prefix_cache_option = click.option(
    "--prefix-cache/--no-prefix-cache",
    default=True,
    show_default=True,
    help="Reuse the keys/values of prompts and outputs computed earlier in this run (search branches, judge prompts).",
)


def engine_from_options(
    model: str,
    prefix_cache: bool = True,
    backend: str | None = None,
    rows: int = 1,
    fluctuation: Any = None,
    ray_replicas: int = 0,
    ray_address: str | None = None,
) -> Engine:
    """The engine for ``model`` with or without the prefix cache.

    ``backend`` None: torch wherever it runs the model (``load``'s default); otherwise
    ``auto``/``torch``/``llamacpp`` for a request of ``rows`` rows (:func:`load_for`), or
    ``vllm`` (:class:`~sazanami.backends.vllm.VllmEngine`). ``ray_replicas`` > 0: that many
    Ray actors, one engine of one thread each (:class:`~sazanami.engine.replicas.RayEngines`).
    """
    if ray_replicas:
        from sazanami.engine.replicas import RayEngines

        spec = EngineSpec(model, backend or "auto", threads=1, prefix_cache=prefix_cache)
        return RayEngines(spec, replicas=ray_replicas, address=ray_address)
    if backend == "vllm":
        return EngineSpec(model, backend).open()
    if backend is None:
        return Engine(load(model), prefix_cache=prefix_cache)
    return Engine(load_for(model, backend, rows, fluctuation), prefix_cache=prefix_cache)


BACKEND_HELP = (
    "Which engine runs the model. auto: llama.cpp for GGUF-only models; for a model both run, "
    "llama.cpp below a crossover number of rows (measured once on this machine, "
    "$SAZANAMI_AUTO_ROWS overrides it) and torch from there (search, flows and the server run several). "
    "vllm: vLLM (its own venv, `make vllm`)."
)

backend_option = click.option(
    "--backend", type=click.Choice(ENGINE_BACKENDS), default="auto", show_default=True, help=BACKEND_HELP
)
"""``--backend``: its choices are :data:`sazanami.engine.engine_spec.ENGINE_BACKENDS` (the model backends
of :data:`sazanami.models.BACKENDS`, one place to add one, plus ``vllm``)."""

ray_options = [
    click.option(
        "--ray-replicas",
        type=int,
        default=0,
        help="Run the rows on N Ray actors, one engine (1 thread) each; 0 = this process.",
    ),
    click.option("--ray-address", default=None, help="Ray cluster to join  [default: start Ray locally]"),
]


def engine_options(fn: Any) -> Any:
    """``--backend``, ``--ray-replicas`` and ``--ray-address`` (see :func:`engine_from_options`)."""
    return _apply(fn, [backend_option, *ray_options])


SEARCH_ROWS = 8
"""Rows per engine call that ``auto`` assumes for a search or a flow when ``-n`` is not given
(strategies draw several variants per round; judge calls batch the candidates)."""


def params_from_options(kw: dict[str, Any]) -> SamplingParams:
    """SamplingParams from the options ``sampling_options`` added (fluctuation overrides applied)."""
    values = {k: kw[k] for k in PARAM_OPTIONS}
    values["stop"] = tuple(values["stop"])
    fluct, sigma, beta = kw.get("fluctuation"), kw.get("sigma"), kw.get("beta")
    if fluct is not None or sigma is not None or beta is not None:
        fl, beams = split_beams(fluct or "pink-temperature")  # a beams entry: beam search
        values["fluctuation"] = fl.override(sigma=sigma, beta=beta) if fl is not None else None
        if beams is not None:
            values["beams"] = beams if beta is None else dataclasses.replace(beams, beta=beta)
    return SamplingParams(**values)


# -- strategies ------------------------------------------------------------------------------------


def _strategy_table() -> dict[str, dict[str, tuple[Any, Any]]]:
    """option → {strategy: (type, default)}, over every strategy's options."""
    table: dict[str, dict[str, tuple[Any, Any]]] = {}
    for strategy, impl in STRATEGIES.items():
        hints = typing.get_type_hints(impl)
        for name, default in strategy_options(strategy).items():
            table.setdefault(name, {})[strategy] = (hints.get(name, Any), default)
    return table


STRATEGY_OPTIONS = _strategy_table()
"""Every strategy's options; ``-n`` is shared with SamplingParams.n (see :func:`strategy_values`)."""


def strategy_dest(name: str) -> str:
    """The keyword a strategy option arrives under: its flag's name (``beta`` → ``beam_beta``).

    Strategy options share ``search`` with the sampling options (``--beta`` overrides the
    fluctuation's), so their values are named after their own flags.
    """
    return next(f for f in _flags(name) if f.startswith("--"))[2:].replace("-", "_")


def _strategy_option(name: str, per: dict[str, tuple[Any, Any]]) -> Decorator:
    hint = next(iter(per.values()))[0]
    where = ", ".join(f"{s} ({'—' if d is None or d is inspect.Parameter.empty else d})" for s, (_, d) in per.items())
    simple = _base(hint) in (int, float, str)
    doc = f"Strategy option of {where}." + ("" if simple else " A JSON value or text.")
    return _option(name, hint if simple else str, None, doc, dest=strategy_dest(name))


def strategy_option_decls(fn: Any) -> Any:
    """One option per strategy option (none given = the strategy's default)."""
    return _apply(fn, [_strategy_option(n, per) for n, per in STRATEGY_OPTIONS.items() if n != "n"])


def _value(text: str, hint: Any) -> Any:
    """A strategy option given as text: JSON, a comma list of numbers (``list[float]``), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text and list[float] in typing.get_args(hint):
        try:
            return [float(x) for x in text.split(",")]
        except ValueError:
            pass
    return text


def strategy_values(kw: dict[str, Any], n: int | None) -> dict[str, Any]:
    """The strategy options given on the command line (popped from ``kw``); ``n`` is ``-n`` if given:
    candidates side by side, for every strategy (the strategy puts it where it keeps it, e.g. beam's width)."""
    out = {}
    for name, per in STRATEGY_OPTIONS.items():
        value = None if name == "n" else kw.pop(strategy_dest(name), None)
        if value is None:
            continue
        hint = next(iter(per.values()))[0]
        out[name] = value if _base(hint) in (int, float, str) else _value(value, hint)
    if n is not None:
        out["n"] = n
    return out


def extra_values(pairs: Iterable[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs (JSON values, else text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError("option", f"--option takes KEY=VALUE, got {pair!r}")
        out[key.replace("-", "_")] = _value(value, Any)
    return out


# -- islands ---------------------------------------------------------------------------------------

ISLAND_OPTIONS = (*ISLAND_INPUTS, *ISLAND_LIMITS)
"""The keyword names ``island_options`` adds: an islands spec's keys."""


def _input_help(key: str, doc: str) -> str:
    if key == "json_schema":
        return f"{doc} A file, or an inline JSON object."
    return f"{doc} A file." if key in FILE_INPUTS else doc


def island_options(fn: Any) -> Any:
    """The islands spec's inputs (``--tools``, ``--regex`` …) and limits (``--tool-timeout`` …)."""
    inputs = [
        _option(key, str, None, _input_help(key, doc), metavar=_METAVARS.get(key)) for key, doc in ISLAND_INPUTS.items()
    ]
    return _apply(fn, [*inputs, *dataclass_options(Islands, ISLAND_LIMITS)])


def _read(value: str, key: str) -> str:
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    if key == "json_schema" and value.lstrip().startswith("{"):
        return value
    raise ParameterError(key, f"{key.replace('_', '-')} must be a readable file, got {value!r}")


def islands_from_options(kw: dict[str, Any], tokenizer: Any = None) -> Islands | None:
    """An ``Islands`` from the options ``island_options`` added (via :meth:`Islands.from_dict`), or None.

    ``tokenizer`` (optional) checks the grammar against the model's vocabulary up front.
    """
    spec = {k: kw[k] for k in ISLAND_OPTIONS if kw.get(k) is not None}
    for key in FILE_INPUTS:
        if key in spec:
            spec[key] = _read(spec[key], key)
    # a json_schema stays text: Constraint.json_schema parses it with its nesting checked first
    islands = Islands.from_dict(spec, tokenizer=tokenizer)
    return islands if islands.active else None


def highlight(completion: Any, style: Any) -> str:
    """The completion's (or a tree node's) text with each injected span passed through ``style``."""
    return marked_text(completion.text, completion.spans, style)


# -- server limits ---------------------------------------------------------------------------------


def limits_options(fn: Any) -> Any:
    """One option per :class:`Limits` field (``sazanami serve``)."""
    return _apply(fn, dataclass_options(Limits))


def options_of(command: click.Command) -> dict[str, click.Parameter]:
    """A command's parameters by the name of the value they set."""
    return {p.name: p for p in command.params if p.name is not None}
