"""``sazanami bench humaneval``: thin layer over :mod:`sazanami.bench.humaneval` (registered in :mod:`.bench`).

The run's options come from :class:`~sazanami.bench.humaneval.run.HumanEvalConfig`'s fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sazanami.bench.humaneval.run import SETTINGS, HumanEvalConfig
from sazanami.cli.options import backend_option, dataclass_options
from sazanami.errors import ParameterError

DEFAULT_OUT = Path("bench") / "out" / "humaneval.jsonl"


def _humaneval_options(fn: Any) -> Any:
    for option in reversed(dataclass_options(HumanEvalConfig)):
        fn = option(fn)
    return fn


@click.command("humaneval")
@_humaneval_options
@backend_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=str(DEFAULT_OUT),
    show_default=True,
    help="JSONL of graded samples; a rerun continues it (resumable).",
)
@click.option("--threads", type=int, default=None, help="llama.cpp threads (1 where other work shares the cores).")
@click.option(
    "--canonical",
    is_flag=True,
    help="Grade the reference solutions (expect 164/164) and empty bodies (expect 0/164) in the sandbox, then exit.",
)
@click.option(
    "--report",
    is_flag=True,
    help="Print pass@k per setting and the frontier gains from --out, write NAME_summary.csv and NAME.png beside it, then exit.",
)
@click.option("--list-settings", is_flag=True, help="List the named settings, then exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-problem lines.")
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

    Each problem's prompt is completed raw (stop at the next top-level statement); samples are
    graded by the hidden tests in a child process (rlimits, deadline, no network, unprivileged).
    """
    from sazanami.bench import humaneval as he

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
        from sazanami.bench.humaneval.report import summary_text, write_outputs

        click.echo(summary_text(path))
        for key, where in write_outputs(path, path.parent).items():
            click.echo(f"{key}: {where}")
        return
    settings = tuple(s.strip() for item in fields.pop("settings") for s in item.split(",") if s.strip())
    numbers = tuple(int(n) for item in fields.pop("problems") for n in str(item).split(",") if n.strip())
    config = HumanEvalConfig(settings=settings or HumanEvalConfig.settings, problems=numbers, **fields)
    if threads is not None and threads < 1:
        raise ParameterError("threads", f"threads must be in [1, inf), got {threads}")
    from sazanami.engines import EngineSpec

    engine = EngineSpec(config.model, backend, threads=threads).open(rows=config.samples * len(config.settings))
    done = he.run_humaneval(config, engine, path, progress=not quiet, log=None if quiet else click.echo)
    click.echo(f"{done} problems generated and graded; results in {path}")
