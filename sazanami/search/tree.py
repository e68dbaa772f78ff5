"""The search tree: every candidate a search generated, with its lineage, seed and scores.

A :class:`Tree` is what every strategy returns. Node 0 is the root (the prompt); every other
node has a ``parent`` that exists, so the nodes form one tree. A node's ``token_ids`` and
``logprobs`` are its whole output from the start of the answer (for a continuation, the
inherited prefix plus what was generated for it), while ``tokens`` counts only the tokens
generated *for this node*, so the ``tokens`` of all nodes add up to the tokens the search
generated for candidates (judge and synthesis calls are counted in the tree's ``spend``).

Trees round-trip through JSON (:meth:`Tree.to_json` / :meth:`Tree.from_json`) and render as an
indented text tree with scores (:meth:`Tree.render`, ``sazanami tree show FILE``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sazanami.errors import SazanamiError, check_known
from sazanami.sampling.rows import Completion, Output, Span

__all__ = ["Node", "Tree", "TreeError"]

FORMAT = "sazanami.tree/1"


class TreeError(SazanamiError):
    """A tree document is malformed: missing parent, duplicate id, cycle, bad field."""


@dataclass
class Node(Output):
    """One candidate (or the root prompt) of a search."""

    id: int
    """Unique within the tree; the root is 0."""
    parent: int | None
    """The node this one was derived from; None only for the root."""
    text: str = ""
    """The candidate's text (the prompt's text for the root)."""
    kind: str = "sample"
    """How it was made: root, sample, continue, partial, improve, synthesis, beam."""
    round: int = 0
    """The round of the strategy that made it."""
    seed: int | None = None
    """The row seed it was generated from."""
    noise: list[tuple[int, float]] | None = None
    """Noise mixture [(seed, weight)] when it came from zero-order noise search."""
    temperature: float | None = None
    """Base temperature of the row that generated it."""
    fluctuation: dict[str, Any] | None = None
    """The fluctuation of that row, as a dict (None = plain sampling)."""
    score: float | None = None
    """Scorer value, higher is better; None = unscored."""
    scores: dict[str, float | None] = field(default_factory=dict)
    """Per-scorer values (the parts of a combined scorer)."""
    reason: str = ""
    """What the scorer said (missing words, the judge's reply ...)."""
    tokens: int = 0
    """Tokens drawn for this node (an inherited prefix and injected tool results are not counted)."""
    token_ids: list[int] = field(default_factory=list)
    """The whole output's token ids (prefix included)."""
    logprobs: list[float] = field(default_factory=list)
    """Model log-probability of each token of ``token_ids`` as generated."""
    finish_reason: str | None = None
    """stop, length, or partial (a prefix the tree search may extend)."""
    pruned: bool = False
    """The tree search dropped this prefix; it is never explored again."""
    sources: list[int] = field(default_factory=list)
    """Nodes a synthesis merged."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Strategy-specific details (cut position, perturbed log-prob ...)."""
    spans: list[Span] = field(default_factory=list)
    """Injected islands (tool results) in the output, as in ``Completion.spans``: character
    offsets of ``text``, token offsets of ``token_ids`` (an inherited prefix's spans included)."""

    @classmethod
    def from_completion(
        cls, c: Completion, parent: int, kind: str, round: int, params: Any, tokens: int | None = None, **extra: Any
    ) -> Node:
        """A node of completion ``c`` (its whole output) generated under ``params``.

        ``tokens``: what was drawn for this node (default: all of ``c``'s drawn tokens);
        ``extra``: other fields (noise, sources, meta).
        """
        fl = params.fluctuation
        return cls(
            0,
            parent,
            text=c.text,
            kind=kind,
            round=round,
            seed=c.seed,
            temperature=params.temperature,
            fluctuation=fl.to_dict() if fl is not None else None,
            tokens=c.drawn if tokens is None else tokens,
            token_ids=list(c.token_ids),
            logprobs=list(c.logprobs),
            finish_reason=c.finish_reason,
            spans=list(c.spans),
            **extra,
        )

    @property
    def partial(self) -> bool:
        return self.finish_reason == "partial"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["noise"] = [list(x) for x in self.noise] if self.noise is not None else None
        out["logprobs"] = [round(x, 5) for x in self.logprobs]
        if self.score is not None:
            out["score"] = _finite(self.score)
        out["scores"] = {k: _finite(v) for k, v in self.scores.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        check_known(data, [f.name for f in fields(cls)], "node field", error=lambda _param, message: TreeError(message))
        if "id" not in data or "parent" not in data:
            raise TreeError("every node needs 'id' and 'parent'")
        data = dict(data)
        if data.get("noise") is not None:
            data["noise"] = [(int(s), float(w)) for s, w in data["noise"]]
        return cls(**data)


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


@dataclass
class Tree:
    """All nodes of one search, the winner, what it cost and how it was configured."""

    prompt: Any
    """The prompt (a string or chat messages)."""
    strategy: str
    seed: int
    nodes: list[Node] = field(default_factory=list)
    best: int | None = None
    """Id of the winning node."""
    config: dict[str, Any] = field(default_factory=dict)
    """Strategy options, scorer, sampling parameters, budget."""
    spend: dict[str, Any] = field(default_factory=dict)
    """generated_tokens (all model calls), prompt_tokens, by_kind, wall_s, budget_tokens."""
    meta: dict[str, Any] = field(default_factory=dict)

    # -- building ----------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        """Append ``node``, giving it the next id (its ``id`` field is overwritten)."""
        if node.parent is not None and not 0 <= node.parent < len(self.nodes):
            raise TreeError(f"parent {node.parent} of a new node does not exist")
        node.id = len(self.nodes)
        self.nodes.append(node)
        return node

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    @property
    def best_node(self) -> Node | None:
        return self.nodes[self.best] if self.best is not None else None

    @property
    def text(self) -> str:
        """The winner's text ('' when the search produced nothing)."""
        node = self.best_node
        return node.text if node is not None else ""

    def children(self, node_id: int) -> list[Node]:
        return [n for n in self.nodes if n.parent == node_id]

    def path(self, node_id: int) -> list[Node]:
        """Root → ``node_id``."""
        out = []
        cur: int | None = node_id
        while cur is not None:
            out.append(self.nodes[cur])
            cur = self.nodes[cur].parent
        return out[::-1]

    def candidates(self) -> list[Node]:
        """Every non-root node."""
        return self.nodes[1:]

    # -- checking ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`TreeError` unless ids are 0..N-1, parents exist, and there is one root."""
        if not self.nodes:
            raise TreeError("a tree needs at least its root node")
        for i, n in enumerate(self.nodes):
            if n.id != i:
                raise TreeError(f"node at position {i} has id {n.id}; ids must be 0..{len(self.nodes) - 1} in order")
        if self.nodes[0].parent is not None:
            raise TreeError("node 0 must be the root (parent null)")
        for n in self.nodes[1:]:
            if n.parent is None:
                raise TreeError(f"node {n.id} has no parent; only the root may")
            if not 0 <= n.parent < n.id:
                # Parents are always created first, so parent < id also rules out cycles.
                raise TreeError(f"node {n.id} has parent {n.parent}, which does not precede it")
            for s in n.sources:
                if not 0 <= s < n.id:
                    raise TreeError(f"node {n.id} lists source {s}, which does not precede it")
        if self.best is not None and not 0 <= self.best < len(self.nodes):
            raise TreeError(f"best node {self.best} does not exist")

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "prompt": self.prompt,
            "strategy": self.strategy,
            "seed": self.seed,
            "best": self.best,
            "text": self.text,
            "config": self.config,
            "spend": self.spend,
            "meta": self.meta,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tree:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TreeError(f'not a sazanami tree (expected "format": "{FORMAT}")')
        try:
            tree = cls(
                prompt=data["prompt"],
                strategy=data["strategy"],
                seed=data["seed"],
                nodes=[Node.from_dict(n) for n in data["nodes"]],
                best=data.get("best"),
                config=data.get("config", {}),
                spend=data.get("spend", {}),
                meta=data.get("meta", {}),
            )
        except (KeyError, TypeError) as exc:
            raise TreeError(f"malformed tree document: {exc}") from exc
        tree.validate()
        return tree

    @classmethod
    def from_json(cls, text: str) -> Tree:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TreeError(f"tree file is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tree:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise TreeError(f"cannot read tree file {path}: {exc}") from exc
        return cls.from_json(text)

    # -- rendering ---------------------------------------------------------------------------
    def summary(self) -> str:
        s = self.spend
        budget = s.get("budget_tokens")
        spent = f"{s.get('generated_tokens', 0)}" + (f"/{budget}" if budget else "")
        best = self.best_node
        head = f"{self.strategy}  seed={self.seed}  tokens {spent} (+{s.get('prompt_tokens', 0)} prompt)"
        if "wall_s" in s:
            head += f"  {s['wall_s']:.1f} s"
        head += f"  nodes {len(self.nodes)}"
        if best is not None:
            head += f"  best #{best.id} score {_fmt(best.score)}"
        return head

    def render(self, width: int = 100, full: bool = False) -> str:
        """An indented tree, one line per node: id, kind, round, T, seed, score, text.

        ``★`` marks the winner, ``✗`` pruned prefixes, ``…`` partial outputs, ``⟦…⟧`` injected
        tool results.
        """
        kids: dict[int | None, list[Node]] = {}
        for n in self.nodes:
            kids.setdefault(n.parent, []).append(n)
        lines = [self.summary()]

        def label(n: Node) -> str:
            mark = "★ " if n.id == self.best else ("✗ " if n.pruned else "")
            if n.parent is None:
                return f"#0 prompt: {_clip(_prompt_text(self.prompt), width, full)}"
            bits = [f"{mark}#{n.id}", n.kind, f"r{n.round}"]
            if n.temperature is not None:
                bits.append(f"T={n.temperature:.2f}")
            if n.seed is not None:
                bits.append(f"seed …{n.seed % 100000:05d}")
            bits.append(f"{n.tokens} tok")
            bits.append(f"score {_fmt(n.score)}")
            if len(n.scores) > 1:
                bits.append("[" + " ".join(f"{k} {_fmt(v)}" for k, v in n.scores.items()) + "]")
            if n.sources:
                bits.append("from " + ",".join(f"#{s}" for s in n.sources))
            if n.spans:  # injected tool results, marked ⟦=> result⟧
                from sazanami.islands.runtime import marked_text

                bits.append(f"{len(n.spans)} call" + ("s" if len(n.spans) > 1 else ""))
            text = marked_text(n.text, n.spans) if n.spans else n.text
            text = _clip(text, width, full) + ("…" if n.partial else "")
            return "  ".join(bits) + f"  {json.dumps(text, ensure_ascii=False)}"

        def walk(n: Node, prefix: str, last: bool, top: bool) -> None:
            if top:
                lines.append(label(n))
                child_prefix = ""
            else:
                lines.append(prefix + ("└─ " if last else "├─ ") + label(n))
                child_prefix = prefix + ("   " if last else "│  ")
            children = kids.get(n.id, [])
            for i, c in enumerate(children):
                walk(c, child_prefix, i == len(children) - 1, False)

        if self.nodes:
            walk(self.nodes[0], "", True, True)
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " | ".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


def _clip(text: str, width: int, full: bool) -> str:
    text = " ".join(text.split())
    return text if full or len(text) <= width else text[: max(1, width - 1)] + "…"
