"""``sazanami train`` and ``sazanami prune``: click commands over the training API.

The options of ``train`` are derived from :class:`~sazanami.training.trainer.TrainConfig`'s
fields and their docstrings (a new field becomes an option), as every option of the CLI is
(:func:`sazanami.cli.options.dataclass_options`). Both commands register with the CLI through
the ``sazanami.commands`` entry points of ``pyproject.toml`` (the CLI does not import them).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from sazanami.cli.options import dataclass_options
from sazanami.training.colors import Color
from sazanami.training.trainer import TrainConfig

__all__ = ["prune", "train"]

_COLOR_FIELDS = {"lr_noise", "grad_noise", "embed_noise"}


def _config_options(fn: Any) -> Any:
    """One ``--option`` per TrainConfig field except ``task`` (the argument), documented by its docstring."""
    for option in reversed(dataclass_options(TrainConfig, [f.name for f in dataclasses.fields(TrainConfig)][1:])):
        fn = option(fn)
    return fn


@click.command()
@click.argument("task")
@_config_options
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Output directory (model, checkpoint, metrics)."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(task: str, out: str, quiet: bool, **kw: Any) -> None:
    """Fine-tune a model on a reasoning-gym TASK family with colored fluctuations.

    \b
    Example:
      sazanami train letter_counting --model smollm2-135m --steps 100 \\
          --lr-noise pink:0.3 --embed-noise pink:5 --out runs/pink
    COLOR:SCALE takes white, pink, brown or a β in [0, 2]. A checkpoint is written every
    --checkpoint-every steps and on Ctrl-C; rerunning the same command resumes it. The
    result loads with `sazanami generate --model OUT`.
    """
    from sazanami.training.trainer import checkpoint_path
    from sazanami.training.trainer import train as run_train

    for name in _COLOR_FIELDS:
        if kw.get(name) is not None:
            kw[name] = Color.parse(kw[name], name.replace("_", "-"))
    cfg = TrainConfig(task=task, **kw)
    try:
        result = run_train(cfg, out, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; checkpoint in {checkpoint_path(out)} — rerun the same command to resume", err=True)
        sys.exit(130)
    note = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
    click.echo(f"trained {result.steps} steps{note}; final loss {result.loss:.4f}")
    click.echo(f"held-out exact match: {result.accuracy:.3f}")
    click.echo(f"model: {result.out} (load with --model {result.out})")


@click.command()
@click.option("--model", default="smollm2-135m", show_default=True, help="Model name or directory.")
@click.option(
    "--score",
    type=click.Choice(["spectral", "magnitude", "activation"]),
    default="spectral",
    show_default=True,
    help="Unit score: distance of the activation spectrum from white noise (|slope|; the whitest units go first), weight norm, or activation RMS.",
)
@click.option(
    "--sparsity",
    type=float,
    default=0.3,
    show_default=True,
    help="Fraction of heads and of MLP channels removed per layer, in [0, 1).",
)
@click.option(
    "--calib-windows", type=int, default=16, show_default=True, help="Calibration windows of --window tokens."
)
@click.option("--window", type=int, default=256, show_default=True, help="Tokens per calibration / evaluation window.")
@click.option(
    "--eval/--no-eval", "evaluate", default=True, show_default=True, help="Report held-out perplexity before and after."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory of the pruned model.")
def prune(model: str, score: str, sparsity: float, calib_windows: int, window: int, evaluate: bool, out: str) -> None:
    """Prune attention heads and MLP channels by a 1/f spectral score or a baseline.

    Calibration and held-out text: the Python reference topics shipped with the standard
    library (pydoc_data), even- and odd-numbered topics respectively.
    """
    from sazanami import models
    from sazanami.training import checkpoints, pruning

    backend = models.load(model, dtype="float32")
    net = checkpoints.trainable(backend)
    net.eval()
    calib = pruning.text_windows(backend.tokenizer, "calibration", window)[:calib_windows]
    held = pruning.text_windows(backend.tokenizer, "heldout", window)[:calib_windows] if evaluate else None
    before = pruning.perplexity(net, held) if held is not None else None
    scores = pruning.score_units(net, calib, score)
    removed = pruning.prune(net, scores, sparsity)
    after = pruning.perplexity(net, held) if held is not None else None
    checkpoints.save_model(net, backend.tokenizer, out)
    heads, chans = removed.counts()
    report = {
        "model": model,
        "score": score,
        "sparsity": sparsity,
        "heads_removed": heads,
        "channels_removed": chans,
        "perplexity_before": before,
        "perplexity_after": after,
        "removed": dataclasses.asdict(removed),
    }
    (Path(out) / "pruning.json").write_text(json.dumps(report))
    click.echo(f"removed {heads} heads and {chans} MLP channels ({score}, sparsity {sparsity:g})")
    if before is not None:
        click.echo(f"held-out perplexity: {before:.3f} -> {after:.3f}")
    click.echo(f"model: {out}")
