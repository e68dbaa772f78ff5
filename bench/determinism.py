"""How often does a seeded request's text change when other requests run beside it?

    python bench/determinism.py [--model smollm2-135m] [--trials 9] [--load 8]
                                [--modes default,batch_invariant] [--threads 1] [--json] [--check]

Runs the server in this process (uvicorn on a free loopback port) and, per mode:

1. sends the probe request alone — the reference text (per choice);
2. ``--trials`` times: starts ``--load`` other requests (other prompts and seeds, ``ignore_eos``,
   so they are still running), then sends the probe while they run, and compares its
   choices with the reference.

The probe is issue 14's reproducer: "Describe the sea in one sentence.", ``n=2``, ``seed=5``,
``temperature=0.8``, ``max_tokens=24``. Mode ``batch_invariant`` sets the request's
``batch_invariant: true`` (its rows run in engine batches of their own). Reported per mode:
trials whose text differed from the reference (the flip rate), and the first differing text.
``--check`` exits 1 unless ``batch_invariant`` flipped in no trial. Default run on the embedded
model: 2 × 9 trials of ≈ 9 concurrent requests — minutes on a small CPU; the load is local.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from typing import Any

PROBE = {
    "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
    "n": 2,
    "seed": 5,
    "temperature": 0.8,
    "max_tokens": 24,
}
LOAD_PROMPTS = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue.",
    "Give three tips for learning a language.",
    "Describe a busy market in the morning.",
    "Tell a tiny story about a lost cat.",
    "List some uses of bamboo.",
    "Why do leaves change color in autumn?",
    "What makes a good cup of tea?",
]


def post(url: str, body: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def texts(response: dict[str, Any]) -> list[str]:
    return [c["message"]["content"] for c in sorted(response["choices"], key=lambda c: c["index"])]


def run_mode(url: str, mode: str, trials: int, load: int, load_tokens: int) -> dict[str, Any]:
    path = f"{url}/v1/chat/completions"
    probe = PROBE | ({"batch_invariant": True} if mode == "batch_invariant" else {"batch_invariant": False})
    reference = texts(post(path, probe))
    flips, examples = 0, []
    for trial in range(trials):
        others = []
        for i in range(load):
            body = {
                "messages": [{"role": "user", "content": LOAD_PROMPTS[i % len(LOAD_PROMPTS)]}],
                "n": 1 + (trial + i) % 3,  # batch shapes vary from trial to trial
                "seed": 1000 * trial + i,
                "max_tokens": load_tokens,
                "ignore_eos": True,
                "batch_invariant": False,
            }
            others.append(threading.Thread(target=post, args=(path, body), daemon=True))
        for t in others:
            t.start()
        time.sleep(0.05 * (trial % 4))  # the probe joins at different steps of the load
        got = texts(post(path, probe))
        for t in others:
            t.join()
        if got != reference:
            flips += 1
            if len(examples) < 3:
                examples.append({"trial": trial, "texts": got})
    return {"mode": mode, "trials": trials, "flips": flips, "reference": reference, "examples": examples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Registry name or HF directory (default: the embedded model).")
    ap.add_argument("--trials", type=int, default=9)
    ap.add_argument("--load", type=int, default=8, help="Other requests running during each trial.")
    ap.add_argument("--load-tokens", type=int, default=48, help="Tokens each load request generates.")
    ap.add_argument("--modes", default="default,batch_invariant")
    ap.add_argument("--threads", type=int, default=0, help="Torch CPU threads (0 = torch's default).")
    ap.add_argument("--json", action="store_true", help="Print the results as JSON.")
    ap.add_argument("--check", action="store_true", help="Exit 1 unless batch_invariant never flipped.")
    args = ap.parse_args()

    import torch

    from sazanami.models import DEFAULT_MODEL
    from sazanami.server import Limits, create_app
    from sazanami.server.testing import serving

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = args.model or DEFAULT_MODEL
    limits = Limits(max_tokens=max(64, args.load_tokens), max_concurrent=args.load + 4, max_queue=args.load + 4)
    results = []
    with serving(create_app(model, limits), timeout=600) as url:
        for mode in args.modes.split(","):
            if mode not in ("default", "batch_invariant"):
                ap.error(f"unknown mode {mode!r}")
            results.append(run_mode(url, mode, args.trials, args.load, args.load_tokens))
    if args.json:
        print(json.dumps({"model": model, "load": args.load, "results": results}, indent=2))
    else:
        for r in results:
            print(f"{r['mode']:>16}: {r['flips']}/{r['trials']} trials differed from the probe alone")
            for ex in r["examples"]:
                print(f"{'':>18}trial {ex['trial']}: {ex['texts']!r}")
            print(f"{'':>18}alone: {r['reference']!r}")
    bad = [r for r in results if r["mode"] == "batch_invariant" and r["flips"]]
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
