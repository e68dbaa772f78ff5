"""``sazanami bench humaneval``: thin layer over :mod:`sazanami.evals.humaneval` (registered in :mod:`.bench`).

The run's options come from :class:`~sazanami.evals.humaneval.run.HumanEvalConfig`'s fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sazanami.cli.humaneval_options import open_engine, quiet_option, run_options, task_numbers
from sazanami.cli.options import comma_list
from sazanami.evals.humaneval.run import SETTINGS, HumanEvalConfig, check_resumable

DEFAULT_OUT = Path("bench") / "out" / "humaneval.jsonl"


@click.command("humaneval")
@run_options(HumanEvalConfig, DEFAULT_OUT, "JSONL of graded samples; a rerun continues it (resumable).")
@click.option(
    "--canonical",
    is_flag=True,
    help="Grade the reference solutions (expect 164/164) and empty bodies (expect 0/164) in the sandbox, then exit.",
)
@click.option(
    "--report",
    is_flag=True,
    help="Print pass@k per setting and the frontier gains from --out, write NAME_summary.csv and NAME.png beside it (NAME: the file name without .jsonl), then exit.",
)
@click.option("--list-settings", is_flag=True, help="List the named settings, then exit.")
@quiet_option
def humaneval(
    out: str,
    threads: int | None,
    canonical: bool,
    report: bool,
    list_settings: bool,
    quiet: bool,
    backend: str,
    **fields: Any,
) -> None:
    """HumanEval pass@k of sampler settings on a real coder model, graded in a sandbox.

    With --format raw (the default) each problem's prompt is completed as plain text, stopping at
    the next top-level statement; with --format chat the model gets it in a user message under its
    own chat template and answers with the whole function in a code block, stopping at end of turn.
    Samples are graded by the hidden tests in a child process (rlimits, deadline, no network,
    unprivileged). A file's records all have one format: a rerun in another format is refused.
    """
    from sazanami.evals import humaneval as he

    if list_settings:
        for name, kw in SETTINGS.items():
            click.echo(f"{name:24} {kw}")
        return
    if canonical:
        problems = he.load_problems()
        ok = sum(he.grade(p, p.canonical_solution) for p in problems)
        empty = sum(he.grade(p, "    pass\n") for p in problems)
        click.echo(f"canonical solutions: {ok}/{len(problems)} pass")
        click.echo(f"empty bodies:        {empty}/{len(problems)} pass")
        if ok != len(problems) or empty != 0:
            raise SystemExit(1)
        return
    path = Path(out)
    if report:
        from sazanami.evals.humaneval.report import summary_text, write_outputs

        click.echo(summary_text(path))
        for key, where in write_outputs(path, path.parent, name=path.stem).items():
            click.echo(f"{key}: {where}")
        return
    settings = comma_list(fields.pop("settings")) or HumanEvalConfig.settings
    config = HumanEvalConfig(settings=settings, problems=task_numbers(fields.pop("problems")), **fields)
    check_resumable(config, path)  # before the model loads: a refused run costs nothing
    engine = open_engine(config.model, backend, threads, rows=config.samples * len(config.settings))
    done = he.run_humaneval(config, engine, path, progress=not quiet, log=None if quiet else click.echo)
    click.echo(f"{done} problems generated and graded; results in {path}")
