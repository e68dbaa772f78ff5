"""``sazanami search``, ``flow run|check`` and ``tree show``.

``search`` takes every strategy's options, derived in :mod:`sazanami.cli.options`; ``-n``
is the number of variants per round (for beam: its width).
"""

from __future__ import annotations

from typing import Any

import click

from sazanami.cli.options import (
    ISLAND_OPTIONS,
    SEARCH_ROWS,
    backend_option,
    engine_from_options,
    engine_options,
    extra_values,
    highlight,
    island_options,
    islands_from_options,
    options_of,
    params_from_options,
    prefix_cache_option,
    sampling_options,
    strategy_option_decls,
    strategy_values,
)
from sazanami.models import DEFAULT_MODEL
from sazanami.search.budget import DEFAULT_BUDGET_SAMPLES, search_budget
from sazanami.search.flows import Flow
from sazanami.search.scorer_specs import make_scorer, with_judge_template
from sazanami.search.strategies import STRATEGIES
from sazanami.search.strategies import search as run_search
from sazanami.search.tree import Tree

__all__ = ["flow", "search", "tree"]


def _output_options(fn: Any) -> Any:
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the whole tree as JSON."),
        click.option("--tree", "show_tree", is_flag=True, help="Print the tree, indented, with scores."),
        click.option("--save", type=click.Path(dir_okay=False), default=None, help="Also write the tree JSON to FILE."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _print(tree: Any, as_json: bool, show_tree: bool, save: str | None, engine: Any = None) -> None:
    if engine is not None:  # which engine ran it: in --json and saved trees
        tree.meta["backend"] = engine.backend.capabilities.backend
    if save:
        tree.save(save)
    if as_json:
        click.echo(tree.to_json())
        return
    if show_tree:
        click.echo(tree.render())
        click.echo()
    best = tree.best_node
    s = tree.spend
    header = (
        f"── best #{tree.best}  score {('—' if best is None or best.score is None else f'{best.score:.3g}')}"
        f"  tokens {s['generated_tokens']}/{s['budget_tokens']} (+{s['prompt_tokens']} prompt)"
        f"  {s['wall_s']:.1f} s  seed {tree.seed}"
    )
    click.echo(click.style(header, bold=True))
    if best is not None and best.reason:
        click.echo(click.style(f"   {best.reason}", dim=True))
    if best is not None and best.spans:  # injected tool results, dimmed
        click.echo(highlight(best, lambda t: click.style(t, dim=True)).strip())
    else:
        click.echo(tree.text.strip())


@click.command("search")
@click.argument("prompt")
@click.option(
    "--strategy",
    "-s",
    default="best_of_n",
    show_default=True,
    help=", ".join(STRATEGIES) + ".",
)
@click.option(
    "--scorer",
    default="judge",
    show_default=True,
    help="judge, logprob, novelty, contains:W1,W2, regex:PATTERN, py:MODULE:FUNC, "
    "0.7*judge+0.3*novelty, rank:judge+logprob.",
)
@click.option("--judge-template", default=None, help="Judge prompt with {task} and {text} (for judge scorers).")
@click.option(
    "--budget",
    type=int,
    default=None,
    help=f"Generated tokens, every model call included [default: {DEFAULT_BUDGET_SAMPLES} × max-tokens].",
)
@click.option("--wall-time", type=float, default=None, help="Seconds; checked between engine calls.")
@strategy_option_decls
@click.option("--option", "-o", "extra", multiple=True, help="Any other strategy option, KEY=VALUE (JSON value).")
@sampling_options
@engine_options
@island_options
@_output_options
@click.pass_context
def search(
    ctx: click.Context,
    prompt: str,
    strategy: str,
    scorer: str,
    judge_template: str | None,
    budget: int | None,
    wall_time: float | None,
    extra: tuple[str, ...],
    as_json: bool,
    show_tree: bool,
    save: str | None,
    progress: bool,
    **kw: Any,
) -> None:
    """Search for a better answer to PROMPT: generate variants, score, keep, merge, repeat.

    Every token the model generates (candidates, judge replies, syntheses) counts against
    --budget. The winner is printed; --tree shows every candidate, --json the whole tree.

    Tools (--tools) and grammars (--regex, --json-schema, --grammar) work in every
    strategy: each branch keeps its own tool history; identical calls run once.

    \b
    sazanami search "Write one sentence with: dog, ball, park." \\
        --strategy anneal --rounds 3 --n 8 --scorer contains:dog,ball,park --budget 1500 --seed 1
    sazanami search $'Q: Calculate 31 * 24.\\nA: CALC(31 * 24) => 744\\nQ: Calculate 17 * 23.\\nA:' \\
        --raw --tools calc --stop $'\\nQ:' --strategy noise_search --mode paths --scorer contains:391
    """
    n_given = ctx.get_parameter_source("n") not in (click.core.ParameterSource.DEFAULT, None)
    options = strategy_values(kw, kw["n"] if n_given else None)
    options.update(extra_values(extra))
    kw["n"] = 1
    island_kw = {k: kw.pop(k) for k in ISLAND_OPTIONS}
    params = params_from_options(kw)
    rows = options.get("n") or options.get("width") or SEARCH_ROWS
    engine = engine_from_options(
        kw["model"],
        kw.pop("prefix_cache"),
        kw.pop("backend"),
        rows,
        params.fluctuation,
        kw.pop("ray_replicas"),
        kw.pop("ray_address"),
    )
    islands = islands_from_options(island_kw, engine.tokenizer)
    scorer_obj = make_scorer(scorer)
    if judge_template is not None:
        scorer_obj = with_judge_template(scorer_obj, judge_template)
    tree = run_search(
        engine,
        prompt,
        strategy,
        scorer=scorer_obj,
        budget=search_budget(budget, params.max_tokens, wall_s=wall_time),
        params=params,
        seed=kw["seed"],
        raw=kw["raw"],
        progress=progress and not as_json,
        islands=islands,
        **options,
    )
    _print(tree, as_json, show_tree, save, engine)


# `-n` is SamplingParams.n elsewhere; here the strategy's (each candidate is one variant).
options_of(search)["n"].help = (
    "Candidates side by side, one engine call (default: as many as the budget pays for); "
    "beam: its width, tree: continuations per round, synthesize: its base's n."
)
options_of(search)["n"].show_default = False


@click.group("flow")
def flow() -> None:
    """Declarative searches: JSON or YAML files of steps (generate → score → select → ...)."""


@flow.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prompt", "-p", default=None, help="Override the flow's prompt.")
@click.option("--seed", type=int, default=None, help="Override the flow's seed.")
@click.option("--budget", type=int, default=None, help="Override the flow's token budget.")
@click.option("--model", "-m", default=None, help="Override the flow's model.")
@prefix_cache_option
@island_options
@_output_options
@backend_option
def flow_run(
    file: str,
    prompt: str | None,
    seed: int | None,
    budget: int | None,
    model: str | None,
    prefix_cache: bool,
    backend: str,
    as_json: bool,
    show_tree: bool,
    save: str | None,
    progress: bool,
    **island_kw: Any,
) -> None:
    """Run the flow in FILE and print the winner (or the tree); tools and grammars apply to every candidate.

    With --progress, each step prints a line on stderr when it starts and when it ends
    (candidates, tokens, best score).
    """

    f = Flow.load(file)
    engine = engine_from_options(model or f.model or DEFAULT_MODEL, prefix_cache, backend, SEARCH_ROWS)
    islands = islands_from_options(island_kw, engine.tokenizer)
    tree = f.run(engine, prompt, seed=seed, budget=budget, progress=progress and not as_json, islands=islands)
    _print(tree, as_json, show_tree, save, engine)


@flow.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def flow_check(file: str) -> None:
    """Parse and validate the flow in FILE without running it."""

    f = Flow.load(file)
    click.echo(f"{file}: flow {f.name!r}, {len(f.steps)} steps: " + " → ".join(s.kind for s in f.steps))
    for warning in f.check_budget(f.budget) if f.budget is not None else []:
        click.echo(f"warning: {warning['node']}: {warning['message']}")


@click.group("tree")
def tree() -> None:
    """Search trees saved as JSON (search --save, --json)."""


@tree.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--width", type=int, default=100, show_default=True, help="Characters of text per node.")
@click.option("--full", is_flag=True, help="Do not shorten texts.")
def tree_show(file: str, width: int, full: bool) -> None:
    """Print the tree in FILE, indented, with scores (★ winner, ✗ pruned, … partial)."""

    click.echo(Tree.load(file).render(width=width, full=full))
