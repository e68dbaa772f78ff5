"""``sazanami index``: a corpus index for speculative decoding's ``corpus`` drafts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from sazanami.models import BACKENDS, DEFAULT_MODEL, load
from sazanami.speculative.corpus import SHARD, build_index


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="The index folder to write.")
@click.option(
    "--model",
    "-m",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Whose tokenizer: registry name, HF directory or .gguf.",
)
@click.option(
    "--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help="Which loader reads the model."
)
@click.option(
    "--shard", type=click.IntRange(1), default=SHARD, show_default=True, help="Positions sorted in memory at once."
)
@click.option("--json", "as_json", is_flag=True, help="Print the index's header as JSON.")
def index(files: tuple[Path, ...], output: Path, model: str, backend: str, shard: int, as_json: bool) -> None:
    """Index FILES (files or folders) for speculative drafts: a suffix array over their tokens.

    Generate with it through --speculative corpus=OUTPUT (or {"sources": ["corpus"],
    "corpus": OUTPUT}); an index works with the models whose tokenizer has the same
    vocabulary (its hash is in the header) and is refused by name for any other.
    """
    tokenizer = load(model, backend=backend).tokenizer
    start = time.perf_counter()
    header = build_index(list(files), output, tokenizer, shard=shard)
    if as_json:
        click.echo(json.dumps(header.to_dict() | {"path": str(output)}, indent=1))
        return
    took = time.perf_counter() - start
    click.echo(f"{output}: {len(header.documents)} documents, {header.tokens} tokens, {took:.1f}s")
