"""``sazanami serve``: the HTTP API and playground under uvicorn.

Registered on the CLI group with ``main.add_command(serve)``.
"""

from __future__ import annotations

from typing import Any

import click

from sazanami.models import DEFAULT_MODEL
from sazanami.server.limits import Limits

_DEFAULTS = Limits()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Registry name or HF directory.")
@click.option(
    "--max-tokens", type=int, default=_DEFAULTS.max_tokens, show_default=True, help="New tokens per variant at most."
)
@click.option("--max-n", type=int, default=_DEFAULTS.max_n, show_default=True, help="Variants per prompt at most.")
@click.option(
    "--max-search-budget",
    type=int,
    default=_DEFAULTS.max_search_budget,
    show_default=True,
    help="Tokens one search may spend at most.",
)
@click.option(
    "--max-concurrent",
    type=int,
    default=_DEFAULTS.max_concurrent,
    show_default=True,
    help="Requests generating at once.",
)
@click.option(
    "--max-queue", type=int, default=_DEFAULTS.max_queue, show_default=True, help="Requests waiting; one more gets 503."
)
@click.option(
    "--max-batch-rows",
    type=int,
    default=_DEFAULTS.max_batch_rows,
    show_default=True,
    help="Rows in one engine batch at most.",
)
@click.option(
    "--cohorts",
    type=int,
    default=_DEFAULTS.cohorts,
    show_default=True,
    help="Engine batches interleaved step by step (1 = new requests wait for the running batch).",
)
@click.option(
    "--max-search-seconds",
    type=float,
    default=_DEFAULTS.max_search_seconds,
    show_default=True,
    help="Wall time of one search at most (then its best so far, or 504 if an engine call is cut).",
)
@click.option(
    "--batch-invariant",
    is_flag=True,
    default=_DEFAULTS.batch_invariant,
    help="Run every request's rows in engine batches of their own: seeded tokens do not depend on the load.",
)
@click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="Torch CPU threads (0 = torch's default). On a CPU shared with other jobs, 1 can be much faster.",
)
@click.option(
    "--tools",
    default="calc",
    show_default=True,
    metavar="LIST",
    help="Tools requests may let the model call, comma-separated: calc, search, load ('' for none).",
)
@click.option(
    "--corpus", default=None, metavar="PATH", help="Documents for SEARCH/LOAD: a folder of .txt files or a JSONL file."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    host: str, port: int, model: str, threads: int, tools: str, corpus: str | None, log_level: str, **limits: Any
) -> None:
    """Serve MODEL over an OpenAI-compatible API, with the playground at http://HOST:PORT/.

    \b
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"messages": [{"role": "user", "content": "Hi"}], "n": 2, "fluctuation": "pink-temperature"}'
    """
    import torch
    import uvicorn

    from sazanami.server.app import create_app

    registry = tool_registry(tools, corpus)  # a bad list or corpus fails before the model loads
    if threads > 0:
        torch.set_num_threads(threads)
    app = create_app(model, Limits(**limits), tools=registry)
    click.echo(f"sazanami: serving {model} on http://{host}:{port}/ (API under /v1)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def tool_registry(names: str, corpus: str | None = None) -> Any:
    """The tools the server runs: built-in names, comma-separated; SEARCH/LOAD over ``corpus``; None for none."""
    from sazanami.errors import ParameterError
    from sazanami.islands import Corpus, builtin_tools

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        if corpus:
            raise ParameterError("corpus", "--corpus is for the search and load tools: add --tools calc,search,load")
        return None
    return builtin_tools(wanted, Corpus.load(corpus) if corpus else None)


if __name__ == "__main__":  # python -m sazanami.server.command (before `sazanami serve` is registered)
    serve()
