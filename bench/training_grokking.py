"""Grokking: steps to 95 % validation accuracy on modular addition, with and without fluctuations.

The Grokfast setting (Lee et al. 2024, arXiv:2405.20233; Power et al. 2022): a 2-layer
causal transformer (width 128, 4 heads) reads ``x ∘ y =`` and predicts (x + y) mod 97;
half of the 97² pairs train, half validate; Adam (lr 1e-3, β = (0.9, 0.98), L2 weight decay), batch 512,
10 warm-up steps (lr factor t/10, t = 0, 1, …, as in the paper's code). The blocks are the
paper's code's (``--block paper``): the residual stream continues from the *normalised* input,
x ← LN(x); x ← x + attn(x); x ← x + mlp(LN(x)). ``--block prenorm`` is the usual pre-norm
block (x ← x + attn(LN(x))), on which Grokfast-MA's recipe does not train. Methods:

- ``baseline``: weight decay 0 (the paper's baseline);
- ``ema``: Grokfast-EMA α = 0.98, λ = 2, weight decay 0.005 (the paper's recipe);
- ``ma``: Grokfast-MA window 100, λ = 5, weight decay 0.01 (the paper's recipe);
- ``lr``: baseline with a pink colored learning rate, σ = 0.5;
- ``gradnoise``: baseline with pink colored gradient noise, η = 1e-4, γ = 0.55;
- ``spectral``: baseline with the 1/f gain (β = 1, λ = 2, weight decay 0.005).

Runs stop at 95 % validation accuracy (all held-out pairs, every ``--eval-every`` steps) or
at ``--budget`` steps (then reported as censored: "> budget"). Train accuracy is the mean over
the training batches since the last evaluation, before each update (as in the paper's code).
Writes one JSON line per run to ``--out`` and skips runs already there (resumable).

    nice -n 19 env OMP_NUM_THREADS=1 python bench/training_grokking.py --threads 1 --seeds 0 1 2 \
        --methods ema ma --budget 2000 --out docs/training_grokking.jsonl
    nice -n 19 env OMP_NUM_THREADS=1 python bench/training_grokking.py --threads 1 --seeds 0 1 2 \
        --methods baseline lr gradnoise --budget 1000 --out docs/training_grokking.jsonl
    nice -n 19 env OMP_NUM_THREADS=1 python bench/training_grokking.py --threads 1 --seeds 0 1 2 \
        --methods baseline --budget 3000 --out docs/training_grokking_baseline3000.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sazanami.training import Color, ColoredGradientNoise, ColoredLR, GrokfastEMA, GrokfastMA, SpectralGain

METHODS = ("ema", "ma", "baseline", "lr", "gradnoise", "spectral")


class Block(nn.Module):
    """Pre-norm causal transformer block."""

    def __init__(self, dim: int, heads: int, prenorm: bool) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        if not self.prenorm:  # the paper's code: the residual stream restarts from LN(x) in every block
            x = h
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int, heads: int, seq: int, prenorm: bool = False) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(seq, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, prenorm) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)
        self.register_buffer("mask", torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T) → logits of the last position (B, V)
        T = x.shape[1]
        h = self.tok(x) + self.pos.weight[:T]
        for b in self.blocks:
            h = b(h, self.mask[:T, :T])
        return self.head(self.ln(h[:, -1]))


def data(p: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    seqs = torch.stack([x, torch.full_like(x, p + 1), y, torch.full_like(x, p)], 1)  # x ∘ y =  (N, 4)
    target = (x + y) % p
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n = int(frac * len(x))
    tr, va = perm[:n], perm[n:]
    return seqs[tr], target[tr], seqs[va], target[va]


def run(method: str, seed: int, args: argparse.Namespace) -> dict:
    xt, yt, xv, yv = data(args.p, args.frac, seed)
    with torch.random.fork_rng():  # nn.Module init draws from the global RNG; keep it contained
        torch.manual_seed(seed)
        model = Decoder(args.p + 2, args.dim, args.layers, args.heads, 4, args.block == "prenorm")
    wd = {"ema": 0.005, "ma": 0.01, "spectral": 0.005}.get(method, 0.0)
    # Adam with (coupled, L2) weight decay, as in the paper's code (torch.optim.Adam, not AdamW)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=wd)
    warm = lambda s: 1.0 if s > 10 else s / 10  # noqa: E731  (the paper's warm-up; step 0 has lr 0)
    if method == "lr":
        sched = ColoredLR(opt, Color(1.0, 0.5), seed=seed, base=warm, max_steps=args.budget)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warm)
    hook = {
        "ema": lambda: GrokfastEMA(model.parameters(), alpha=0.98, lamb=2.0),
        "ma": lambda: GrokfastMA(model.parameters(), window=100, lamb=5.0),
        "spectral": lambda: SpectralGain(model.parameters(), beta=1.0, lamb=2.0, max_steps=args.budget),
        "gradnoise": lambda: ColoredGradientNoise(model.parameters(), Color(1.0, 1e-4), seed=seed),
    }.get(method, lambda: None)()
    gen = torch.Generator().manual_seed(seed + 1)
    step, curve, reached, t0 = 0, [], None, time.time()
    hits, seen = 0, 0  # train accuracy over the batches since the last evaluation
    while step < args.budget and reached is None:
        perm = torch.randperm(len(xt), generator=gen)
        for idx in perm.split(args.batch):
            model.train()
            logits = model(xt[idx])  # (B, V)
            loss = F.cross_entropy(logits, yt[idx])
            hits += int((logits.argmax(-1) == yt[idx]).sum())
            seen += len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hook is not None:
                hook.step()
            opt.step()
            sched.step()
            step += 1
            if step % args.eval_every == 0 or step == args.budget:
                model.eval()
                with torch.no_grad():
                    va = (model(xv).argmax(-1) == yv).float().mean().item()
                curve.append((step, round(hits / seen, 4), round(va, 4), round(loss.item(), 4)))
                hits, seen = 0, 0
                if step % 500 == 0:
                    print(f"  {method} seed {seed} step {step}: val {va:.3f} ({time.time() - t0:.0f} s)", flush=True)
                if va >= 0.95:
                    reached = step
                    break
            if step >= args.budget:
                break
    return {
        "method": method,
        "seed": seed,
        "steps_to_95": reached,
        "budget": args.budget,
        "dim": args.dim,
        "block": args.block,
        "seconds": round(time.time() - t0, 1),
        "curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p", type=int, default=97)
    ap.add_argument("--frac", type=float, default=0.5)
    ap.add_argument("--dim", type=int, default=128, help="width (the paper: 128)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--budget", type=int, default=3000)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--block", choices=("paper", "prenorm"), default="paper", help="transformer block (module doc)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out", default="docs/training_grokking.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = set()
    if out.exists():  # resume: skip finished (method, seed) pairs
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["method"], r["seed"], r["budget"], r["dim"], r.get("block", "prenorm")))
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed, args.budget, args.dim, args.block) in done:
                continue
            r = run(method, seed, args)
            with out.open("a") as f:
                f.write(json.dumps(r) + "\n")
            s = r["steps_to_95"]
            print(
                f"{method:10s} seed {seed}: {'> ' + str(args.budget) if s is None else s} steps ({r['seconds']} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
