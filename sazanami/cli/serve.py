"""``sazanami serve``: the HTTP API and playground under uvicorn.

Every :class:`~sazanami.server.limits.Limits` field is an option (derived in
:mod:`sazanami.cli.options`).
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from sazanami.cli.options import engine_from_options, engine_options, limits_options
from sazanami.errors import ParameterError
from sazanami.islands import Islands, ToolRegistry
from sazanami.models import DEFAULT_MODEL
from sazanami.server.limits import Limits
from sazanami.speculative.corpus import open_index


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Registry name, HF directory or .gguf file."
)
@limits_options
@engine_options
@click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="CPU threads: torch's (0 = torch's default) or llama.cpp's (0 = physical cores). "
    "On a CPU shared with other jobs, 1 can be much faster.",
)
@click.option(
    "--tools",
    default="calc",
    show_default=True,
    metavar="LIST",
    help="Tools requests may let the model call, comma-separated: calc, search, load, copy ('' for none).",
)
@click.option(
    "--corpus",
    default=None,
    metavar="PATH",
    help="Documents for SEARCH/LOAD/COPY: a folder of .txt files or a JSONL file.",
)
@click.option(
    "--speculative-index",
    "indexes",
    multiple=True,
    metavar="NAME=PATH",
    help="A corpus index (a `sazanami index` folder) that requests may draft from as speculative.corpus NAME; repeatable.",
)
@click.option(
    "--api-key",
    envvar="SAZANAMI_API_KEY",
    default=None,
    metavar="KEY",
    help="Require 'Authorization: Bearer KEY' on every /v1 route and /metrics (401 otherwise); "
    "/health and the pages stay open. Also read from $SAZANAMI_API_KEY.  [default: no key]",
)
@click.option(
    "--cors-origins",
    default=None,
    metavar="LIST",
    help="Browser origins allowed to call the API, comma-separated (e.g. https://a.example,https://b.example; "
    "* for any).  [default: none, no CORS headers]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    host: str,
    port: int,
    model: str,
    backend: str,
    threads: int,
    tools: str,
    corpus: str | None,
    indexes: tuple[str, ...],
    log_level: str,
    api_key: str | None,
    cors_origins: str | None,
    ray_replicas: int,
    ray_address: str | None,
    **limits: int,
) -> None:
    """Serve MODEL over an OpenAI-compatible API, with the playground at http://HOST:PORT/.

    --backend auto picks for a full batch of --max-batch-rows rows (a server batches many):
    a model both backends run goes to torch unless that is below the measured crossover
    (see --help of generate), GGUF-only models to llama.cpp. /v1/sazanami says which runs.

    \b
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"messages": [{"role": "user", "content": "Hi"}], "n": 2, "fluctuation": "pink-temperature"}'
    """
    import uvicorn  # the web stack loads only when serving

    from sazanami.server.app import create_app

    registry = tool_registry(tools, corpus)  # a bad list or corpus fails before the model loads
    named = index_names(indexes)
    if threads > 0:
        torch.set_num_threads(threads)
    limits_obj = Limits(**limits)
    engine = None  # torch / llama.cpp: create_app builds it (its prefix cache sized by the limits)
    if backend == "vllm" or ray_replicas:
        rows = limits_obj.max_batch_rows
        engine = engine_from_options(
            model, limits_obj.prefix_cache_mb > 0, backend, rows, None, ray_replicas, ray_address
        )
    origins = [o.strip() for o in cors_origins.split(",") if o.strip()] if cors_origins else None
    app = create_app(
        model,
        limits_obj,
        engine=engine,
        tools=registry,
        backend=backend,
        threads=threads or None,
        api_key=api_key or None,
        cors_origins=origins,
        indexes=named,
    )
    server = app.state.server
    for path in named.values():  # a stale index or one built for another tokenizer fails now, not per request
        open_index(path, server.engine.tokenizer)
    running = server.engine.backend.capabilities.backend
    gate = "; API key required" if api_key else ""
    click.echo(
        f"sazanami: serving {model} on {running} at http://{host}:{port}/ (API under /v1{gate}; "
        f"memory budget {server.memory_budget / 2**30:.2f} GiB)",
        err=True,
    )
    # A request body has --body-timeout seconds to arrive (408 after); an idle keep-alive
    # connection is closed after uvicorn's timeout_keep_alive (5 s).
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def tool_registry(names: str, corpus: str | None = None) -> ToolRegistry | None:
    """The tools the server runs: built-in names, comma-separated; SEARCH/LOAD/COPY over ``corpus``; None for none."""
    return Islands.from_dict({"tools": names, "corpus": corpus}).tools


def index_names(items: tuple[str, ...]) -> dict[str, str]:
    """``NAME=PATH`` pairs (``--speculative-index``) as a dict; each PATH must be a folder."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ParameterError("speculative-index", f"--speculative-index takes NAME=PATH, got {item!r}")
        if not Path(path).is_dir():
            raise ParameterError("speculative-index", f"--speculative-index {name}: no index folder at {path!r}")
        out[name.strip()] = path.strip()
    return out
