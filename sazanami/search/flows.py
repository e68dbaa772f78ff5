"""Flows: a search written down as data (JSON or YAML), so it can be saved, shared and rerun.

A flow is a list of steps over a *pool* of candidates::

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

Steps:

- ``generate`` {n, share, keep, <sampling fields>} — fresh samples (n omitted: as many as
  ``share`` (0–1, default 1) of the remaining budget pays for); the pool becomes them (plus
  the old pool with ``keep: true``);
- ``extend`` {n, keep, <sampling fields>} — per pool node, n continuations from a random cut
  of its tokens (search over paths); keep defaults to true;
- ``improve`` {n, keep, <sampling fields>} — per pool node, n improved drafts (with the
  scorer's feedback); keep defaults to true;
- ``score`` {scorer} — score the pool (a name from ``scorers``, a spec, default the flow's);
- ``select`` {k, method: top-k | mmr, diversity} — keep the winners (unscored nodes are
  scored with the default scorer first);
- ``synthesize`` {n, k, template, max_tokens, temperature, keep} — merge the best k of the
  pool (default all) into n new candidates; keep defaults to true;
- ``strategy`` {name, share, <options>} — run a whole strategy with ``share`` of what
  remains; the pool becomes its finished candidates;
- ``repeat`` {times, steps} — run the nested steps ``times`` times.

Every step spends from the flow's one budget; model calls are clipped so it is never
exceeded. ``sazanami flow run FILE`` runs a flow; :meth:`Flow.run` does the same from Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sazanami.engine import Engine
from sazanami.errors import ParameterError, check_int, check_range
from sazanami.islands.runtime import Islands
from sazanami.params import SamplingParams
from sazanami.search.budget import Budget
from sazanami.search.context import SearchContext
from sazanami.search.scorer_specs import make_scorer
from sazanami.search.scorers import Scorer
from sazanami.search.selectors import make_selector, rank
from sazanami.search.strategies import STRATEGIES, _check_options, _strategy_name, _waves
from sazanami.search.synthesis import Improver, Synthesizer
from sazanami.search.tree import Node, Tree

__all__ = ["STEP_KINDS", "Flow", "Step"]

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
}
_TOP_KEYS = {
    "name", "description", "prompt", "model", "seed", "budget", "params", "scorer", "scorers", "steps", "raw",
    "islands",
}  # fmt: skip


@dataclass
class Step:
    """One parsed step: its kind, its arguments, and where it sits (for error messages)."""

    kind: str
    args: dict[str, Any]
    where: str
    steps: list[Step] = field(default_factory=list)
    """Nested steps (repeat)."""


def _parse_steps(raw: Any, where: str) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        raise ParameterError(where, f"{where} must be a non-empty list of steps")
    out = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise ParameterError(here, f"{here} must be an object with one key (the step kind), got {item!r}")
        kind, args = next(iter(item.items()))
        if kind not in STEP_KINDS:
            raise ParameterError(here, f"{here}: unknown step {kind!r}; known: {', '.join(STEP_KINDS)}")
        args = {} if args is None else args
        if not isinstance(args, dict):
            raise ParameterError(here, f"{here}.{kind} must be an object, got {args!r}")
        args = dict(args)
        if kind != "strategy":
            extra = sorted(set(args) - STEP_KINDS[kind])
            if extra:
                known = ", ".join(sorted(STEP_KINDS[kind] - _PARAM_FIELDS)) + (
                    " and sampling fields" if STEP_KINDS[kind] & _PARAM_FIELDS else ""
                )
                raise ParameterError(
                    f"{here}.{kind}.{extra[0]}", f"{here}.{kind}: unknown field {extra[0]!r}; known: {known}"
                )
        step = Step(kind, args, f"{here}.{kind}")
        _validate(step)
        if kind == "repeat":
            step.steps = _parse_steps(args.get("steps"), f"{here}.repeat.steps")
        out.append(step)
    return out


def _validate(step: Step) -> None:
    a, w = step.args, step.where

    def positive_int(key: str, required: bool = False) -> None:
        if key not in a:
            if required:
                raise ParameterError(f"{w}.{key}", f"{w} needs {key!r}")
            return
        check_int(f"{w}.{key}", a[key], 1)

    def share() -> None:
        if "share" in a:
            check_range(f"{w}.share", a["share"], 0, 1, low_open=True)

    if step.kind in ("generate", "extend", "improve", "synthesize"):
        positive_int("n", required=step.kind in ("extend", "improve"))
        overrides = {k: v for k, v in a.items() if k in _PARAM_FIELDS}
        if overrides:
            SamplingParams(**overrides)  # validates, raising ParameterError naming the field
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
        name = _strategy_name(a["name"])
        _check_options(name, STRATEGIES[name], {k: v for k, v in a.items() if k not in ("name", "share")})


@dataclass
class Flow:
    """A declarative search: defaults plus a list of steps (see the module docstring)."""

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
    def from_dict(cls, data: dict[str, Any]) -> Flow:
        if not isinstance(data, dict):
            raise ParameterError("flow", f"a flow must be an object, got {type(data).__name__}")
        extra = sorted(set(data) - _TOP_KEYS)
        if extra:
            raise ParameterError(extra[0], f"unknown flow field {extra[0]!r}; known: {', '.join(sorted(_TOP_KEYS))}")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise ParameterError("params", "flow params must be an object of sampling fields")
        scorers = data.get("scorers") or {}
        if not isinstance(scorers, dict):
            raise ParameterError("scorers", "flow scorers must be an object {name: spec}")
        flow = cls(
            steps=_parse_steps(data.get("steps"), "steps"),
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
            islands=Islands.from_dict(data["islands"], where="islands.") if data.get("islands") is not None else None,
            source=data,
        )
        # Build every scorer now so that a typo fails before any token is generated.
        make_scorer(flow.scorer)
        for spec in flow.scorers.values():
            make_scorer(spec)
        for step in flow._all_steps(flow.steps):
            if step.kind == "score" and "scorer" in step.args:
                flow._scorer(step.args["scorer"])
        return flow

    @classmethod
    def loads(cls, text: str, fmt: str | None = None) -> Flow:
        """Parse a JSON or YAML document (``fmt`` 'json' / 'yaml'; default: try JSON, then YAML)."""
        if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ParameterError("flow", f"flow is not valid JSON: {exc}") from exc
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ParameterError("flow", "YAML flows need PyYAML: pip install pyyaml") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParameterError("flow", f"flow is not valid YAML: {exc}") from exc
        return cls.from_dict(data)

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
    ) -> Tree:
        """Run the flow (arguments override the file's) and return the tree.

        ``islands`` (:class:`sazanami.islands.Islands`): tools and/or a grammar for every
        candidate, instead of the file's ``islands``.
        """
        prompt = prompt if prompt is not None else self.prompt
        if prompt is None:
            raise ParameterError("prompt", "the flow has no prompt; pass one")
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
            progress=progress,
            config={"flow": self.source},
            islands=islands if islands is not None else self.islands,
        )
        runner = _Runner(self, ctx)
        try:
            runner.run(self.steps)
        finally:
            tree = ctx.finish()
        return tree


class _Runner:
    """Executes steps against one search context, carrying the pool between them."""

    def __init__(self, flow: Flow, ctx: SearchContext) -> None:
        self.flow = flow
        self.ctx = ctx
        self.pool: list[Node] = []
        self.counter = 0

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            if self.ctx.ledger.exhausted and step.kind not in ("score", "select"):
                continue
            self.counter += 1
            self.ctx.start_round(self.counter, step.kind)
            getattr(self, "_" + step.kind)(step)

    def _params(self, args: dict[str, Any]) -> SamplingParams:
        overrides = {k: v for k, v in args.items() if k in _PARAM_FIELDS}
        return self.ctx.params.replace(**overrides) if overrides else self.ctx.params

    def _made(self, nodes: list[Node], keep: bool) -> None:
        self.pool = (self.pool if keep else []) + nodes

    def _generate(self, step: Step) -> None:
        a, ctx = step.args, self.ctx
        params = self._params(a)
        share = int(ctx.ledger.remaining * a.get("share", 1.0))
        key = f"step{self.counter}"
        nodes = self._spend(
            lambda start, count: [ctx.fresh(start + i, params, key=key) for i in range(count)], a.get("n"), share
        )
        self._made(nodes, bool(a.get("keep", False)))

    def _extend(self, step: Step) -> None:
        import random

        a, ctx = step.args, self.ctx
        params = self._params(a)
        specs = []
        for node in self.pool:
            for j in range(a["n"]):
                rng = random.Random(ctx.seed_for("cut", self.counter, node.id, j))
                cut = rng.randrange(1, len(node.token_ids)) if len(node.token_ids) > 1 else 0
                specs.append(ctx.continuation(node, cut, self.counter * 1000 + j, params))
        self._made(ctx.generate(specs), bool(a.get("keep", True)))

    def _improve(self, step: Step) -> None:
        a, ctx = step.args, self.ctx
        params = self._params(a)
        saved = ctx.improver
        if "template" in a:
            ctx.improver = Improver(a["template"])
        try:
            specs = [
                ctx.improvement(node, self.counter * 1000 + j, params) for node in self.pool for j in range(a["n"])
            ]
            nodes = ctx.generate(specs)
        finally:
            ctx.improver = saved
        self._made(nodes, bool(a.get("keep", True)))

    def _score(self, step: Step) -> None:
        spec = step.args.get("scorer")
        scorer = self.flow._scorer(spec) if spec is not None else None
        self.ctx.score(self.pool, scorer)

    def _select(self, step: Step) -> None:
        unscored = [n for n in self.pool if n.score is None and not n.scores]
        if unscored:
            self.ctx.score(unscored)
        self.pool = make_selector(dict(step.args)).select(self.pool)
        for n in self.pool:
            n.meta.setdefault("selected_at", []).append(self.counter)

    def _synthesize(self, step: Step) -> None:
        a, ctx = step.args, self.ctx
        if not self.pool:
            return
        synth = Synthesizer(**{k: a[k] for k in ("n", "template", "max_tokens", "temperature") if k in a})
        winners = rank(self.pool)[: a.get("k", len(self.pool))]
        nodes = ctx.generate(
            [ctx.synthesis(winners, synth, self.counter * 1000 + i) for i in range(synth.n)], kind="synthesis"
        )
        self._made(nodes, bool(a.get("keep", True)))

    def _strategy(self, step: Step) -> None:
        a, ctx = step.args, self.ctx
        name = _strategy_name(a["name"])
        options = {k: v for k, v in a.items() if k not in ("name", "share")}
        before = len(ctx.tree.nodes)
        with ctx.ledger.limit(int(ctx.ledger.remaining * a.get("share", 1.0))):
            STRATEGIES[name](ctx, **options)
        self.pool = [n for n in ctx.tree.nodes[before:] if not n.partial and not n.pruned]

    def _repeat(self, step: Step) -> None:
        for _ in range(step.args["times"]):
            self.run(step.steps)

    def _spend(self, make: Any, n: int | None, share: int) -> list[Node]:
        """Generate without scoring (a score step scores): n rows, or waves filling ``share``."""
        if n is not None:
            return self.ctx.generate(make(0, n), limit=share)
        return _waves(self.ctx, make, None, share, score=False)
