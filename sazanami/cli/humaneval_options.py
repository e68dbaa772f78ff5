"""What ``sazanami bench humaneval`` and ``sazanami bench humaneval-search`` share: the run's options
(from the config dataclass's fields), their comma-separated lists and opening the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from sazanami.cli.options import backend_option, dataclass_options
from sazanami.engine.loop import Engine
from sazanami.errors import check_int

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-problem lines.")
"""``--quiet``: no progress bar or per-problem lines."""


def run_options(config: type, out: Path, out_help: str) -> Callable[[Any], Any]:
    """Options of a run: one per field of the ``config`` dataclass, ``--backend``, ``--out``
    (default ``out``, described by ``out_help``) and ``--threads``, in that order."""
    options = [
        *dataclass_options(config),
        backend_option,
        click.option("--out", type=click.Path(dir_okay=False), default=str(out), show_default=True, help=out_help),
        click.option(
            "--threads", type=int, default=None, help="llama.cpp threads (1 where other work shares the cores)."
        ),
    ]

    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def task_numbers(items: Iterable[Any]) -> tuple[int, ...]:
    """The task numbers of a repeatable, comma-separated ``--problems``, blanks dropped."""
    return tuple(int(n) for item in items for n in str(item).split(",") if n.strip())


def open_engine(model: str, backend: str, threads: int | None, rows: int) -> Engine:
    """The run's engine (``threads`` llama.cpp threads, at least 1; None: its default) for ``rows`` rows."""
    if threads is not None:
        check_int("threads", threads, 1)
    from sazanami.engine.engine_spec import EngineSpec

    return EngineSpec(model, backend, threads=threads).open(rows=rows)
