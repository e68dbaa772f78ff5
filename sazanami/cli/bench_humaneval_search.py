"""``sazanami bench humaneval-search``: Experiment 2 (:mod:`sazanami.bench.humaneval.search_run`).

The run's options come from :class:`~sazanami.bench.humaneval.search_run.SearchConfig`'s fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sazanami.bench.humaneval.search_run import ARMS, SearchConfig
from sazanami.cli.options import backend_option, dataclass_options
from sazanami.errors import ParameterError

DEFAULT_OUT = Path("bench") / "out" / "humaneval_search.jsonl"


def _search_options(fn: Any) -> Any:
    for option in reversed(dataclass_options(SearchConfig)):
        fn = option(fn)
    return fn


@click.command("humaneval-search")
@_search_options
@backend_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=str(DEFAULT_OUT),
    show_default=True,
    help="JSONL of graded searches; a rerun continues it (resumable).",
)
@click.option("--threads", type=int, default=None, help="llama.cpp threads (1 where other work shares the cores).")
@click.option(
    "--report",
    is_flag=True,
    help="Print the comparisons from --out, write NAME_summary.csv and NAME.png beside it, then exit.",
)
@click.option("--list-arms", is_flag=True, help="List the named arms, then exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-problem lines.")
def humaneval_search(
    out: str, threads: int | None, report: bool, list_arms: bool, quiet: bool, backend: str, **fields: Any
) -> None:
    """HumanEval Experiment 2: search strategies against best-of-n at equal cost.

    Candidates are scored by the prompt's own doctests (in the sandbox); each search's winner is
    graded by the hidden tests. Every finished candidate is graded too (how often the scorer
    picked a passing one when there was one).
    """
    from sazanami.bench.humaneval.search_run import run_search_arms

    if list_arms:
        for name, spec in ARMS.items():
            click.echo(f"{name:16} {spec}")
        return
    path = Path(out)
    if report:
        from sazanami.bench.humaneval.search_report import summary_text, write_plot, write_summary

        click.echo(summary_text(path))
        click.echo(f"summary: {write_summary(path)}")
        click.echo(f"plot: {write_plot(path)}")
        return
    arms = tuple(a.strip() for item in fields.pop("arms") for a in item.split(",") if a.strip())
    numbers = tuple(int(n) for item in fields.pop("problems") for n in str(item).split(",") if n.strip())
    config = SearchConfig(arms=arms or SearchConfig.arms, problems=numbers, **fields)
    if threads is not None and threads < 1:
        raise ParameterError("threads", f"threads must be in [1, inf), got {threads}")
    from sazanami.engines import EngineSpec

    engine = EngineSpec(config.model, backend, threads=threads).open(rows=8)
    done = run_search_arms(config, engine, path, progress=not quiet, log=None if quiet else click.echo)
    click.echo(f"{done} problems searched and graded; results in {path}")
