"""``sazanami bench humaneval-search``: Experiment 2 (:mod:`sazanami.evals.humaneval.search_run`).

The run's options come from :class:`~sazanami.evals.humaneval.search_run.SearchConfig`'s fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sazanami.cli.humaneval_options import open_engine, quiet_option, run_options, task_numbers
from sazanami.cli.options import comma_list
from sazanami.evals.humaneval.search_run import ARMS, SearchConfig

DEFAULT_OUT = Path("bench") / "out" / "humaneval_search.jsonl"


@click.command("humaneval-search")
@run_options(SearchConfig, DEFAULT_OUT, "JSONL of graded searches; a rerun continues it (resumable).")
@click.option(
    "--report",
    is_flag=True,
    help="Print the comparisons from --out, write NAME_summary.csv and NAME.png beside it, then exit.",
)
@click.option("--list-arms", is_flag=True, help="List the named arms, then exit.")
@quiet_option
def humaneval_search(
    out: str, threads: int | None, report: bool, list_arms: bool, quiet: bool, backend: str, **fields: Any
) -> None:
    """HumanEval Experiment 2: search strategies against best-of-n at equal cost.

    Candidates are scored by the prompt's own doctests (in the sandbox); each search's winner is
    graded by the hidden tests. Every finished candidate is graded too (how often the scorer
    picked a passing one when there was one).
    """
    from sazanami.evals.humaneval.search_run import run_search_arms

    if list_arms:
        for name, spec in ARMS.items():
            click.echo(f"{name:16} {spec}")
        return
    path = Path(out)
    if report:
        from sazanami.evals.humaneval.search_report import summary_text, write_plot, write_summary

        click.echo(summary_text(path))
        click.echo(f"summary: {write_summary(path)}")
        click.echo(f"plot: {write_plot(path)}")
        return
    arms = comma_list(fields.pop("arms")) or SearchConfig.arms
    config = SearchConfig(arms=arms, problems=task_numbers(fields.pop("problems")), **fields)
    engine = open_engine(config.model, backend, threads, rows=8)
    done = run_search_arms(config, engine, path, progress=not quiet, log=None if quiet else click.echo)
    click.echo(f"{done} problems searched and graded; results in {path}")
