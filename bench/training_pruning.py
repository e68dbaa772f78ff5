"""Pruning: held-out perplexity vs sparsity for the 1/f spectral score and two baselines.

SmolLM2-135M (the embedded model, float32). Calibration and held-out text: the Python
reference topics shipped with the standard library (``pydoc_data.topics``; even-numbered
topics calibrate, odd-numbered ones are held out), as windows of ``--window`` tokens.
For each score (spectral, activation, magnitude; in the bench also the controls ``random``,
seeded; ``spectral-high``, the spectral order reversed: the units furthest from white go
first; ``spectral-slope``, units ranked by β̂ itself, lowest (bluest) first, the order an
earlier version of the spectral score used) and sparsity, the same fraction of heads
and of MLP channels is zeroed in every layer, and the held-out perplexity is measured;
the 95 % interval is a bootstrap over held-out windows (resampling windows, 2000 draws,
seeded). Writes ``docs/training_pruning.json`` and ``docs/training_pruning.png``.

    nice -n 19 env OMP_NUM_THREADS=1 python bench/training_pruning.py --threads 1 --windows 8 --window 128 \
        --scores spectral activation magnitude random spectral-high spectral-slope
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from sazanami import models
from sazanami.training import checkpoints, pruning


def interval(nll: torch.Tensor, seed: int = 0, draws: int = 2000) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(nll), (draws, len(nll)), generator=gen)
    ppl = nll[idx].mean(1).exp().sort().values
    return float(ppl[int(0.025 * draws)]), float(ppl[int(0.975 * draws) - 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--scores", nargs="+", default=["spectral", "activation", "magnitude"])
    ap.add_argument("--out", default="docs/training_pruning.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = models.load(args.model, dtype="float32")
    net = checkpoints.trainable(backend).eval()
    dense = {k: v.clone() for k, v in net.state_dict().items()}
    calib = pruning.text_windows(backend.tokenizer, "calibration", args.window)[: args.windows]
    held = pruning.text_windows(backend.tokenizer, "heldout", args.window)[: args.windows]
    t0 = time.time()
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []  # rerun: only what is missing
    if not any(r["score"] == "dense" for r in rows):
        nll = pruning.window_nll(net, held)
        rows.append(
            {
                "score": "dense",
                "sparsity": 0.0,
                "ppl": math.exp(float(nll.mean())),
                "ci": interval(nll),
                "nll": nll.tolist(),
            }
        )
        print(f"dense: ppl {rows[-1]['ppl']:.2f} ({time.time() - t0:.0f} s)", flush=True)
    for score in args.scores:
        net.load_state_dict(dense)
        if score == "random":  # a floor: units chosen at random (seeded)
            gen = torch.Generator().manual_seed(0)
            scores = [
                pruning.UnitScores(torch.rand(len(s.heads), generator=gen), torch.rand(len(s.channels), generator=gen))
                for s in pruning.score_units(net, None, "magnitude")
            ]
        elif score == "spectral-high":  # the spectral score reversed: the units furthest from white go first
            scores = [pruning.UnitScores(-s.heads, -s.channels) for s in pruning.score_units(net, calib, "spectral")]
        elif score == "spectral-slope":  # β̂ itself: the bluest units go first (the earlier spectral score)
            scores = pruning.spectral_slopes(net, calib)
        else:
            scores = pruning.score_units(net, calib, score)
        for s in args.sparsities:
            if any(r["score"] == score and r["sparsity"] == s for r in rows):
                continue
            net.load_state_dict(dense)
            removed = pruning.prune(net, scores, s)
            nll = pruning.window_nll(net, held)
            heads, chans = removed.counts()
            rows.append(
                {
                    "score": score,
                    "sparsity": s,
                    "ppl": math.exp(float(nll.mean())),
                    "ci": interval(nll),
                    "heads": heads,
                    "channels": chans,
                    "nll": nll.tolist(),
                }
            )
            print(
                f"{score:10s} {s:.1f}: ppl {rows[-1]['ppl']:.2f} {rows[-1]['ci']} heads {heads} channels {chans}"
                f" ({time.time() - t0:.0f} s)",
                flush=True,
            )
            Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    plot(rows, Path(args.out).with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    dense = next(r for r in rows if r["score"] == "dense")
    for score in sorted({r["score"] for r in rows} - {"dense"}):
        rs = [dense] + sorted((r for r in rows if r["score"] == score), key=lambda r: r["sparsity"])
        x = [r["sparsity"] for r in rs]
        y = [r["ppl"] for r in rs]
        lo = [r["ppl"] - r["ci"][0] for r in rs]
        hi = [r["ci"][1] - r["ppl"] for r in rs]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=score)
    ax.set_yscale("log")
    ax.set_xlabel("fraction of heads and MLP channels removed per layer")
    ax.set_ylabel("held-out perplexity (log)")
    ax.set_title("SmolLM2-135M structured pruning (pydoc_data text)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
