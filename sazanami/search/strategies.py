"""Search strategies: spend more generated tokens for a better answer. Each returns a Tree.

1. :func:`best_of_n` — n samples in one batched call (the prompt prefilled once), the best kept.
2. :func:`anneal` — rounds under a temperature schedule from hot to cold (σ of the
   fluctuation scaled with T); from round 1 on, the winners so far are drafts the model is
   asked to improve (with the scorer's feedback). The pool keeps every round's candidates,
   so the best never gets lost.
3. :func:`noise_search` — over noise seeds: ``random`` (fresh seeds each round),
   ``zero-order`` (neighbours of the best noise: its streams mixed with fresh noise at
   cosine similarity c, keeping the norm; see :func:`neighbour`), ``paths`` (keep a prefix
   of a winner, regenerate the suffix with fresh noise).
4. :func:`beam` — stochastic beam search (Gumbel-top-k, Kool et al. 2019, as implemented
   in :mod:`sazanami.engine.beams`), its k samples scored; repeated with new seeds while the
   budget lasts.
5. :func:`tree_search` — token-level best-first search with checkpoints every ``chunk``
   tokens: expand the best open prefixes into ``branch`` continuations, score the partial
   outputs, prune (per parent and to a frontier of ``width``), backtrack to the best open
   prefix anywhere in the tree when a branch dies, and never re-explore a pruned prefix.
6. :func:`optimize` — the improve-and-score loop of seed 002: ask the model to improve the
   best output, score, keep it if better, until the budget is spent.
7. :func:`synthesize` — any strategy, then its top-k merged by the synthesizer.

Budgets: every strategy plans its engine calls so that the worst case (every row running to
``max_tokens``, plus the scorer's cost per row) fits what is left; see
:mod:`sazanami.search.budget`; each row counts with its own ``max_tokens`` (a continuation
that keeps a prefix has less left to draw), so a round's rows go in one engine call. When a
round's rows finish early, what is left of its share buys more rows ("waves"), so strategies
compare at equal tokens; ``noise_search`` instead leaves it to its later rounds (each round
but the last is one engine call).
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable
from typing import Any

from sazanami.engine.loop import Engine, Prompt
from sazanami.errors import ParameterError, check_int, check_range
from sazanami.islands.runtime import Islands
from sazanami.noise.fluctuation import NoiseMix
from sazanami.sampling.params import MAX_N, MAX_TOKENS_LIMIT, SamplingParams
from sazanami.sampling.rows import RowRequest
from sazanami.search.context import NodeEvent, SearchContext
from sazanami.search.selectors import make_selector, rank
from sazanami.search.synthesis import Improver, Synthesizer
from sazanami.search.tree import Node, Tree

__all__ = [
    "SIDE_BY_SIDE",
    "STRATEGIES",
    "anneal",
    "beam",
    "best_of_n",
    "neighbour",
    "noise_search",
    "optimize",
    "check_strategy_options",
    "search",
    "strategy_name",
    "strategy_options",
    "synthesize",
    "temperature_schedule",
    "tree_search",
    "waves",
]

MAX_ROUNDS = 1024
"""Rounds of any strategy at most (and never more than the budget's tokens: a round generates one)."""

SIDE_BY_SIDE: dict[str, str] = {"beam": "width"}
"""The option that holds ``n`` for a strategy that names it otherwise.

``n`` means the same for every strategy: how many candidates run side by side (the rows of
one engine call, a round's candidates). A beam search's n beams are its ``width``;
``synthesize`` passes ``n`` to its base strategy; every other strategy takes ``n`` itself.
"""


# --------------------------------------------------------------------------- helpers


def _int(name: str, value: Any, low: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    return check_int(name, value, low)


def _per_row(ctx: SearchContext, max_tokens: int | None = None) -> int:
    """Worst-case tokens one candidate costs: its max_tokens plus scoring it."""
    return (max_tokens or ctx.params.max_tokens) + ctx.scorer.cost_per_item


def _share(ctx: SearchContext, rounds_left: int) -> int:
    """A round's tokens: an equal part of what is left, but at least one worst-case row
    (small budgets run fewer, whole rounds rather than many truncated ones)."""
    left = ctx.ledger.remaining
    return max(left // rounds_left, min(left, _per_row(ctx)))


def waves(
    ctx: SearchContext,
    make: Callable[[int, int], list[RowRequest]],
    n: int | None = None,
    share: int | None = None,
    score: bool = True,
    once: bool = False,
) -> list[Node]:
    """Generate (and score) rows ``make(start, count)``: n rows in one call, or (n None) waves
    of as many rows as the share pays for in the worst case, until it is spent.

    A wave's rows are counted by their own ``max_tokens`` (a continuation that keeps a
    prefix costs less than a fresh sample), so a round's rows go in one engine call.
    ``once``: one wave only; what the round leaves unspent stays for later rounds.
    ``make(start, count)`` must give the rows ``start .. start + count - 1`` of the round,
    each depending only on its index (waves are built one row at a time).
    """
    out: list[Node] = []
    start = ctx.ledger.generated
    reserve = ctx.scorer.cost_per_item
    while not ctx.ledger.exhausted:
        left = (
            ctx.ledger.remaining if share is None else min(ctx.ledger.remaining, share - (ctx.ledger.generated - start))
        )
        if n is not None:
            specs = make(len(out), n - len(out)) if n > len(out) else []
        else:
            specs, cost = [], 0
            while len(specs) < MAX_N:  # more rows wait for the next wave
                (spec,) = make(len(out) + len(specs), 1)
                cost += spec.params.max_tokens + reserve
                if cost > left:
                    break
                specs.append(spec)
            if not specs and (not out or left - reserve >= ctx.params.max_tokens // 2):
                # One clipped row: a round gets at least one, and a leftover of half a row is used.
                specs = make(len(out), 1)
        if not specs:
            break
        before = ctx.ledger.generated
        nodes = ctx.generate(specs, limit=left)
        if not nodes:
            break
        if score:
            ctx.score(nodes)
        out += nodes
        if once or n is not None or ctx.ledger.generated == before:
            break  # one wave asked for, n rows made, or a wave that generated nothing (would repeat forever)
    return out


# --------------------------------------------------------------------------- noise mixtures


def check_mixture(mix: NoiseMix, tol: float = 1e-6) -> NoiseMix:
    """Raise ``ParameterError`` unless ``mix`` is a non-empty [(seed, weight)] with Σw² = 1."""
    if not mix:
        raise ParameterError("noise", "a noise mixture needs at least one (seed, weight)")
    norm = sum(w * w for _, w in mix)
    if abs(norm - 1) > tol:
        raise ParameterError("noise", f"a noise mixture must have sum of squared weights 1, got {norm:.6g}")
    return mix


def neighbour(mix: NoiseMix, fresh: int, similarity: float = 0.95) -> NoiseMix:
    """A neighbour of noise mixture ``mix`` at cosine similarity ``similarity``.

    ``[(s, c·w) for s, w in mix] + [(fresh, √(1 − c²))]``: the pivot's streams scaled by c plus
    one fresh stream. Independent unit-variance streams add in quadrature, so Σw² stays 1
    (the neighbour's noise has the pivot's variance and spectrum) and its correlation with
    the pivot's noise is exactly c.
    """
    check_range("similarity", similarity, 0, 1, low_open=True, high_open=True)
    check_mixture(mix)
    c = float(similarity)
    return [(s, c * w) for s, w in mix] + [(fresh, math.sqrt(1 - c * c))]


def mixture_cosine(a: NoiseMix, b: NoiseMix) -> float:
    """Expected correlation of two mixtures' noise: Σ over shared seeds of w_a · w_b."""
    wa: dict[int, float] = {}
    for s, w in a:
        wa[s] = wa.get(s, 0.0) + w
    wb: dict[int, float] = {}
    for s, w in b:
        wb[s] = wb.get(s, 0.0) + w
    return sum(w * wb.get(s, 0.0) for s, w in wa.items())


# --------------------------------------------------------------------------- schedules


def temperature_schedule(schedule: str | list[float], rounds: int, t_hot: float, t_cold: float) -> list[float]:
    """Round temperatures from hot to cold: ``linear``, ``geometric`` or an explicit list."""
    if isinstance(schedule, (list, tuple)):
        temps = [float(t) for t in schedule]
        if not temps:
            raise ParameterError("schedule", "a temperature list must not be empty")
        for t in temps:
            check_range("schedule", t, 0, 100)
        return temps
    _int("rounds", rounds, 1)
    check_range("t_hot", t_hot, 0, 100, low_open=True)
    check_range("t_cold", t_cold, 0, 100, low_open=True)
    if rounds == 1:
        return [float(t_hot)]
    fractions = [r / (rounds - 1) for r in range(rounds)]
    if schedule == "linear":
        return [t_hot + (t_cold - t_hot) * f for f in fractions]
    if schedule == "geometric":
        return [t_hot * (t_cold / t_hot) ** f for f in fractions]
    raise ParameterError(
        "schedule", f"schedule must be 'linear', 'geometric' or a list of temperatures, got {schedule!r}"
    )


def annealed(params: SamplingParams, temperature: float, scale: float) -> SamplingParams:
    """``params`` at ``temperature`` with every fluctuation σ multiplied by ``scale``."""
    fl = params.fluctuation
    if fl is None:
        return params.replace(temperature=temperature)
    data = fl.to_dict()
    for entry in data.values():
        if isinstance(entry, dict) and "sigma" in entry:
            entry["sigma"] = entry["sigma"] * scale
    return params.replace(temperature=temperature, fluctuation=type(fl).from_dict(data))


# --------------------------------------------------------------------------- strategies


def _best_of_n(ctx: SearchContext, n: int | None = None) -> None:
    """n samples (default: as many as the budget pays for), scored; the best wins."""
    _int("n", n, 1, allow_none=True)
    ctx.start_round(0)
    waves(ctx, lambda start, count: [ctx.fresh(start + i) for i in range(count)], n)


def _anneal(
    ctx: SearchContext,
    rounds: int = 3,
    n: int | None = None,
    keep: int = 2,
    schedule: str | list[float] = "geometric",
    t_hot: float = 1.2,
    t_cold: float = 0.5,
    selector: Any = "top-k",
) -> None:
    """Hot → cold rounds; round r > 0 improves the ``keep`` best drafts so far."""
    temps = temperature_schedule(schedule, rounds, t_hot, t_cold)
    _int("n", n, 1, allow_none=True)
    sel = make_selector(selector, _int("keep", keep, 1))
    ctx.tree.meta["temperatures"] = [round(t, 4) for t in temps]
    for r, t in enumerate(temps):
        ctx.start_round(r, f"T={t:.2f}")
        p = annealed(ctx.params, t, t / temps[0] if temps[0] > 0 else 1.0)
        share = _share(ctx, len(temps) - r)
        winners = sel.select(ctx.pool()) if r > 0 else []
        if r == 0 or not winners:

            def make(start: int, count: int, p: SamplingParams = p) -> list[RowRequest]:
                return [ctx.fresh(start + i, p) for i in range(count)]
        else:

            def make(
                start: int, count: int, p: SamplingParams = p, w: list[Node] = winners, r: int = r
            ) -> list[RowRequest]:
                # The round is part of the seed: a winner kept for several rounds gets new seeds.
                return [ctx.improvement(w[(start + i) % len(w)], r * 100_000 + start + i, p) for i in range(count)]

        waves(ctx, make, n, share)


NOISE_MODES = ("random", "zero-order", "paths")


def _noise_search(
    ctx: SearchContext,
    mode: str = "paths",
    rounds: int = 4,
    n: int | None = None,
    keep: int = 2,
    similarity: float = 0.95,
    selector: Any = "top-k",
) -> None:
    """Search over noise seeds: random, zero-order around the best noise, or over paths.

    Each round but the last is one engine call (all its rows in one batch); what its rows
    leave of the round's share (rows that stop early) goes to the later rounds, and the
    last round spends the rest in waves.
    """
    mode = str(mode).replace("_", "-")
    if mode not in NOISE_MODES:
        raise ParameterError("mode", f"noise search mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    _int("rounds", rounds, 1)
    _int("n", n, 1, allow_none=True)
    check_range("similarity", similarity, 0, 1, low_open=True, high_open=True)
    sel = make_selector(selector, _int("keep", keep, 1))
    params = ctx.params
    if mode == "zero-order" and params.fluctuation is None:
        # Without a fluctuation the noise streams drive nothing: default to the colored draw.
        params = params.replace(fluctuation="pink-draw")
        ctx.tree.meta["fluctuation"] = "pink-draw (zero-order default)"
    for r in range(rounds):
        ctx.start_round(r, mode)
        share = _share(ctx, rounds - r)
        pool = ctx.pool()
        if r == 0 or mode == "random" or not pool:

            def make(start: int, count: int, r: int = r) -> list[RowRequest]:
                specs = [ctx.fresh(start + i, params, key=f"noise{r}") for i in range(count)]
                if mode == "zero-order":
                    for s in specs:
                        s.noise = [(s.seed, 1.0)]
                return specs
        elif mode == "zero-order":
            pivot = rank(pool)[0]
            mix = pivot.noise or [(pivot.seed, 1.0)]

            def make(start: int, count: int, r: int = r, pivot: Node = pivot, mix: NoiseMix = mix) -> list[RowRequest]:
                specs = []
                for i in range(count):
                    # Same row seed as the pivot (same draws where the noise does not decide).
                    noise = neighbour(mix, ctx.seed_for("neighbour", r, start + i), similarity)
                    meta = {"similarity": similarity}
                    specs.append(
                        ctx.row(pivot, ctx.prompt_ids, params, pivot.seed or 0, "neighbour", noise=noise, meta=meta)
                    )
                return specs
        else:
            winners = sel.select(pool)

            def make(start: int, count: int, w: list[Node] = winners, r: int = r) -> list[RowRequest]:
                specs = []
                for i in range(count):
                    node = w[(start + i) % len(w)]
                    # The round is part of the seed: a winner kept for several rounds gets new cuts.
                    index = r * 100_000 + start + i
                    rng = random.Random(ctx.seed_for("cut", node.id, index))
                    cut = rng.randrange(1, len(node.token_ids)) if len(node.token_ids) > 1 else 0
                    specs.append(ctx.continuation(node, cut, index, params))
                return specs

        waves(ctx, make, n, share, once=r < rounds - 1)


def _beam(ctx: SearchContext, width: int | None = None, beta: float | None = None, rounds: int | None = None) -> None:
    """Stochastic beam search; each round's ``width`` samples without replacement are scored.

    Width and β default to ``params.beams`` when set (a fluctuation's ``beams`` entry sets it;
    β 0 = white Gumbel noise), else width = what the budget pays for (2 to 16), white noise.
    Tokens charged per round (the beams report them): every decode step of every live beam,
    plus one per beam. The rows go through ``ctx.engine.run`` like every other engine call.
    """
    entry = ctx.params.beams
    _int("width", width, 1, allow_none=True)
    _int("rounds", rounds, 1, allow_none=True)
    if beta is not None:
        check_range("beta", beta, 0, 2)
    if beta is None and entry is not None and entry.beta > 0:
        beta = entry.beta
    if beta == 0:
        beta = None
    m = ctx.params.max_tokens
    reserve = ctx.scorer.cost_per_item
    r = 0
    while not ctx.ledger.exhausted and (rounds is None or r < rounds):
        left = ctx.ledger.remaining
        w = width or (entry.width if entry is not None else max(2, min(16, left // (m + reserve))))
        w = min(w, left // (1 + reserve))
        if w < 1:
            break
        mt = min(m, left // w - reserve)
        if r > 0 and mt < max(4, m // 2):
            break  # what is left buys only truncated beams
        ctx.start_round(r, f"width {w}")
        params = ctx.params.replace(
            max_tokens=mt, seed=ctx.seed_for("beam", r), n=1, beams={"width": w, "beta": beta or 0.0}
        )
        row = RowRequest(ctx.prompt_ids, params, params.seed, islands=ctx.islands)  # type: ignore[arg-type]
        completions = ctx.engine.run([row])
        usage = completions[0].usage or {} if completions else {}
        spent = min(usage.get("decoded", 0) + len(completions), w * mt)
        ctx.charge("beam", spent, usage.get("prefilled", 0), completions[0].cached_tokens if completions else 0)
        nodes = []
        for c in completions:
            tag = c.tag if isinstance(c.tag, dict) else {}
            meta = {k: round(float(v), 4) for k, v in tag.items()} | {"width": w}
            nodes.append(ctx.add(Node.from_completion(c, ctx.root.id, "beam", r, ctx.params, meta=meta)))
        ctx.score(nodes)
        r += 1


def _tree(
    ctx: SearchContext,
    chunk: int = 16,
    branch: int = 3,
    width: int = 4,
    expand: int = 2,
    keep: int = 2,
    margin: float | None = None,
    n: int | None = None,
) -> None:
    """Token-level best-first search with checkpoints every ``chunk`` tokens.

    Each round pops the ``expand`` best open prefixes (the root first), continues each with
    ``branch`` fresh seeds for ``chunk`` tokens, and scores the partial outputs; or, with
    ``n`` (continuations per round, side by side in one engine call), pops at most ``n``
    prefixes and shares the ``n`` continuations among them, the better prefixes first. Per parent
    the ``keep`` best open children stay (also dropping any more than ``margin`` below
    their parent's score); the frontier keeps the ``width`` best open prefixes overall. A
    dropped prefix is pruned for good: a later continuation that reproduces or extends it
    is pruned on sight. When a parent's children all die the next round expands the best
    open prefix elsewhere — a backtrack (counted in ``tree.meta``). When the frontier
    empties, the root is expanded again with new seeds. The last round that fits the
    budget lets its rows run to ``max_tokens`` so the search ends with finished answers.
    """
    for name, value in (("chunk", chunk), ("branch", branch), ("width", width), ("expand", expand), ("keep", keep)):
        _int(name, value, 1)
    _int("n", n, 1, allow_none=True)
    if margin is not None:
        check_range("margin", margin, 0, None)
    m = ctx.params.max_tokens
    reserve = ctx.scorer.cost_per_item
    frontier: list[Node] = [ctx.root]
    pruned: dict[int, set[tuple[int, ...]]] = {}  # prefix length -> pruned prefixes
    seen: set[tuple[int, ...]] = set()
    expanded_last: set[int] = set()
    visits: dict[int, int] = {}
    backtracks = dead_ends = r = 0

    def is_pruned(ids: list[int]) -> bool:
        return any(len(ids) >= k and tuple(ids[:k]) in prefixes for k, prefixes in pruned.items())

    def prune(node: Node, why: str, record: bool = True) -> None:
        node.pruned = True
        node.meta["pruned"] = why
        if record:  # a duplicate of an explored prefix must not block that prefix's subtree
            pruned.setdefault(len(node.token_ids), set()).add(tuple(node.token_ids))

    while not ctx.ledger.exhausted:
        if not frontier:
            frontier = [ctx.root]
        # A prefix pruned after this node was queued may now cover it: drop it unexpanded.
        for node in frontier:
            if node is not ctx.root and not node.pruned and is_pruned(node.token_ids):
                prune(node, "extends a pruned prefix", record=False)
        frontier = [node for node in frontier if not node.pruned]
        ranked = [ctx.root] if ctx.root in frontier else []
        ranked += rank([node for node in frontier if node is not ctx.root])
        picks = ranked[: expand if n is None else min(expand, n)]
        frontier = [node for node in frontier if node not in picks]
        if r > 0 and any(p.parent not in expanded_last for p in picks if p is not ctx.root):
            backtracks += 1
        # continuations of each pick: branch each, or n shared out (the better picks get the extra ones)
        if n is None or not picks:
            per_pick = [branch] * len(picks)
        else:
            per_pick = [n // len(picks) + (i < n % len(picks)) for i in range(len(picks))]
        round_cost = sum(per_pick) * (chunk + reserve)
        final = ctx.ledger.remaining < 2 * round_cost
        ctx.start_round(r, "finish" if final else f"{len(frontier) + len(picks)} open")
        specs = []
        for p, count in zip(picks, per_pick):
            left = m - p.drawn
            if left <= 0:
                continue
            v = visits.get(p.id, 0)
            visits[p.id] = v + 1
            step = left if final else min(chunk, left)
            stride = branch if n is None else n  # seed indices never repeat across a prefix's visits
            for j in range(count):
                s = ctx.continuation(p, len(p.token_ids), v * stride + j, kind="partial")
                s.params = s.params.replace(max_tokens=step)
                specs.append(s)
        before = ctx.ledger.generated
        nodes = ctx.generate(specs)
        if not nodes or ctx.ledger.generated == before:
            break
        for node in nodes:
            if node.finish_reason == "length" and node.drawn < m:
                node.finish_reason = "partial"
            else:
                node.kind = "continue" if node.parent != ctx.root.id else "sample"
            key = tuple(node.token_ids)
            if node.partial and key in seen:
                prune(node, "repeats an explored prefix", record=False)
            elif node.partial and is_pruned(node.token_ids):
                prune(node, "extends a pruned prefix", record=False)
            seen.add(key)
        ctx.score(nodes)
        for p in picks:
            kids = [node for node in nodes if node.parent == p.id and node.partial and not node.pruned]
            for i, kid in enumerate(rank(kids)):
                if i >= keep:
                    prune(kid, f"not among the {keep} best children")
                elif (
                    margin is not None
                    and p.score is not None
                    and kid.score is not None
                    and kid.score < p.score - margin
                ):
                    prune(kid, f"more than {margin} below its parent")
                else:
                    frontier.append(kid)
            if not any(node.parent == p.id and not node.pruned for node in nodes):
                dead_ends += 1
                p.meta["dead_end"] = True
        ranked_frontier = rank(frontier)
        for node in ranked_frontier[width:]:
            prune(node, f"outside the frontier of {width}")
        frontier = ranked_frontier[:width]
        expanded_last = {p.id for p in picks}
        r += 1
    ctx.tree.meta.update(
        {"backtracks": backtracks, "dead_ends": dead_ends, "pruned": sum(len(v) for v in pruned.values())}
    )


def _optimize(ctx: SearchContext, n: int = 4, init: int | None = None, rounds: int | None = None) -> None:
    """Sample ``init`` drafts (default n); then, per round, ask for n improvements of the best
    one (with the scorer's feedback) and keep an improvement only if it scores higher."""
    _int("n", n, 1)
    _int("init", init, 1, allow_none=True)
    _int("rounds", rounds, 1, allow_none=True)
    ctx.start_round(0, "drafts")
    first = waves(ctx, lambda start, count: [ctx.fresh(start + i) for i in range(count)], init or n)
    if not first:
        return
    best = rank(first)[0]
    r = 1
    while not ctx.ledger.exhausted and (rounds is None or r <= rounds):
        ctx.start_round(r, f"best {best.score if best.score is not None else '—'}")
        before = ctx.ledger.generated

        def make(start: int, count: int, b: Node = best, r: int = r) -> list[RowRequest]:
            return [ctx.improvement(b, r * 1000 + start + i) for i in range(count)]

        nodes = waves(ctx, make, n)
        if not nodes or ctx.ledger.generated == before:
            break
        cand = rank(nodes)[0]
        if cand.score is not None and (best.score is None or cand.score > best.score):
            cand.meta["accepted"] = True
            best = cand
        r += 1
    ctx.tree.meta["accepted"] = [n.id for n in ctx.tree.nodes if n.meta.get("accepted")]


def _synthesize(
    ctx: SearchContext,
    base: str = "best_of_n",
    k: int = 3,
    selector: Any = "top-k",
    synthesizer: Synthesizer | dict[str, Any] | None = None,
    base_options: dict[str, Any] | None = None,
) -> None:
    """Run ``base`` with the budget less the synthesis' share, then merge its top ``k``."""
    if isinstance(synthesizer, dict):
        synthesizer = Synthesizer(**synthesizer)
    synth = synthesizer or Synthesizer()
    name = strategy_name(base)
    if name == "synthesize":
        raise ParameterError("base", "synthesize cannot be its own base strategy")
    impl = STRATEGIES[name]
    options = _check_options(name, impl, base_options or {})
    sel = make_selector(selector, _int("k", k, 1))
    cost = synth.n * ((synth.max_tokens or ctx.params.max_tokens) + ctx.scorer.cost_per_item)
    with ctx.ledger.hold(cost):
        impl(ctx, **options)
    winners = sel.select(ctx.pool())
    if not winners:
        return
    ctx.start_round(ctx.round + 1, "synthesis")
    nodes = ctx.generate([ctx.synthesis(winners, synth, i) for i in range(synth.n)], kind="synthesis")
    ctx.score(nodes)


STRATEGIES: dict[str, Callable[..., None]] = {
    "best_of_n": _best_of_n,
    "anneal": _anneal,
    "noise_search": _noise_search,
    "beam": _beam,
    "tree": _tree,
    "optimize": _optimize,
    "synthesize": _synthesize,
}


def strategy_name(name: Any) -> str:
    """The canonical name of a strategy (``bon`` → ``best_of_n``, ``tree-search`` → ``tree``)."""
    key = str(name).strip().lower().replace("-", "_")
    key = {"bon": "best_of_n", "best_of": "best_of_n", "noise": "noise_search", "tree_search": "tree"}.get(key, key)
    if key not in STRATEGIES:
        raise ParameterError("strategy", f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return key


def strategy_options(name: str) -> dict[str, Any]:
    """The options a strategy accepts and their defaults."""
    sig = inspect.signature(STRATEGIES[strategy_name(name)])
    return {p.name: p.default for p in list(sig.parameters.values())[1:]}


def _side_by_side(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``n`` moved to the option that holds it for ``name`` (:data:`SIDE_BY_SIDE`)."""
    key = SIDE_BY_SIDE.get(name)
    if key is None or "n" not in options:
        return options
    options = dict(options)
    n = options.pop("n")
    if options.get(key) is not None and n is not None and options[key] != n:
        raise ParameterError(
            "n",
            f"n is {name}'s {key} (candidates side by side): give n or {key}, not both; got {n!r} and {options[key]!r}",
        )
    options[key] = n if n is not None else options.get(key)
    return options


def _check_options(
    name: str,
    impl: Callable[..., None],
    options: dict[str, Any],
    budget: int | None = None,
    max_rows: int = MAX_N,
) -> dict[str, Any]:
    """Raise ``ParameterError`` for an unknown option or a value out of its range (see
    :func:`check_strategy_options`); returns ``options``, ``n`` where the strategy keeps it."""
    options = _side_by_side(name, options)
    known = list(inspect.signature(impl).parameters)[1:]
    for key in options:
        if key not in known:
            raise ParameterError(key, f"strategy {name} has no option {key!r}; its options: {', '.join(known)}")
    defaults = strategy_options(name)
    rounds_high = min(MAX_ROUNDS, budget) if budget is not None else MAX_ROUNDS
    rows_high = min(max_rows, budget) if budget is not None else max_rows
    why_rounds = f"at most {MAX_ROUNDS}" + (f" and the budget's {budget} tokens" if budget is not None else "")
    why_rows = f"rows per engine call at most {max_rows}" + (
        f" and the budget's {budget} tokens" if budget is not None else ""
    )

    def whole(key: str, high: int, why: str) -> None:
        value = options[key]
        if value is None and defaults[key] is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ParameterError(key, f"{key} must be an integer in [1, {high}] ({why}), got {value!r}")

    for key, value in options.items():
        if key == "rounds":
            whole(key, rounds_high, why_rounds)
        elif key in ("n", "init", "width"):
            whole(key, rows_high, why_rows)
        elif key in ("keep", "k", "branch", "expand"):
            whole(key, max_rows, f"rows per engine call at most {max_rows}")
        elif key == "chunk":
            whole(key, MAX_TOKENS_LIMIT, "max_tokens at most")
        elif key == "similarity":
            check_range(key, value, 0, 1, low_open=True, high_open=True)
        elif key == "beta" and value is not None:
            check_range(key, value, 0, 2)
        elif key == "margin" and value is not None:
            check_range(key, value, 0, None)
        elif key in ("t_hot", "t_cold"):
            check_range(key, value, 0, 100, low_open=True)
        elif key == "mode":
            if str(value).replace("_", "-") not in NOISE_MODES:
                raise ParameterError(key, f"mode must be one of {', '.join(NOISE_MODES)}, got {value!r}")
        elif key == "schedule":
            if isinstance(value, (list, tuple)) and not 1 <= len(value) <= rounds_high:
                raise ParameterError(
                    key, f"a temperature list must have 1 to {rounds_high} entries ({why_rounds}), got {len(value)}"
                )
            temperature_schedule(value, 2, 1.0, 1.0)  # raises for a bad name or temperature
        elif key == "selector":
            make_selector(value, 1)
        elif key == "synthesizer" and isinstance(value, dict):
            try:
                Synthesizer(**value)
            except TypeError as exc:
                raise ParameterError(key, f"bad synthesizer {value!r}: {exc}") from exc
            except ParameterError as exc:
                raise ParameterError(key, f"bad synthesizer: {exc}") from exc
        elif key == "synthesizer" and value is not None and not isinstance(value, Synthesizer):
            raise ParameterError(key, f"synthesizer must be an object of synthesizer options, got {value!r:.80}")
        elif key == "base_options" and value is not None:
            if not isinstance(value, dict):
                raise ParameterError(key, f"base_options must be an object, got {value!r}")
            base = strategy_name(options.get("base", defaults["base"]))
            if base == "synthesize":
                raise ParameterError("base", "synthesize cannot be its own base strategy")
            try:
                _check_options(base, STRATEGIES[base], value, budget, max_rows)
            except ParameterError as exc:
                raise ParameterError(f"base_options.{exc.param}", str(exc)) from exc
    if name == "tree" and options.get("n") is not None:
        if "branch" in options:
            raise ParameterError(
                "n", "tree takes n (continuations per round) or branch (continuations per expanded prefix), not both"
            )
    elif name == "tree":
        branch = options.get("branch", defaults["branch"])
        expand = options.get("expand", defaults["expand"])
        if branch * expand > max_rows:
            raise ParameterError(
                "branch", f"branch × expand must be at most {max_rows} (rows per engine call), got {branch} × {expand}"
            )
    return options


def check_strategy_options(
    strategy: str, options: dict[str, Any], budget: int | None = None, max_rows: int = MAX_N
) -> dict[str, Any]:
    """The options of ``strategy`` (for synthesize: the base's own gathered into
    ``base_options``), each checked against its range before any work is done.

    Counts of rounds are at most :data:`MAX_ROUNDS` and ``budget`` (tokens; each round
    generates one at least); counts of rows in one engine call (``n``, ``init``, ``width``,
    ``keep``, ``k``, ``branch`` × ``expand``) at most ``max_rows`` (a server passes its
    batch limit) and ``budget``. Raises ``ParameterError`` naming the option. ``n`` is accepted by
    every strategy (candidates side by side) and lands where the strategy keeps it
    (:data:`SIDE_BY_SIDE`; synthesize's goes to its base).
    """
    name = strategy_name(strategy)
    impl = STRATEGIES[name]
    options = dict(options)
    if name == "synthesize":
        own = set(list(inspect.signature(impl).parameters)[1:])
        given = options.pop("base_options", None)
        if given is not None and not isinstance(given, dict):
            raise ParameterError("base_options", f"base_options must be an object, got {given!r:.80}")
        base_opts = dict(given or {})
        base_opts.update({k: options.pop(k) for k in list(options) if k not in own})
        if base_opts:
            options["base_options"] = base_opts
    return _check_options(name, impl, options, budget, max_rows)


def search(
    engine: Engine,
    prompt: Prompt,
    strategy: str = "best_of_n",
    *,
    scorer: Any = "judge",
    budget: Any = None,
    params: SamplingParams | None = None,
    seed: int | None = None,
    raw: bool = False,
    progress: bool = False,
    improver: Improver | None = None,
    islands: Islands | None = None,
    on_node: Callable[[NodeEvent], Any] | None = None,
    **options: Any,
) -> Tree:
    """Run ``strategy`` on ``prompt`` and return its tree (``tree.text`` is the winner).

    Args:
        engine: the generating model.
        strategy: best_of_n, anneal, noise_search, beam, tree, optimize or synthesize.
        scorer: a Scorer, callable (verifier) or spec (``"judge"``, ``"contains:a,b"`` ...).
        budget: generated tokens (int) or ``Budget(tokens, wall_s)``; default 16 × max_tokens.
        params: sampling parameters of the candidates (temperature, fluctuation, max_tokens ...).
        seed: the search seed; default ``params.seed``, else drawn and recorded in the tree.
        progress: show a progress bar on stderr.
        improver: the improve prompt (anneal, optimize, flows).
        islands: tools the candidates may call and/or a grammar they follow
            (:class:`sazanami.islands.Islands`); each branch keeps its own tool history,
            identical calls run once per search. Judge calls get none.
        on_node: called with a :class:`~sazanami.search.context.NodeEvent` for each node
            as it is added to the tree (in order, the root first) and as it is scored; it
            runs on the search's thread and should be quick; an exception in it is logged
            and the search goes on.
        options: the strategy's own options (see :func:`strategy_options`); for
            ``synthesize``, options of its base strategy are passed on to it.
    """
    name = strategy_name(strategy)
    impl = STRATEGIES[name]
    options = check_strategy_options(name, options)
    ctx = SearchContext(
        engine,
        prompt,
        strategy=name,
        params=params,
        scorer=scorer,
        budget=budget,
        seed=seed,
        raw=raw,
        progress=progress,
        improver=improver,
        config={"options": _jsonable(options)},
        islands=islands,
        on_node=on_node,
    )
    check_strategy_options(name, options, ctx.budget.tokens)  # bounds that follow from the budget
    try:
        impl(ctx, **options)
    finally:
        tree = ctx.finish()
    return tree


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    spec = getattr(x, "spec", None)
    return spec() if callable(spec) else repr(x)


def _wrapper(name: str) -> Callable[..., Tree]:
    def run(engine: Engine, prompt: Prompt, **kwargs: Any) -> Tree:
        return search(engine, prompt, name, **kwargs)

    run.__name__ = name if name != "tree" else "tree_search"
    run.__doc__ = f"``search(engine, prompt, {name!r}, ...)``.\n\n" + (STRATEGIES[name].__doc__ or "")
    return run


best_of_n = _wrapper("best_of_n")
anneal = _wrapper("anneal")
noise_search = _wrapper("noise_search")
beam = _wrapper("beam")
tree_search = _wrapper("tree")
optimize = _wrapper("optimize")
synthesize = _wrapper("synthesize")
