"""``sazanami batch``: generate or search over a JSONL file of prompts, resumably.

Each input line is ``{"id": ..., "prompt": ...}`` (``id`` defaults to the line number). Each
output line is one prompt's result, written and flushed as soon as it is done; a rerun skips
the ids already in the output (a torn last line from a crash is dropped), so a killed batch
resumes where it stopped. A prompt's seed is ``derive_seed(seed, id)``: its result does not
depend on which other prompts ran with it, on the chunking, on the prefix cache or on the
replicas — bit for bit on torch (every position is computed in the same shapes), on llama.cpp
with one thread (docs/guide/engine.md, *Prefix cache*), so a resumed file equals an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from sazanami.cli.options import (
    engine_from_options,
    engine_options,
    extra_values,
    params_from_options,
    sampling_options,
)
from sazanami.errors import ParameterError
from sazanami.search.budget import DEFAULT_BUDGET_SAMPLES, search_budget
from sazanami.search.scorer_specs import make_scorer
from sazanami.search.strategies import STRATEGIES, search
from sazanami.seeds import derive_seed, seed_or_fresh


def read_prompts(path: str) -> list[dict[str, Any]]:
    """The input lines as ``{"id", "prompt"}`` dicts (ids must be unique)."""
    out, ids = [], set()
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ParameterError("prompts", f"{path}:{i + 1} is not JSON: {exc}") from exc
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ParameterError("prompts", f'{path}:{i + 1} must be an object with a "prompt" string')
        item.setdefault("id", i)
        if item["id"] in ids:
            raise ParameterError("prompts", f"{path}:{i + 1} repeats id {item['id']!r}")
        ids.add(item["id"])
        out.append(item)
    return out


def read_done(path: Path) -> tuple[set[Any], int | None]:
    """Ids already in the output and the seed they used; a torn last line is cut off the file."""
    if not path.exists():
        return set(), None
    done, seed, good = set(), None, 0
    with path.open("rb") as f:
        for raw in f:
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                break
            done.add(item["id"])
            seed = item.get("batch_seed", seed)
            good += len(raw)
    if good < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good)
    return done, seed


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@click.command("batch")
@click.argument("prompts", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-O", "out_path", required=True, type=click.Path(dir_okay=False), help="Results (JSONL).")
@click.option(
    "--strategy",
    "-s",
    default=None,
    help="Search each prompt with this strategy (" + ", ".join(STRATEGIES) + "); default: generate.",
)
@click.option("--scorer", default="judge", show_default=True, help="Scorer spec for --strategy.")
@click.option(
    "--budget",
    type=int,
    default=None,
    help=f"Search budget in tokens  [default: {DEFAULT_BUDGET_SAMPLES} × max-tokens]",
)
@click.option("--option", "-o", "extra", multiple=True, help="A strategy option, KEY=VALUE (JSON value).")
@click.option("--chunk", type=int, default=8, show_default=True, help="Prompts per engine call (generate).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@sampling_options
@engine_options
def batch(
    prompts: str,
    out_path: str,
    strategy: str | None,
    scorer: str,
    budget: int | None,
    extra: tuple[str, ...],
    chunk: int,
    progress: bool,
    **kw: Any,
) -> None:
    """Generate (or --strategy search) for every prompt in PROMPTS (JSONL), writing --out (JSONL).

    \b
    sazanami batch prompts.jsonl --out results.jsonl -n 4 --fluctuation pink-draw --seed 1
    sazanami batch prompts.jsonl --out best.jsonl --strategy best_of_n --scorer contains:dog \\
        --ray-replicas 2
    """
    if chunk < 1:
        raise ParameterError("chunk", f"chunk must be an integer in [1, inf), got {chunk}")
    items = read_prompts(prompts)
    out = Path(out_path)
    done, old_seed = read_done(out)
    seed = seed_or_fresh(kw["seed"], old_seed)
    if old_seed is not None and seed != old_seed:
        raise ParameterError("seed", f"{out} was written with seed {old_seed}; resume with it, got {seed}")
    todo = [item for item in items if item["id"] not in done]
    kw["seed"] = seed
    params = params_from_options(kw)
    if not todo:
        click.echo(f"sazanami: all {len(items)} prompts are done in {out}", err=True)
        return
    engine = engine_from_options(
        kw["model"],
        kw["prefix_cache"],
        kw["backend"],
        params.n,
        params.fluctuation,
        kw["ray_replicas"],
        kw["ray_address"],
    )
    from tqdm import tqdm

    bar = tqdm(total=len(items), initial=len(items) - len(todo), disable=not progress, unit="prompt")
    with out.open("a") as f:

        def write(item: dict[str, Any], result: dict[str, Any]) -> None:
            f.write(json.dumps({"id": item["id"], "prompt": item["prompt"], "batch_seed": seed} | result) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(1)

        if strategy is None:
            for group in _chunks(todo, chunk):
                rows, owners = [], []
                for item in group:
                    own = params.replace(seed=derive_seed(seed, item["id"]))
                    for r in engine.rows_for([item["prompt"]], own, kw["raw"]):
                        rows.append(r)
                        owners.append(item["id"])
                completions = engine.run(rows)
                for item in group:
                    mine = [c.to_dict() for c, o in zip(completions, owners) if o == item["id"]]
                    write(item, {"completions": mine})
        else:
            options = extra_values(extra)
            for item in todo:
                tree = search(
                    engine,
                    item["prompt"],
                    strategy,
                    scorer=make_scorer(scorer),
                    budget=search_budget(budget, params.max_tokens),
                    params=params.replace(n=1),
                    seed=derive_seed(seed, item["id"]),
                    raw=kw["raw"],
                    **options,
                )
                write(item, {"text": tree.text, "tree": tree.to_dict()})
    bar.close()
    if hasattr(engine, "shutdown"):
        engine.shutdown()  # Ray actors free their CPUs
