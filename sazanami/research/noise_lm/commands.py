"""``sazanami noise-lm``: train the seed-003 model on stdlib docstrings, grow stubs, retrieve.

The engine's own commands run it too: ``sazanami generate --model noise-lm:DIR ...``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

import sazanami.research.noise_lm.corpus as corpus
from sazanami.cli.options import dataclass_options
from sazanami.research.noise_lm.config import NoiseLMConfig
from sazanami.research.noise_lm.model import NoiseLM


@click.group("noise-lm")
def noise_lm() -> None:
    """The noise-embedding language model of seed 003 (research; docs/NOISE_LM.md)."""


def _config_options(fn):  # noqa: ANN001, ANN202 - a click decorator
    for option in reversed(dataclass_options(NoiseLMConfig)):
        fn = option(fn)
    return fn


@noise_lm.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--docs", type=click.IntRange(1), default=None, help="Train on the first N training documents only.")
@click.option("--vocab", type=click.IntRange(8), default=2000, show_default=True, help="Vocabulary size (words).")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the train/dev/test split.")
@click.option(
    "--calibrate/--no-calibrate", default=True, show_default=True, help="Fit temperature and floor on the dev split."
)
@_config_options
def train(directory: Path, docs: int | None, vocab: int, split_seed: int, calibrate: bool, **config: object) -> None:
    """Train on the standard library's docstrings and save to DIRECTORY."""
    tr, dev, _ = corpus.split(corpus.stdlib_docstrings(), split_seed)
    tr = tr[:docs] if docs else tr
    t0 = time.perf_counter()
    model = NoiseLM.train(tr, NoiseLMConfig(**config), vocab_size=vocab)  # type: ignore[arg-type]
    if calibrate and dev:
        model = model.calibrate(dev, limit=2000)
    model.save(directory)
    click.echo(
        f"trained on {len(tr)} documents in {time.perf_counter() - t0:.1f} s: {model.parameters():,} learned numbers, "
        f"temperature {model.config.temperature:.3g}, floor {model.config.floor:g} → {directory}"
    )


@noise_lm.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("prompt")
@click.option("--width", type=click.IntRange(1, 64), default=4, show_default=True, help="Stubs kept per step.")
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True, help="Longest stub.")
@click.option("--seed", type=int, default=None, help="Sample stubs (Gumbel) with this seed; default: beam.")
@click.option(
    "--nearest",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Also show this many nearest training sentences.",
)
def generate(directory: Path, prompt: str, width: int, max_tokens: int, seed: int | None, nearest: int) -> None:
    """Grow output stubs after PROMPT and print them, most plausible first."""
    model = NoiseLM.load(directory)
    for text, score in model.stubs(prompt, width=width, max_tokens=max_tokens, seed=seed):
        click.echo(f"{score:8.3f}  {text}")
    for text, dist in model.nearest_sentences(prompt, nearest) if nearest else []:
        click.echo(f"nearest {dist:8.2f}  {text}")
