"""The ``sazanami`` command line. Thin layer over the Python API.

One module per command group (generate, noise, models, search, serve, bench); their options
are derived from the objects that own them in :mod:`sazanami.cli.options`. User mistakes
(``SazanamiError``) become one line on stderr and exit code 2.

Commands that live outside the CLI (``train`` and ``prune`` from training, research's
``noise-lm``) register themselves: a package
names its click command under the ``sazanami.commands`` entry-point group of its
``pyproject.toml``, and ``sazanami`` adds every one it finds the first time it lists or looks
up a command — the CLI imports none of them, so they may import :mod:`sazanami.cli.options`
(an import of theirs from here would be a cycle: importing them alone would fail).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import click

from sazanami.cli.batch import batch
from sazanami.cli.bench import bench_group
from sazanami.cli.generate import generate
from sazanami.cli.index import index
from sazanami.cli.models import models
from sazanami.cli.noise import noise
from sazanami.cli.options import PARAM_OPTIONS
from sazanami.cli.search import flow, search, tree
from sazanami.cli.serve import serve
from sazanami.errors import SazanamiError

__all__ = ["COMMANDS_GROUP", "PARAM_OPTIONS", "main"]

COMMANDS_GROUP = "sazanami.commands"
"""Entry-point group of the commands other packages register (name → a click command)."""


class _Group(click.Group):
    """Turns sazanami's own errors into one-line messages (no tracebacks), and adds the
    registered commands (:data:`COMMANDS_GROUP`) the first time any command is wanted."""

    _registered = False

    def _add_registered(self) -> None:
        if self._registered:
            return
        self._registered = True
        for entry in entry_points(group=COMMANDS_GROUP):
            if entry.name not in self.commands:
                self.add_command(entry.load(), entry.name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_registered()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_registered()
        return super().get_command(ctx, cmd_name)

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


for _command in (generate, models, noise, search, flow, tree, serve, bench_group, batch, index):
    main.add_command(_command)
