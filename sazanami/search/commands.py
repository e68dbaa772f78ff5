"""Click commands for search: ``search``, ``flow run|check`` and ``tree show``.

They are plain click objects; ``sazanami/cli.py`` registers them with
``main.add_command(...)``. Errors are :class:`~sazanami.errors.SazanamiError` and become
one-line messages in the ``sazanami`` group.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sazanami.cli import params_from_options, sampling_options
from sazanami.errors import ParameterError
from sazanami.islands.cli_options import ISLAND_OPTIONS, highlight, island_options, islands_from_options

__all__ = ["flow", "search", "tree"]

_STRATEGY_OPTIONS = (
    "rounds",
    "keep",
    "mode",
    "similarity",
    "schedule",
    "t_hot",
    "t_cold",
    "width",
    "chunk",
    "branch",
    "expand",
    "margin",
    "k",
    "base",
    "selector",
    "init",
)


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


def _print(tree: Any, as_json: bool, show_tree: bool, save: str | None) -> None:
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


def _schedule(value: str | None) -> Any:
    if value is None or value in ("linear", "geometric"):
        return value
    try:
        return [float(x) for x in value.split(",")]
    except ValueError as exc:
        raise ParameterError(
            "schedule", f"schedule must be linear, geometric or a comma list of temperatures, got {value!r}"
        ) from exc


def _extra(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError("option", f"--option takes KEY=VALUE, got {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


@click.command("search")
@click.argument("prompt")
@click.option(
    "--strategy",
    "-s",
    default="best_of_n",
    show_default=True,
    help="best_of_n, anneal, noise_search, beam, tree, optimize or synthesize.",
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
    "--budget", type=int, default=None, help="Generated tokens, every model call included [default: 16 × max-tokens]."
)
@click.option("--wall-time", type=float, default=None, help="Seconds; checked between engine calls.")
@click.option("--rounds", type=int, default=None, help="Rounds (anneal, noise_search, beam, optimize).")
@click.option(
    "--keep", type=int, default=None, help="Winners carried to the next round / children kept per parent (tree)."
)
@click.option("--mode", type=click.Choice(["random", "zero-order", "paths"]), default=None, help="noise_search mode.")
@click.option("--similarity", type=float, default=None, help="Cosine similarity of zero-order neighbours (0.95).")
@click.option("--schedule", default=None, help="anneal: linear, geometric or a comma list of temperatures.")
@click.option("--t-hot", type=float, default=None, help="anneal: first round's temperature (1.2).")
@click.option("--t-cold", type=float, default=None, help="anneal: last round's temperature (0.5).")
@click.option("--width", type=int, default=None, help="beam width; tree frontier size.")
@click.option("--chunk", type=int, default=None, help="tree: tokens between checkpoints (16).")
@click.option("--branch", type=int, default=None, help="tree: continuations per expanded prefix (3).")
@click.option("--expand", type=int, default=None, help="tree: prefixes expanded per round (2).")
@click.option("--margin", type=float, default=None, help="tree: prune children this far below their parent.")
@click.option("--k", "k", type=int, default=None, help="synthesize: winners merged (3).")
@click.option("--base", default=None, help="synthesize: the strategy whose winners are merged (best_of_n).")
@click.option("--selector", type=click.Choice(["top-k", "mmr"]), default=None, help="How winners are picked.")
@click.option("--init", type=int, default=None, help="optimize: first drafts (default n).")
@click.option("--option", "-o", "extra", multiple=True, help="Any other strategy option, KEY=VALUE (JSON value).")
@sampling_options
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
    from sazanami.engine import Engine
    from sazanami.models import load
    from sazanami.search.budget import Budget
    from sazanami.search.scorer_specs import make_scorer, with_judge_template
    from sazanami.search.strategies import search as run_search

    n_given = ctx.get_parameter_source("n") not in (click.core.ParameterSource.DEFAULT, None)
    options: dict[str, Any] = {k: kw.pop(k) for k in _STRATEGY_OPTIONS if kw.get(k) is not None}
    for k in _STRATEGY_OPTIONS:
        kw.pop(k, None)
    if "schedule" in options:
        options["schedule"] = _schedule(options["schedule"])
    if n_given:
        options["n"] = kw["n"]
    options.update(_extra(extra))
    kw["n"] = 1
    island_kw = {k: kw.pop(k) for k in ISLAND_OPTIONS}
    params = params_from_options(kw)
    engine = Engine(load(kw["model"]))
    islands = islands_from_options(island_kw, engine.tokenizer)
    scorer_obj = make_scorer(scorer)
    if judge_template is not None:
        scorer_obj = with_judge_template(scorer_obj, judge_template)
    tree = run_search(
        engine,
        prompt,
        strategy,
        scorer=scorer_obj,
        budget=Budget(budget if budget is not None else 16 * params.max_tokens, wall_time),
        params=params,
        seed=kw["seed"],
        raw=kw["raw"],
        progress=progress and not as_json,
        islands=islands,
        **options,
    )
    _print(tree, as_json, show_tree, save)


# `-n` comes from the shared sampling options; the search docs also spell it `--n`.
for _param in search.params:
    if _param.name == "n" and isinstance(_param, click.Option):
        _param.opts.append("--n")
        _param.help = "Variants per round (default: as many as the budget pays for)."
        _param.show_default = False


@click.group("flow")
def flow() -> None:
    """Declarative searches: JSON or YAML files of steps (generate → score → select → ...)."""


@flow.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prompt", "-p", default=None, help="Override the flow's prompt.")
@click.option("--seed", type=int, default=None, help="Override the flow's seed.")
@click.option("--budget", type=int, default=None, help="Override the flow's token budget.")
@click.option("--model", "-m", default=None, help="Override the flow's model.")
@island_options
@_output_options
def flow_run(
    file: str,
    prompt: str | None,
    seed: int | None,
    budget: int | None,
    model: str | None,
    as_json: bool,
    show_tree: bool,
    save: str | None,
    progress: bool,
    **island_kw: Any,
) -> None:
    """Run the flow in FILE and print the winner (or the tree); tools and grammars apply to every candidate."""
    from sazanami.engine import Engine
    from sazanami.models import DEFAULT_MODEL, load
    from sazanami.search.flows import Flow

    f = Flow.load(file)
    engine = Engine(load(model or f.model or DEFAULT_MODEL))
    islands = islands_from_options(island_kw, engine.tokenizer)
    tree = f.run(engine, prompt, seed=seed, budget=budget, progress=progress and not as_json, islands=islands)
    _print(tree, as_json, show_tree, save)


@flow.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def flow_check(file: str) -> None:
    """Parse and validate the flow in FILE without running it."""
    from sazanami.search.flows import Flow

    f = Flow.load(file)
    click.echo(f"{file}: flow {f.name!r}, {len(f.steps)} steps: " + " → ".join(s.kind for s in f.steps))


@click.group("tree")
def tree() -> None:
    """Search trees saved as JSON (search --save, --json)."""


@tree.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--width", type=int, default=100, show_default=True, help="Characters of text per node.")
@click.option("--full", is_flag=True, help="Do not shorten texts.")
def tree_show(file: str, width: int, full: bool) -> None:
    """Print the tree in FILE, indented, with scores (★ winner, ✗ pruned, … partial)."""
    from sazanami.search.tree import Tree

    click.echo(Tree.load(file).render(width=width, full=full))
