"""The ``sazanami`` command line. Thin layer over the Python API.

One module per command group (generate, noise, models, search, serve, bench); their options
are derived from the objects that own them in :mod:`sazanami.cli.options`. User mistakes
(``SazanamiError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from sazanami.cli.batch import batch
from sazanami.cli.bench import bench_group
from sazanami.cli.generate import generate
from sazanami.cli.models import models
from sazanami.cli.noise import noise
from sazanami.cli.options import PARAM_OPTIONS
from sazanami.cli.search import flow, search, tree
from sazanami.cli.serve import serve
from sazanami.errors import SazanamiError
from sazanami.research.noise_lm.commands import noise_lm
from sazanami.training.commands import prune, train

__all__ = ["PARAM_OPTIONS", "main"]


class _Group(click.Group):
    """Turns sazanami's own errors into one-line messages (no tracebacks)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SazanamiError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="sazanami")
def main() -> None:
    """sazanami (漣): noise as a seedable control signal for LLM generation, and search."""


for _command in (generate, models, noise, search, flow, tree, serve, bench_group, noise_lm, train, prune, batch):
    main.add_command(_command)
