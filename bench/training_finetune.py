"""Fine-tuning the embedded model on a reasoning-gym family: baseline vs the fluctuations.

Each (method, seed) is one ``sazanami train`` run (:func:`sazanami.training.trainer.train`)
into ``--root/METHOD-sSEED``; the held-out split is generated with another seed and the
accuracy is greedy exact match (teacher-forced, see the trainer's docstring). The base
model's accuracy on the same split is measured first. 95 % Wilson intervals per run.
Writes ``docs/training_finetune.json``.

    OMP_NUM_THREADS=1 nice -n 19 python bench/training_finetune.py --steps 12 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

from sazanami.training.colors import Color
from sazanami.training.trainer import TrainConfig, _Run, train

METHODS = {
    "baseline": {},
    "neftune": {"embed_noise": Color(0.0, 5.0)},
    "pink-embed": {"embed_noise": Color(1.0, 5.0)},
    "pink-lr": {"lr_noise": Color(1.0, 0.3)},
    "pink-grad": {"grad_noise": Color(1.0, 1e-8)},
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="letter_counting")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train-size", type=int, default=200)
    ap.add_argument("--test-size", type=int, default=60)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--root", default="/tmp/sazanami-finetune")
    ap.add_argument("--out", default="docs/training_finetune.json")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (model + checkpoint)")
    args = ap.parse_args()
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"runs": []}
    report["args"] = vars(args)
    common = dict(task=args.task, model=args.model, steps=args.steps, batch=args.batch, lr=args.lr,
                  warmup=min(2, args.steps), train_size=args.train_size, test_size=args.test_size,
                  max_len=args.max_len, checkpoint_every=0, eval_batch=8)
    if "base" not in report:
        t0 = time.time()
        run = _Run(TrainConfig(**common))
        acc = run.evaluate()
        n = len(run.test)
        report["base"] = {"accuracy": acc, "n": n, "ci": wilson(round(acc * n), n)}
        out.write_text(json.dumps(report, indent=1))
        print(f"base model: {acc:.3f} on {n} ({time.time() - t0:.0f} s)", flush=True)
    done = {(r["method"], r["seed"]) for r in report["runs"]}
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            t0 = time.time()
            cfg = TrainConfig(seed=seed, **common, **METHODS[method])
            res = train(cfg, Path(args.root) / f"{method}-s{seed}", progress=False)
            n = report["base"]["n"]
            report["runs"].append({"method": method, "seed": seed, "accuracy": res.accuracy, "n": n,
                                   "ci": wilson(round(res.accuracy * n), n), "final_loss": res.loss,
                                   "losses": [h["loss"] for h in res.history], "seconds": round(time.time() - t0)})
            out.write_text(json.dumps(report, indent=1))
            if not args.keep and (method, seed) != (args.methods[0], args.seeds[0]):  # the checkpoint (weights + Adam state) is ~1.6 GB per run
                shutil.rmtree(Path(args.root) / f"{method}-s{seed}", ignore_errors=True)
            print(f"{method:10s} seed {seed}: {res.accuracy:.3f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
