"""Flows: a search written down as data (JSON or YAML), so it can be saved, shared and rerun.

A flow is a graph of steps over *pools* of candidates. Written as a plain list, it is one
pool handed down the list::

    name: concepts-mmr-synth
    prompt: "Write one sentence that uses all of these words: dog, ball, park."
    seed: 7
    budget: 1500                      # generated tokens, or {tokens: 1500, wall_s: 60}
    params: {max_tokens: 48, temperature: 0.8}
    scorer: "contains:dog,ball,park"  # the default scorer
    scorers: {quality: judge}         # optional named scorers
    islands: {tools: [calc], regex: "..."}   # optional: tools / a grammar for every candidate
    steps:
      - generate: {n: 8, temperature: 1.1}   # pool = 8 fresh samples
      - score: {}                            # default scorer (or {scorer: quality})
      - select: {k: 3, method: mmr}          # pool = 3 winners, diversity-aware
      - improve: {n: 2}                      # pool += 2 improvements of each
      - score: {}
      - select: {k: 2}
      - synthesize: {n: 1}                   # pool += 1 merge of the pool
      - score: {}
      - select: {k: 1}

Any step may also carry ``id`` (its name in progress events and errors), ``in`` (the pool
or pools it reads, default ``pool``) and ``out`` (the pool it writes, default ``pool``); with
them, steps branch and merge (:mod:`sazanami.search.flow_graph` binds and orders them)::

    steps:
      - generate: {id: hot, out: hot, n: 4, temperature: 1.2, fluctuation: pink-temperature}
      - generate: {id: cold, out: cold, n: 4, temperature: 0.6}
      - merge: {in: [hot, cold]}             # writes pool
      - score: {}
      - select: {k: 2}

Steps:

- ``generate`` {n, share, keep, <sampling fields>} — fresh samples (n omitted: as many as
  ``share`` (0–1, default 1) of the remaining budget pays for); the pool becomes them (plus
  the old pool with ``keep: true``);
- ``extend`` {n, keep, <sampling fields>} — per pool node, n continuations from a random cut
  of its tokens (search over paths); keep defaults to true;
- ``improve`` {n, keep, <sampling fields>} — per pool node, n improved drafts (with the
  scorer's feedback); keep defaults to true;
- ``score`` {scorer} — score the pool (a name from ``scorers``, a spec, default the flow's);
  a candidate has one score, the last one given;
- ``select`` {k, method: top-k | mmr, diversity} — keep the winners (unscored nodes are
  scored with the default scorer first);
- ``synthesize`` {n, k, template, max_tokens, temperature, keep} — merge the best k of the
  pool (default all) into n new candidates; keep defaults to true;
- ``merge`` {} — the union of the pools it reads (every step reads the union of its ``in``);
- ``strategy`` {name, share, <options>} — run a whole strategy with ``share`` of what
  remains; the pool becomes its finished candidates;
- ``repeat`` {times, steps} — run the nested steps (one chain, no ``in``/``out``) ``times`` times.

Every step spends from the flow's one budget; model calls are clipped so it is never
exceeded (no step builds more candidates than what remains pays for), and a file's budget
must cover the least the planned steps spend (:meth:`Flow.check_budget`).

A flow is sized before any work, in time linear in its document: at most
:data:`MAX_FLOW_STEPS` steps run (a ``repeat``'s steps counted ``times`` times, nested
repeats multiplied), repeats nest at most :data:`MAX_REPEAT_NESTING` deep, a step's ``n`` and
a strategy's rows are at most ``max_rows`` per engine call (a server passes its batch limit),
a document nests at most :data:`MAX_DOCUMENT_DEPTH` deep and its text is at most
:data:`MAX_DOCUMENT_CHARS` characters; YAML aliases (``*name``) are refused (an alias bomb of
a few hundred bytes expands to gigabytes). The winner is the best candidate of the whole tree. A running
flow reports per-step events (:data:`EVENTS`). ``sazanami flow run FILE`` runs a flow;
:meth:`Flow.run` does the same from Python. An optional top-level ``layout`` ({id: [x, y]})
keeps the editor's node positions; running ignores it.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError, check_int, check_range
from sazanami.islands.bounds import loads_json
from sazanami.islands.runtime import Islands
from sazanami.sampling.params import MAX_N, SamplingParams
from sazanami.search.budget import Budget
from sazanami.search.context import SearchContext
from sazanami.search.flow_graph import GRAPH_FIELDS, FlowError, Graph, Step, build_graph, parse_graph_fields
from sazanami.search.scorer_specs import make_scorer
from sazanami.search.scorers import Scorer
from sazanami.search.selectors import make_selector, rank
from sazanami.search.strategies import STRATEGIES, check_strategy_options, strategy_name, waves
from sazanami.search.synthesis import Improver, Synthesizer
from sazanami.search.tree import Node, Tree

__all__ = [
    "EVENTS",
    "MAX_DOCUMENT_CHARS",
    "MAX_DOCUMENT_DEPTH",
    "MAX_FLOW_STEPS",
    "MAX_REPEAT_NESTING",
    "STEP_KINDS",
    "Flow",
    "FlowError",
    "Step",
    "check_nesting",
    "parse_document",
    "print_event",
    "step_fields",
]

MAX_FLOW_STEPS = 1000
"""Steps a flow runs at most: a repeat's steps count ``times`` times (nested repeats multiply)."""
MAX_REPEAT_NESTING = 8
"""Repeats inside repeats at most."""
MAX_DOCUMENT_DEPTH = 64
"""Nesting of a flow document (objects and arrays) at most."""
MAX_DOCUMENT_CHARS = 65536
"""Characters of a flow document's JSON or YAML text at most."""

_PARAM_FIELDS = set(SamplingParams.field_names()) - {"n", "seed"}
STEP_KINDS: dict[str, set[str]] = {
    "generate": {"n", "share", "keep"} | _PARAM_FIELDS,
    "extend": {"n", "keep"} | _PARAM_FIELDS,
    "improve": {"n", "keep", "template"} | _PARAM_FIELDS,
    "score": {"scorer"},
    "select": {"k", "method", "diversity"},
    "synthesize": {"n", "k", "template", "max_tokens", "temperature", "keep"},
    "strategy": {"name", "share"},  # plus the strategy's own options
    "repeat": {"times", "steps"},
    "merge": set(),
}
_TOP_KEYS = {
    "name", "description", "prompt", "model", "seed", "budget", "params", "scorer", "scorers", "steps", "raw",
    "islands", "layout",
}  # fmt: skip


def _parse_steps(raw: Any, where: str, graph: bool = True, max_rows: int = MAX_N, level: int = 0) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        raise ParameterError(where, f"{where} must be a non-empty list of steps")
    if len(raw) > MAX_FLOW_STEPS:  # before parsing any of them
        raise ParameterError(where, f"{where} must have at most {MAX_FLOW_STEPS} steps, got {len(raw)}")
    out = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise FlowError(here, f"{here} must be an object with one key (the step kind), got {item!r}")
        kind, args = next(iter(item.items()))
        if kind not in STEP_KINDS:
            node = args.get("id") if isinstance(args, dict) and isinstance(args.get("id"), str) else None
            raise FlowError(here, f"{here}: unknown step {kind!r}; known: {', '.join(STEP_KINDS)}", node)
        args = {} if args is None else args
        if not isinstance(args, dict):
            raise FlowError(here, f"{here}.{kind} must be an object, got {args!r}")
        args = dict(args)
        if not graph and any(k in args for k in GRAPH_FIELDS):
            key = next(k for k in GRAPH_FIELDS if k in args)
            raise FlowError(
                f"{here}.{kind}.{key}", f"{here}.{kind}: {key!r} is not allowed inside repeat (its steps are one chain)"
            )
        sid, inputs, output = parse_graph_fields(args, here, i, kind)
        step = Step(kind, args, f"{here}.{kind}", id=sid, inputs=inputs, output=output)
        try:
            if kind != "strategy":
                extra = sorted(str(k) for k in args if k not in STEP_KINDS[kind])
                if extra:
                    known = ", ".join(sorted((STEP_KINDS[kind] - _PARAM_FIELDS) | set(GRAPH_FIELDS))) + (
                        " and sampling fields" if STEP_KINDS[kind] & _PARAM_FIELDS else ""
                    )
                    raise ParameterError(
                        f"{here}.{kind}.{extra[0]}", f"{here}.{kind}: unknown field {extra[0]!r}; known: {known}"
                    )
            _validate(step, max_rows)
            if kind == "repeat":
                if level >= MAX_REPEAT_NESTING:
                    raise ParameterError(
                        f"{here}.repeat", f"{here}.repeat: repeats nest at most {MAX_REPEAT_NESTING} deep"
                    )
                step.steps = _parse_steps(args.get("steps"), f"{here}.repeat.steps", False, max_rows, level + 1)
        except FlowError as exc:
            if exc.node is None and graph:
                exc.node = sid
            raise
        except ParameterError as exc:  # name the node, keep the field
            raise FlowError(exc.param, str(exc), sid if graph else None) from exc
        out.append(step)
    return out


def _runs(steps: list[Step]) -> int:
    """Steps that ``steps`` run, a repeat's counted ``times`` times; raises past :data:`MAX_FLOW_STEPS`."""
    total = 0
    for step in steps:
        if step.kind == "repeat":
            times = step.args["times"]
            inner = _runs(step.steps)
            if times * inner > MAX_FLOW_STEPS:
                raise FlowError(
                    f"{step.where}.times",
                    f"{step.where}: times {times} × {inner} steps would run {times * inner} steps; "
                    f"a flow runs at most {MAX_FLOW_STEPS}",
                    step.id or None,
                )
            total += times * inner
        else:
            total += 1
        if total > MAX_FLOW_STEPS:
            raise FlowError(
                step.where, f"the flow would run more than {MAX_FLOW_STEPS} steps (by {step.where})", step.id or None
            )
    return total


def check_nesting(document: Any, param: str = "flow") -> None:
    """Refuse a document nested deeper than :data:`MAX_DOCUMENT_DEPTH` (iterative: never a RecursionError)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DOCUMENT_DEPTH:
                raise ParameterError(param, f"{param} is nested deeper than {MAX_DOCUMENT_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def _validate(step: Step, max_rows: int = MAX_N) -> None:
    a, w = step.args, step.where

    def positive_int(key: str, required: bool = False, high: int | None = None) -> None:
        if key not in a:
            if required:
                raise ParameterError(f"{w}.{key}", f"{w} needs {key!r}")
            return
        if high is not None and isinstance(a[key], int) and not isinstance(a[key], bool) and a[key] > high:
            raise ParameterError(
                f"{w}.{key}", f"{w}.{key} must be in [1, {high}] (rows per engine call at most {high}), got {a[key]}"
            )
        check_int(f"{w}.{key}", a[key], 1)

    def share() -> None:
        if "share" in a:
            check_range(f"{w}.share", a["share"], 0, 1, low_open=True)

    if step.kind in ("generate", "extend", "improve", "synthesize"):
        positive_int("n", required=step.kind in ("extend", "improve"), high=max_rows)
        overrides = {k: v for k, v in a.items() if k in _PARAM_FIELDS}
        if overrides:
            SamplingParams(**overrides)  # validates, raising ParameterError naming the field
    if "keep" in a and not isinstance(a["keep"], bool):
        raise ParameterError(f"{w}.keep", f"{w}.keep must be true or false, got {a['keep']!r}")
    if step.kind in ("generate", "strategy"):
        share()
    if step.kind == "select":
        positive_int("k", required=True)
        make_selector({k: v for k, v in a.items()})
    if step.kind == "synthesize":
        positive_int("k")
        Synthesizer(**{k: a[k] for k in ("n", "template", "max_tokens", "temperature") if k in a})
    if step.kind == "improve" and "template" in a:
        Improver(a["template"])
    if step.kind == "repeat":
        positive_int("times", required=True)
    if step.kind == "strategy":
        if "name" not in a:
            raise ParameterError(f"{w}.name", f"{w} needs 'name'")
        name = strategy_name(a["name"])
        options = {k: v for k, v in a.items() if k not in ("name", "share")}
        try:
            check_strategy_options(name, options, max_rows=max_rows)
        except ParameterError as exc:
            raise ParameterError(f"{w}.{exc.param}", f"{w}: {exc}") from exc


@dataclass
class Flow:
    """A declarative search: defaults plus a graph of steps (see the module docstring)."""

    steps: list[Step]
    name: str = "flow"
    description: str = ""
    prompt: Any = None
    model: str | None = None
    seed: int | None = None
    budget: Budget | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    scorer: Any = "judge"
    scorers: dict[str, Any] = field(default_factory=dict)
    raw: bool = False
    islands: Islands | None = None
    """Tools and/or a grammar for every candidate (the file's ``islands`` object)."""
    source: dict[str, Any] = field(default_factory=dict)
    """The document it was parsed from (recorded in the tree)."""

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], max_rows: int = MAX_N) -> Flow:
        """Parse and validate a flow document: its size, every step, the graph, the scorers and the budget.

        ``max_rows``: rows one engine call may take (a step's ``n``, a strategy's rows); a
        server passes its ``max_batch_rows``. Linear in the document's size.
        """
        if not isinstance(data, dict):
            raise ParameterError("flow", f"a flow must be an object, got {type(data).__name__}")
        check_nesting(data)
        extra = sorted(str(k) for k in data if k not in _TOP_KEYS)  # YAML keys may be numbers
        if extra:
            raise ParameterError(
                extra[0] or "flow", f"unknown flow field {extra[0]!r}; known: {', '.join(sorted(_TOP_KEYS))}"
            )
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise ParameterError("params", "flow params must be an object of sampling fields")
        scorers = data.get("scorers") or {}
        if not isinstance(scorers, dict):
            raise ParameterError("scorers", "flow scorers must be an object {name: spec}")
        if not isinstance(data.get("layout", {}), dict):
            raise ParameterError("layout", "flow layout must be an object {step id: [x, y]}")
        _check_prompt(data.get("prompt"))
        if data.get("seed") is not None:
            check_int("seed", data["seed"], 0, 2**63 - 1)
        if data.get("model") is not None and not isinstance(data["model"], str):
            raise ParameterError("model", f"model must be a name, got {data['model']!r}")
        steps = _parse_steps(data.get("steps"), "steps", max_rows=max_rows)
        _runs(steps)
        flow = cls(
            steps=steps,
            name=str(data.get("name", "flow")),
            description=str(data.get("description", "")),
            prompt=data.get("prompt"),
            model=data.get("model"),
            seed=data.get("seed"),
            budget=Budget.parse(data["budget"]) if data.get("budget") is not None else None,
            params=SamplingParams.from_dict(params),
            scorer=data.get("scorer", "judge"),
            scorers=dict(scorers),
            raw=bool(data.get("raw", False)),
            islands=_islands(data["islands"]) if data.get("islands") is not None else None,
            source=data,
        )
        # Build every scorer now so that a typo fails before any token is generated.
        make_scorer(flow.scorer)
        for spec in flow.scorers.values():
            make_scorer(spec)
        for top in flow.steps:
            for step in flow._all_steps([top]):
                if step.kind == "score" and "scorer" in step.args:
                    flow._step_scorer(step, top)
        flow.graph()
        if flow.budget is not None:
            flow.check_budget(flow.budget)
        return flow

    @classmethod
    def loads(cls, text: str, fmt: str | None = None, max_rows: int = MAX_N) -> Flow:
        """Parse a JSON or YAML document (``fmt`` 'json' / 'yaml'; default: try JSON, then YAML)."""
        return cls.from_dict(parse_document(text, fmt), max_rows)

    @classmethod
    def load(cls, path: str | Path) -> Flow:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ParameterError("flow", f"cannot read flow file {path}: {exc}") from exc
        fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix.lower())
        return cls.loads(text, fmt)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.source)

    def graph(self) -> Graph:
        """The steps bound into a graph (raises :class:`FlowError` for bad reads and cycles)."""
        return build_graph(self.steps)

    @staticmethod
    def _all_steps(steps: list[Step]) -> list[Step]:
        out = []
        for s in steps:
            out.append(s)
            out += Flow._all_steps(s.steps)
        return out

    def _scorer(self, spec: Any) -> Scorer:
        if isinstance(spec, str) and spec in self.scorers:
            return make_scorer(self.scorers[spec])
        return make_scorer(spec)

    def _step_scorer(self, step: Step, node: Step) -> Scorer:
        """A score step's scorer; a name that is neither a named scorer nor a spec names the step."""
        spec = step.args["scorer"]
        try:
            return self._scorer(spec)
        except ParameterError as exc:
            named = ", ".join(sorted(self.scorers)) or "none"
            raise FlowError(
                f"{step.where}.scorer",
                f"{step.where}.scorer: {spec!r} is neither one of the flow's scorers ({named}) "
                f"nor a scorer spec ({exc})",
                node.id,
            ) from exc

    # -- planning ----------------------------------------------------------------------------------
    def plan(self) -> list[dict[str, Any]]:
        """What each step may spend, in running order: rows and tokens at least and at most.

        At least: every planned row draws one token and every judged candidate costs one
        (the ledger runs a row only if a token of it fits). At most: every row runs to its
        ``max_tokens`` and every judge call to its own. Steps whose size depends on what the
        budget buys (``generate`` without ``n``, ``strategy``) count 0 at least and are left
        out of the most (``None``), as are the steps that read their pools.
        """
        graph = self.graph()
        low: list[int] = [0] * len(self.steps)
        high: list[int | None] = [0] * len(self.steps)
        out = []
        for i in graph.order:
            step = self.steps[i]
            ins = [low[j] for j in graph.sources[i]]
            his = [high[j] for j in graph.sources[i]]
            # a union is at least as big as its biggest part and at most their sum
            lo_in = max(ins, default=0)
            hi_in = None if any(h is None for h in his) else sum(his)  # type: ignore[misc]
            lo = self._cost(step, lo_in, least=True)
            hi = self._cost(step, hi_in, least=False)
            low[i], high[i] = lo[2], hi[2]
            out.append({"id": step.id, "where": step.where, "rows": lo[0], "min_tokens": lo[1], "max_tokens": hi[1]})
        return out

    def _cost(self, step: Step, pool: int | None, least: bool) -> tuple[int, int | None, int | None]:
        """(rows, tokens, output size) of one step on ``pool`` candidates; None = unknown (at most only)."""
        a, kind = step.args, step.kind
        keep = bool(a.get("keep", kind in ("extend", "improve", "synthesize")))
        per_row = 1 if least else a.get("max_tokens") or self.params.max_tokens
        rows: int | None
        if kind == "generate":
            rows = a.get("n")
            if rows is None and least:
                return 0, 0, pool if keep else 0
        elif kind in ("extend", "improve"):
            rows = None if pool is None else pool * a["n"]
        elif kind == "synthesize":
            rows = None if pool is None else (a.get("n", 1) if pool else 0)
        elif kind == "score":
            scorer = self._scorer(a["scorer"]) if "scorer" in a else self._scorer(self.scorer)
            cost = min(1, scorer.cost_per_item) if least else scorer.cost_per_item
            return 0, None if pool is None else pool * cost, pool
        elif kind == "select":
            return 0, 0, None if pool is None else min(a["k"], pool)
        elif kind == "merge":
            return 0, 0, pool
        elif kind == "strategy":
            return (0, 0, 0) if least else (0, None, None)
        else:  # repeat: its chain, ``times`` times
            total_rows, tokens, size = 0, 0, pool
            for _ in range(a["times"]):
                for inner in step.steps:
                    r, t, size = self._cost(inner, size, least)
                    total_rows += r
                    tokens = None if tokens is None or t is None else tokens + t
            return total_rows, tokens, size
        if rows is None:
            return 0, None, None
        size = None if keep and pool is None else rows + (pool or 0 if keep else 0)
        return rows, rows * per_row, size

    def check_budget(self, budget: Any) -> list[dict[str, Any]]:
        """Raise :class:`FlowError` if ``budget`` cannot cover the planned steps; returns warnings.

        It cannot when the least the steps may spend (:meth:`plan`) is more than it; the
        error names the first step that does not fit. A warning names the first step by
        which the most they may spend passes it (the ledger then clips later calls).
        """
        tokens = Budget.parse(budget).tokens
        least, most, warned = 0, 0, False
        warnings = []
        for row in self.plan():
            least += row["min_tokens"]
            if least > tokens:
                raise FlowError(
                    "budget",
                    f"budget: {tokens} tokens cannot cover the planned steps; by {row['where']} "
                    f"(id {row['id']!r}) they need at least {least} (one token per row, {row['rows']} rows "
                    "in this step); raise budget or lower n",
                    row["id"],
                )
            if row["max_tokens"] is None or most is None:
                most = None
                continue
            most += row["max_tokens"]
            if most > tokens and not warned:
                warned = True
                warnings.append(
                    {
                        "node": row["id"],
                        "message": f"by {row['where']} the steps may spend up to {most} tokens, over the "
                        f"budget of {tokens}: later calls get shorter rows or are skipped",
                    }
                )
        return warnings

    # -- running ---------------------------------------------------------------------------------
    def run(
        self,
        engine: Engine | None = None,
        prompt: Any = None,
        *,
        seed: int | None = None,
        budget: Any = None,
        progress: bool = False,
        islands: Any = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> Tree:
        """Run the flow (arguments override the file's) and return the tree.

        ``islands`` (:class:`sazanami.islands.Islands`): tools and/or a grammar for every
        candidate, instead of the file's ``islands``. ``on_event`` gets each step's progress
        events (:data:`EVENTS`); ``progress=True`` prints them as lines on stderr. ``check`` is
        called before every step (a repeat's too) and may raise to stop the run: a server
        stops a flow there when its client has gone or its time is up, whether or not the
        step calls the model.
        """
        prompt = prompt if prompt is not None else self.prompt
        if prompt is None:
            raise ParameterError("prompt", "the flow has no prompt; pass one")
        _check_prompt(prompt)
        graph = self.graph()
        if engine is None:
            from sazanami.models import DEFAULT_MODEL, load

            engine = Engine(load(self.model or DEFAULT_MODEL))
        ctx = SearchContext(
            engine,
            prompt,
            strategy=f"flow:{self.name}",
            params=self.params,
            scorer=self._scorer(self.scorer),
            budget=budget if budget is not None else self.budget,
            seed=seed if seed is not None else self.seed,
            raw=self.raw,
            config={"flow": self.source},
            islands=islands if islands is not None else self.islands,
        )
        sinks = [f for f in (on_event, print_event if progress else None) if f is not None]
        runner = _Runner(self, ctx, lambda ev: [f(ev) for f in sinks], check)
        try:
            runner.run(graph)
        finally:
            tree = ctx.finish()
        return tree


EVENTS = ("started", "progress", "finished", "skipped")
"""Progress events of a running flow, each a dict with ``event`` (one of these), ``node`` (the
step's id), ``kind``, ``index`` (in ``steps``, of ``of``), ``spent`` and ``budget`` (the flow's tokens so
far and in all); ``progress`` and ``finished`` add ``candidates`` (the step's pool so far),
``new`` (candidates it made), ``tokens`` (it spent), ``best`` (best score in its pool or None)
and ``pool`` (its candidates: id, kind, score, text, spans)."""


def print_event(event: dict[str, Any], file: Any = None) -> None:
    """One plain line on stderr per finished or skipped step (the CLI's progress display)."""
    file = file if file is not None else sys.stderr
    head = f"[{event['index'] + 1}/{event['of']}] {event['node']:<14} {event['kind']:<10}"
    if event["event"] == "started":
        print(f"{head} …", file=file, flush=True)
    elif event["event"] == "skipped":
        print(f"{head} skipped: the budget is spent", file=file, flush=True)
    else:
        best = "—" if event["best"] is None else f"{event['best']:.3g}"
        print(
            f"{head} {event['candidates']:>3} candidates (+{event['new']})  {event['tokens']:>5} tok  "
            f"best {best}  [{event['spent']}/{event['budget']}]" + ("" if event["event"] == "finished" else " …"),
            file=file,
            flush=True,
        )


def step_fields() -> dict[str, Any]:
    """Step kinds and their own fields, which kinds take sampling fields, and those fields."""
    return {
        "kinds": {k: sorted(v - _PARAM_FIELDS) for k, v in STEP_KINDS.items()},
        "sampling": {k: bool(v & _PARAM_FIELDS) for k, v in STEP_KINDS.items()},
        "sampling_fields": sorted(_PARAM_FIELDS),
        "graph_fields": list(GRAPH_FIELDS),
    }


def parse_document(text: str, fmt: str | None = None) -> dict[str, Any]:
    """A flow document from JSON or YAML text (``fmt`` 'json' / 'yaml'; default: JSON if it looks so).

    At most :data:`MAX_DOCUMENT_CHARS` characters nested at most :data:`MAX_DOCUMENT_DEPTH`
    deep (checked while parsing: a deep text is a ``ParameterError``, never a
    ``RecursionError``); YAML anchors may be written but aliases are refused.
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ParameterError("flow", f"a flow's text must be at most {MAX_DOCUMENT_CHARS} characters, got {len(text)}")
    if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
        return loads_json(text, "flow", MAX_DOCUMENT_DEPTH)
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ParameterError("flow", "YAML flows need PyYAML: pip install pyyaml") from exc
    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader (below)
    except yaml.YAMLError as exc:
        raise ParameterError("flow", f"flow is not valid YAML: {exc}") from exc


_LOADER: Any = None


def _yaml_loader() -> Any:
    """PyYAML's SafeLoader that refuses aliases and nodes deeper than :data:`MAX_DOCUMENT_DEPTH`.

    An alias (``*name``) repeats a node without its text: twelve levels of ten aliases are
    10¹² nodes in a few hundred bytes. PyYAML composes recursively, so depth is counted here.
    """
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            depth = 0

            def compose_node(self, parent: Any, index: Any) -> Any:
                if self.check_event(yaml.AliasEvent):
                    event = self.peek_event()
                    raise ParameterError(
                        "flow",
                        f"flow YAML may not use aliases (*{event.anchor} at line {event.start_mark.line + 1}); "
                        "write the value out",
                    )
                self.depth += 1
                try:
                    if self.depth > MAX_DOCUMENT_DEPTH:
                        raise ParameterError("flow", f"flow is nested deeper than {MAX_DOCUMENT_DEPTH} levels")
                    return super().compose_node(parent, index)
                finally:
                    self.depth -= 1

        _LOADER = Loader
    return _LOADER


def _islands(spec: Any) -> Islands:
    """The flow's ``islands`` object; errors name ``islands.<field>``."""
    try:
        return Islands.from_dict(spec, where="islands.")
    except ParameterError as exc:
        param = exc.param if exc.param.startswith("islands") else f"islands.{exc.param}"
        raise ParameterError(param, str(exc)) from exc


def _check_prompt(prompt: Any, where: str = "prompt") -> None:
    """A prompt is a text or a chat: a list of {role, content} messages (None: given at run time)."""
    if prompt is None or isinstance(prompt, str):
        return
    ok = (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
        )
    )
    if not ok:
        raise ParameterError(
            where, f"{where} must be a text or a list of {{role, content}} messages, got {prompt!r:.80}"
        )


def _union(pools: list[list[Node]]) -> list[Node]:
    """The pools' candidates, each once, in order."""
    if len(pools) == 1:
        return list(pools[0])
    seen: set[int] = set()
    return [n for pool in pools for n in pool if not (n.id in seen or seen.add(n.id))]


class _Runner:
    """Executes the graph against one search context: each step maps its input pool to its output."""

    def __init__(
        self,
        flow: Flow,
        ctx: SearchContext,
        emit: Callable[[dict[str, Any]], Any],
        check: Callable[[], None] | None = None,
    ) -> None:
        self.flow = flow
        self.ctx = ctx
        self.emit = emit
        self.check = check or (lambda: None)
        self.counter = 0

    def run(self, graph: Graph) -> None:
        outputs: dict[int, list[Node]] = {}
        for i in graph.order:
            step = graph.steps[i]
            pool = _union([outputs[j] for j in graph.sources[i]]) if graph.sources[i] else []
            outputs[i] = self._node(i, step, pool)

    def _event(self, name: str, i: int, step: Step, **extra: Any) -> None:
        ledger = self.ctx.ledger
        self.emit(
            {"event": name, "node": step.id, "kind": step.kind, "index": i, "of": len(self.flow.steps),
             "spent": ledger.generated, "budget": ledger.budget.tokens, **extra}
        )  # fmt: skip

    def _report(self, name: str, i: int, step: Step, pool: list[Node], first: int, spent: int) -> None:
        scores = [n.score for n in pool if n.score is not None]
        self._event(
            name, i, step,
            candidates=len(pool),
            new=len(self.ctx.tree.nodes) - first,
            tokens=self.ctx.ledger.generated - spent,
            best=max(scores) if scores else None,
            pool=[{"id": n.id, "kind": n.kind, "score": n.score, "text": n.text, "spans": n.spans} for n in pool],
        )  # fmt: skip

    def _node(self, i: int, step: Step, pool: list[Node]) -> list[Node]:
        """One graph node, with its events; a step the spent budget cannot run passes its pool on."""
        self.check()
        if self._skip(step):
            self._event("skipped", i, step)
            return pool
        first, spent = len(self.ctx.tree.nodes), self.ctx.ledger.generated
        self.counter += 1
        self._event("started", i, step)
        self.ctx.start_round(self.counter, step.kind)
        if step.kind == "repeat":
            out = self._repeat(step, pool, lambda p: self._report("progress", i, step, p, first, spent))
        else:
            out = getattr(self, "_" + step.kind)(step, pool)
        self._report("finished", i, step, out, first, spent)
        return out

    def _skip(self, step: Step) -> bool:
        return self.ctx.ledger.exhausted and step.kind not in ("score", "select", "merge")

    def _chain(self, steps: list[Step], pool: list[Node], after: Callable[[list[Node]], None]) -> list[Node]:
        """Nested steps (a repeat's), one after the other on one pool."""
        for step in steps:
            self.check()
            if self._skip(step):
                continue
            self.counter += 1
            self.ctx.start_round(self.counter, step.kind)
            if step.kind == "repeat":
                pool = self._repeat(step, pool, after)
            else:
                pool = getattr(self, "_" + step.kind)(step, pool)
            after(pool)
        return pool

    def _params(self, args: dict[str, Any]) -> SamplingParams:
        overrides = {k: v for k, v in args.items() if k in _PARAM_FIELDS}
        return self.ctx.params.replace(**overrides) if overrides else self.ctx.params

    @staticmethod
    def _made(pool: list[Node], nodes: list[Node], keep: bool) -> list[Node]:
        return (pool if keep else []) + nodes

    def _generate(self, step: Step, pool: list[Node]) -> list[Node]:
        a, ctx = step.args, self.ctx
        params = self._params(a)
        share = int(ctx.ledger.remaining * a.get("share", 1.0))
        key = f"step{self.counter}"
        nodes = self._spend(
            lambda start, count: [ctx.fresh(start + i, params, key=key) for i in range(count)], a.get("n"), share
        )
        return self._made(pool, nodes, bool(a.get("keep", False)))

    def _room(self, limit: int | None = None) -> int:
        """Rows the budget still pays for (one token each, plus scoring): no step builds more.

        The ledger would drop the others from the end anyway; building them first would cost
        memory in proportion to ``n`` (2,000,000 candidates: +1.3 GB), not to the budget.
        """
        ledger = self.ctx.ledger
        avail = ledger.remaining if limit is None else min(ledger.remaining, max(0, limit))
        return 0 if ledger.out_of_time else avail // (1 + self.ctx.scorer.cost_per_item)

    def _extend(self, step: Step, pool: list[Node]) -> list[Node]:
        a, ctx = step.args, self.ctx
        params = self._params(a)
        specs = []
        room = self._room()
        for node in pool:
            for j in range(min(a["n"], room - len(specs))):
                rng = random.Random(ctx.seed_for("cut", self.counter, node.id, j))
                cut = rng.randrange(1, len(node.token_ids)) if len(node.token_ids) > 1 else 0
                specs.append(ctx.continuation(node, cut, self.counter * 1000 + j, params))
        return self._made(pool, ctx.generate(specs), bool(a.get("keep", True)))

    def _improve(self, step: Step, pool: list[Node]) -> list[Node]:
        a, ctx = step.args, self.ctx
        params = self._params(a)
        saved = ctx.improver
        if "template" in a:
            ctx.improver = Improver(a["template"])
        try:
            pairs = [(node, j) for node in pool[: self._room()] for j in range(a["n"])][: self._room()]
            specs = [ctx.improvement(node, self.counter * 1000 + j, params) for node, j in pairs]
            nodes = ctx.generate(specs)
        finally:
            ctx.improver = saved
        return self._made(pool, nodes, bool(a.get("keep", True)))

    def _score(self, step: Step, pool: list[Node]) -> list[Node]:
        spec = step.args.get("scorer")
        scorer = self.flow._scorer(spec) if spec is not None else None
        self.ctx.score(pool, scorer)
        return pool

    def _select(self, step: Step, pool: list[Node]) -> list[Node]:
        unscored = [n for n in pool if n.score is None and not n.scores]
        if unscored:
            self.ctx.score(unscored)
        pool = make_selector(dict(step.args)).select(pool)
        for n in pool:
            n.meta.setdefault("selected_at", []).append(self.counter)
        return pool

    def _merge(self, step: Step, pool: list[Node]) -> list[Node]:
        return pool  # the union of the inputs is made before the step runs

    def _synthesize(self, step: Step, pool: list[Node]) -> list[Node]:
        a, ctx = step.args, self.ctx
        if not pool:
            return pool
        synth = Synthesizer(**{k: a[k] for k in ("n", "template", "max_tokens", "temperature") if k in a})
        winners = rank(pool)[: a.get("k", len(pool))]
        nodes = ctx.generate(
            [ctx.synthesis(winners, synth, self.counter * 1000 + i) for i in range(synth.n)], kind="synthesis"
        )
        return self._made(pool, nodes, bool(a.get("keep", True)))

    def _strategy(self, step: Step, pool: list[Node]) -> list[Node]:
        a, ctx = step.args, self.ctx
        name = strategy_name(a["name"])
        options = check_strategy_options(name, {k: v for k, v in a.items() if k not in ("name", "share")})
        before = len(ctx.tree.nodes)
        with ctx.ledger.limit(int(ctx.ledger.remaining * a.get("share", 1.0))):
            STRATEGIES[name](ctx, **options)
        return [n for n in ctx.tree.nodes[before:] if not n.partial and not n.pruned]

    def _repeat(self, step: Step, pool: list[Node], after: Callable[[list[Node]], None]) -> list[Node]:
        for _ in range(step.args["times"]):
            pool = self._chain(step.steps, pool, after)
        return pool

    def _spend(self, make: Any, n: int | None, share: int) -> list[Node]:
        """Generate without scoring (a score step scores): n rows, or waves filling ``share``."""
        if n is not None:
            return self.ctx.generate(make(0, min(n, self._room(share))), limit=share)
        return waves(self.ctx, make, None, share, score=False)
