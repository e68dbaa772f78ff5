"""``sazanami models``: the models sazanami can load and where they are cached."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from sazanami.models import available, cache_dir


@click.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """List the models sazanami can load and where they are cached."""
    infos = available()
    if as_json:
        click.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    click.echo(f"cache: {cache_dir()}")
    for i in infos:
        mark = "ready" if i.ready else "missing"
        click.echo(f"{i.name:14} {mark:8} {i.description}\n{'':24}{i.location}")
        click.echo(f"{'':24}backends: {', '.join(i.backends) or 'none installed'}")
        if i.terms:
            click.echo(f"{'':24}{i.terms}")
