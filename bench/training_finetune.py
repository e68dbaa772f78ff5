"""Fine-tuning the embedded model on a reasoning-gym family: baseline vs the fluctuations.

Each (method, seed) runs the training loop behind ``sazanami train``
(:class:`sazanami.training.trainer._Run`, step for step) without writing checkpoints or
the model (a run's checkpoint is ~1.6 GB; ``sazanami train`` itself writes both). The seed
sets the train split, the held-out split (generated with a seed derived from it, questions
seen in training removed), the data order and the noise, so every method of one seed sees
the same data and the same held-out questions: per-example comparisons are paired. Per
held-out example the run records greedy exact match (teacher-forced, see the trainer) and
the mean NLL of the answer tokens (its end token included); the untrained model is
measured on each seed's split first. Writes ``--out`` after every run (resumable: finished
runs are skipped). Summaries and intervals: ``bench/training_plots.py``.

    nice -n 19 env OMP_NUM_THREADS=1 python bench/training_finetune.py --threads 1 --steps 10 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sazanami.training.colors import Color
from sazanami.training.trainer import TrainConfig, _Run

METHODS = {
    "baseline": {},
    "neftune": {"embed_noise": Color(0.0, 5.0)},
    "pink-embed": {"embed_noise": Color(1.0, 5.0)},
    "pink-lr": {"lr_noise": Color(1.0, 0.3)},
    "pink-grad": {"grad_noise": Color(1.0, 1e-8)},
}


def record(run: _Run) -> dict:
    hits, nll = run.evaluate_examples()
    return {
        "hits": [int(h) for h in hits],
        "nll": [round(float(x), 5) for x in nll],
        "accuracy": float(hits.float().mean()),
        "mean_nll": float(nll.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="letter_counting")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train-size", type=int, default=200)
    ap.add_argument("--test-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default="docs/training_finetune.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"base": {}, "runs": []}
    report["args"] = vars(args)
    common = dict(
        task=args.task,
        model=args.model,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        warmup=min(2, args.steps),
        train_size=args.train_size,
        test_size=args.test_size,
        max_len=args.max_len,
        checkpoint_every=0,
        eval_batch=16,
    )
    done = {(r["method"], r["seed"]) for r in report["runs"]}
    for seed in args.seeds:
        if str(seed) not in report["base"]:  # the untrained model on this seed's held-out split
            t0 = time.time()
            report["base"][str(seed)] = {
                **record(_Run(TrainConfig(seed=seed, **common))),
                "seconds": round(time.time() - t0),
            }
            out.write_text(json.dumps(report, indent=1))
            print(
                f"base model seed {seed}: {report['base'][str(seed)]['accuracy']:.3f} ({time.time() - t0:.0f} s)",
                flush=True,
            )
        for method in args.methods:
            if (method, seed) in done:
                continue
            t0 = time.time()
            run = _Run(TrainConfig(seed=seed, **common, **METHODS[method]))
            while run.step < run.cfg.steps:
                run.train_step()
            rec = record(run)
            report["runs"].append(
                {
                    "method": method,
                    "seed": seed,
                    **rec,
                    "n": len(rec["hits"]),
                    "losses": [round(h["loss"], 4) for h in run.history],
                    "seconds": round(time.time() - t0),
                }
            )
            out.write_text(json.dumps(report, indent=1))
            print(
                f"{method:10s} seed {seed}: exact {rec['accuracy']:.3f}, answer NLL {rec['mean_nll']:.3f}"
                f" ({time.time() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
