"""The running state of one search: engine, prompt, scorer, ledger, tree, progress bar.

Strategies and flows are written with the same few moves, all methods of
:class:`SearchContext`:

- build rows (:class:`~sazanami.sampling.rows.RowRequest`, the engine's own row type; the node each
  becomes rides in its ``tag`` as an :class:`Origin`) — :meth:`fresh` (a new sample of the
  prompt), :meth:`continuation` (regenerate the suffix of a node from a cut point),
  :meth:`improvement` (ask the model to improve a draft), :meth:`synthesis` (merge several
  winners);
- :meth:`generate` the rows in one batched engine call, after the ledger has clipped them
  to the budget; each completion becomes a node of the tree (:meth:`Node.from_completion`);
- :meth:`score` nodes; :meth:`pool` lists the finished candidates;
- :meth:`finish` picks the winner and returns the :class:`~sazanami.search.tree.Tree`.

Every seed is derived from the search seed (:meth:`seed_for`), so the same seed gives the
same tree.

``on_node`` watches the tree grow: it is called with a :class:`NodeEvent` for each node as it
is added (in the tree's order, the root first) and again when it is scored. It runs on the
search's thread, so it should only hand the event on (the server puts it in a queue); an
exception in it is logged once and does not stop the search.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sazanami.engine.loop import Engine, Prompt
from sazanami.errors import ParameterError, check_int
from sazanami.islands.runtime import Islands
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.rows import Completion, RowRequest, Span, find_stop, injected_tokens
from sazanami.search.budget import Ledger, search_budget
from sazanami.search.scorer_specs import make_scorer
from sazanami.search.scorers import Score, Scorer
from sazanami.search.selectors import rank
from sazanami.search.synthesis import Improver, Synthesizer
from sazanami.search.tree import Node, Tree
from sazanami.seeds import derive_seed, seed_or_fresh

__all__ = ["NodeEvent", "Origin", "SearchContext"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeEvent:
    """What a search's ``on_node`` hook is called with (see the module docstring)."""

    stage: str
    """``added`` (the node just joined the tree) or ``scored`` (its score was just set)."""
    node: Node
    generated_tokens: int
    """Tokens the search has generated so far (candidates and judge calls)."""
    budget_tokens: int
    """The search's budget in generated tokens."""


@dataclass
class Origin:
    """Where a search row's completion goes in the tree (a :class:`RowRequest`'s ``tag``)."""

    parent: Node
    kind: str
    round: int
    sources: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def prompt_text(prompt: Prompt) -> str:
    """The task as text for rewriting templates (the last user message of a chat)."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return prompt


class SearchContext:
    """State shared by the moves of one search (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        prompt: Prompt,
        *,
        strategy: str,
        params: SamplingParams | None = None,
        scorer: Any = "judge",
        budget: Any = None,
        seed: int | None = None,
        raw: bool = False,
        progress: bool = False,
        improver: Improver | None = None,
        config: dict[str, Any] | None = None,
        islands: Islands | None = None,
        on_node: Callable[[NodeEvent], Any] | None = None,
    ) -> None:
        self.engine = engine
        if on_node is not None and not callable(on_node):
            raise ParameterError("on_node", f"on_node must be callable, got {type(on_node).__name__}")
        self.on_node = on_node
        self._hook_failed = False
        if islands is not None and not isinstance(islands, Islands):
            raise ParameterError("islands", f"islands must be an Islands, got {type(islands).__name__}")
        self.islands = islands
        """Tools and/or a grammar for every candidate row (not for judge calls)."""
        self.prompt = prompt
        self.raw = raw
        self.params = params or SamplingParams()
        if not isinstance(self.params, SamplingParams):
            raise ParameterError("params", f"params must be SamplingParams, got {type(self.params).__name__}")
        self.scorer: Scorer = make_scorer(scorer)
        self.budget = search_budget(budget, self.params.max_tokens)
        seed = seed_or_fresh(seed, self.params.seed)
        check_int("seed", seed, 0, 2**63 - 1)
        self.seed = seed
        self.improver = improver or Improver()
        self.task = prompt_text(prompt)
        self.prompt_ids = self.encode(prompt, raw)
        self.ledger = Ledger(self.budget)
        self.cache: dict[Any, Any] = {}
        """Per-search memo for scorers (a text is judged once)."""
        self.tree = Tree(
            prompt=prompt,
            strategy=strategy,
            seed=seed,
            config={
                "strategy": strategy,
                "scorer": self.scorer.spec(),
                "budget": self.budget.to_dict(),
                "params": _params_dict(self.params),
                **({"islands": islands.to_dict()} if islands is not None else {}),
                **(config or {}),
            },
        )
        self.root = self.add(Node(0, None, text=self.task, kind="root"))
        self.round = 0
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.budget.tokens, unit="tok", file=sys.stderr, desc=f"{strategy} r0", leave=False)

    def encode(self, prompt: Prompt, raw: bool = False) -> list[int]:
        """Token ids of a candidate's prompt, with the tools' description when there are tools."""
        if self.islands is not None:
            prompt = self.islands.apply_to_prompt(prompt, raw)
        return self.engine.encode(prompt, raw)

    # -- the tree and its watcher --------------------------------------------------------------
    def add(self, node: Node) -> Node:
        """Add ``node`` to the tree (it gets its id) and tell ``on_node``."""
        self.tree.add(node)
        self._tell("added", node)
        return node

    def _tell(self, stage: str, node: Node) -> None:
        if self.on_node is None:
            return
        try:
            self.on_node(NodeEvent(stage, node, self.ledger.generated, self.budget.tokens))
        except Exception:  # noqa: BLE001 - a watcher's failure must not end the search
            if not self._hook_failed:
                self._hook_failed = True
                log.warning("the search's on_node hook raised (logged once; the search goes on)", exc_info=True)

    # -- seeds and rounds ----------------------------------------------------------------------
    def seed_for(self, *keys: object) -> int:
        return derive_seed(self.seed, *keys)

    def start_round(self, r: int, label: str = "") -> None:
        self.round = r
        if self._bar is not None:
            self._bar.set_description(f"{self.tree.strategy} r{r}{(' ' + label) if label else ''}")

    # -- specs ----------------------------------------------------------------------------------
    def fresh(
        self, index: int, params: SamplingParams | None = None, key: str = "sample", noise: Any = None
    ) -> RowRequest:
        """A new sample of the prompt; its seed is derived from (key, index)."""
        return self.row(
            self.root, self.prompt_ids, params or self.params, self.seed_for(key, index), "sample", noise=noise
        )

    def row(
        self, parent: Node, prompt_ids: list[int], params: SamplingParams, seed: int, kind: str, **fields: Any
    ) -> RowRequest:
        """A row whose completion becomes a ``kind`` child of ``parent`` in this round.

        ``fields``: more :class:`RowRequest` fields (noise, prefix …), or ``sources``/``meta``
        of its :class:`Origin`.
        """
        origin = Origin(parent, kind, self.round, fields.pop("sources", []), fields.pop("meta", {}))
        if params.beams is not None:  # candidates are sampled; only the beam strategy reads params.beams
            params = params.replace(beams=None)
        return RowRequest(prompt_ids, params, seed, tag=origin, **fields)

    def continuation(
        self, node: Node, cut: int, index: int, params: SamplingParams | None = None, kind: str = "continue"
    ) -> RowRequest:
        """Keep ``node``'s first ``cut`` output tokens and regenerate the rest with a fresh seed.

        A cut inside an injected tool result moves to the result's end; the branch keeps the
        calls of its prefix (see :meth:`Islands.continuing`).
        """
        params = params or self.params
        cut = max(0, min(cut, len(node.token_ids)))
        for sp in node.spans:
            if sp["token_start"] < cut < sp["token_end"]:
                cut = sp["token_end"]
        prefix = node.token_ids[:cut]
        spans = [sp for sp in node.spans if sp["token_end"] <= cut]
        islands, extra, extra_spans = None, [], []
        if self.islands is not None:
            islands, extra, extra_spans = self.islands.continuing(self.engine.tokenizer, prefix, spans)
        left = self.params.max_tokens - (cut - injected_tokens(spans))
        return self.row(
            node,
            self.prompt_ids + prefix + extra,
            params.replace(max_tokens=max(1, min(params.max_tokens, left))),
            self.seed_for(kind, node.id, cut, index),
            kind,
            prefix_ids=prefix + extra,
            prefix_logprobs=node.logprobs[:cut] + [0.0] * len(extra),
            meta={"cut": cut},
            prefix_spans=spans + extra_spans,
            islands=islands,
        )

    def improvement(self, node: Node, index: int, params: SamplingParams | None = None) -> RowRequest:
        """Ask the model to improve ``node`` (with the scorer's reason as feedback)."""
        text = self.improver.prompt(self.task, node.text, node.reason)
        return self.row(
            node, self.encode(text), params or self.params, self.seed_for("improve", node.id, index), "improve"
        )

    def synthesis(
        self, nodes: list[Node], synth: Synthesizer, index: int, params: SamplingParams | None = None
    ) -> RowRequest:
        """Merge ``nodes`` (best first); the node's parent is the best, ``sources`` all of them."""
        params = params or self.params
        changes: dict[str, Any] = {}
        if synth.max_tokens is not None:
            changes["max_tokens"] = synth.max_tokens
        if synth.temperature is not None:
            changes["temperature"] = synth.temperature
        text = synth.prompt(self.task, [n.text for n in nodes])
        return self.row(
            nodes[0],
            self.encode(text),
            params.replace(**changes) if changes else params,
            self.seed_for("synthesis", *[n.id for n in nodes], index),
            "synthesis",
            sources=[n.id for n in nodes],
        )

    # -- generation -------------------------------------------------------------------------------
    def generate(
        self, specs: list[RowRequest], reserve: int | None = None, limit: int | None = None, kind: str = "generate"
    ) -> list[Node]:
        """Run rows ``specs`` in one engine call, clipped to the budget; returns their nodes in order.

        ``reserve`` (default: the scorer's cost per item) is kept free per row for scoring;
        ``limit`` caps the tokens this call may use below what remains. Rows that do not
        fit are dropped from the end; an empty list means the budget (or time) is spent.
        """
        reserve = self.scorer.cost_per_item if reserve is None else reserve
        allowed = self.ledger.allot([s.params.max_tokens for s in specs], reserve, limit=limit)
        if not allowed:
            return []
        specs = specs[: len(allowed)]
        rows = []
        for i, (s, m) in enumerate(zip(specs, allowed, strict=False)):
            params = s.params if s.params.max_tokens == m else s.params.replace(max_tokens=m)
            islands = s.islands if s.islands is not None else self.islands
            lead = (
                self.engine.tokenizer.decode(s.prefix_ids) if s.prefix_ids and params.stop else ""
            )  # stops may begin in it
            rows.append(dataclasses.replace(s, params=params, index=i, islands=islands, lead=lead))
        self.ledger.check(sum(r.params.max_tokens for r in rows))
        completions = self.engine.run(rows)
        # Injected tool results are run through the model like prompt tokens; they are not drawn.
        computed, reused = _prefill_tokens(rows, completions)
        self._charge(kind, sum(c.drawn for c in completions), computed + sum(c.injected for c in completions), reused)
        nodes = []
        for s, row, c in zip(specs, rows, completions, strict=False):
            o: Origin = row.tag
            node = Node.from_completion(
                self._whole(row, c),
                o.parent.id,
                o.kind,
                o.round,
                row.params,
                tokens=c.drawn,
                noise=[(int(a), float(b)) for a, b in row.noise] if row.noise is not None else None,
                sources=list(o.sources),
                meta=dict(o.meta),
            )
            if row.params.max_tokens < s.params.max_tokens:
                node.meta["clipped_to"] = row.params.max_tokens
            nodes.append(self.add(node))
        return nodes

    def _whole(self, row: RowRequest, c: Completion) -> Completion:
        """``c`` with the output its row continued in front (tokens, log-probs, text, spans)."""
        if not row.prefix_ids:
            return c
        ids = row.prefix_ids + c.token_ids
        text = self.engine.tokenizer.decode(ids)  # decoded whole: a character may straddle the cut
        if c.finish_reason == "stop" and row.params.stop:
            cut = find_stop(text, row.params.stop, after=len(row.lead))  # the stop may begin in the prefix
            text = text[:cut] if cut is not None else text
        spans = list(row.prefix_spans) + _shifted(c.spans, len(text) - len(c.text), len(row.prefix_ids))
        return dataclasses.replace(c, text=text, token_ids=ids, logprobs=row.prefix_logprobs + c.logprobs, spans=spans)

    def complete(
        self, prompts: list[str], max_tokens: int, kind: str, engine: Engine | None = None, prefix: str = ""
    ) -> list[str | None]:
        """Greedy replies to chat ``prompts`` (judge calls), charged to the budget.

        ``prefix`` is written as the start of each reply (the model continues it).

        Prompts the budget cannot pay for get None (their items stay unscored).
        """
        engine = engine or self.engine
        allowed = self.ledger.allot([max_tokens] * len(prompts))
        replies: list[str | None] = [None] * len(prompts)
        if not allowed:
            return replies
        base = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
        extra = engine.tokenizer.encode(prefix) if prefix else []
        rows = [
            RowRequest(engine.encode(p) + extra, base.replace(max_tokens=m), 0, index=i)
            for i, (p, m) in enumerate(zip(prompts, allowed, strict=False))
        ]
        self.ledger.check(sum(allowed))
        completions = engine.run(rows)
        self._charge(kind, sum(c.completion_tokens for c in completions), *_prefill_tokens(rows, completions))
        for i, c in enumerate(completions):
            replies[i] = c.text
        return replies

    def charge(self, kind: str, generated: int, prompt: int = 0, reused: int = 0) -> None:
        """Account for tokens generated outside :meth:`generate` (e.g. beam search)."""
        self._charge(kind, generated, prompt, reused)

    def _charge(self, kind: str, generated: int, prompt: int, reused: int = 0) -> None:
        self.ledger.charge(kind, generated, prompt, reused)
        if self._bar is not None:
            self._bar.update(generated)

    # -- scoring -----------------------------------------------------------------------------------
    def score(self, nodes: list[Node], scorer: Scorer | None = None) -> list[Node]:
        """Score ``nodes`` in one call (novelty and rank compare them with each other)."""
        if not nodes:
            return nodes
        scorer = scorer or self.scorer
        results: list[Score] = scorer.score(nodes, self)
        for node, s in zip(nodes, results, strict=False):
            node.score = s.value
            node.reason = s.reason
            node.scores = dict(s.parts) if s.parts else {scorer.name: s.value}
            self._tell("scored", node)
        return nodes

    def pool(self) -> list[Node]:
        """Finished candidates (not the root, not partial, not pruned), in creation order."""
        return [n for n in self.tree.nodes[1:] if not n.partial and not n.pruned]

    def best(self) -> Node | None:
        """The best finished candidate (else the best partial one), ties to the earliest.

        Under a grammar, a candidate that completed it beats one cut short by its token limit.
        """
        pool = self.pool()
        if self.islands is not None and self.islands.constraint is not None:
            pool = [n for n in pool if n.finish_reason == "stop"] or pool
        ranked = rank(pool) or rank([n for n in self.tree.nodes[1:] if n.partial])
        return ranked[0] if ranked else None

    # -- the end ------------------------------------------------------------------------------------
    def finish(self) -> Tree:
        best = self.best()
        self.tree.best = best.id if best is not None else None
        self.tree.spend = self.ledger.to_dict()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.tree.validate()
        return self.tree


def _shifted(spans: list[Span], chars: int, tokens: int) -> list[Span]:
    """Spans of a continuation's own output, moved behind its inherited prefix."""
    return [
        sp | {"start": sp["start"] + chars, "end": sp["end"] + chars,
              "token_start": sp["token_start"] + tokens, "token_end": sp["token_end"] + tokens}
        for sp in spans
    ]  # fmt: skip


def _prefill_tokens(rows: list[RowRequest], completions: list[Completion]) -> tuple[int, int]:
    """Prompt tokens the engine ran and those it took from its prefix cache: each distinct
    prompt once (rows sharing one share its prefill)."""
    first: dict[tuple[int, ...], int] = {}
    for r, c in zip(rows, completions, strict=False):
        first.setdefault(tuple(r.prompt_ids), c.cached_tokens)
    return sum(len(ids) - n for ids, n in first.items()), sum(first.values())


def _params_dict(params: SamplingParams) -> dict[str, Any]:
    out = params.to_dict()
    return {k: v for k, v in out.items() if k != "seed"}
