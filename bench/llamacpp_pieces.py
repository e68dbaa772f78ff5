"""What the llama.cpp backend's 63-token row pieces cost, and what they buy.

    python bench/llamacpp_pieces.py [--tokens 64,128,448] [--repeats 3] [--threads 1]

From 64 tokens of one sequence in a ``llama_decode``, llama.cpp's CPU attention takes another
kernel that rounds differently, so the backend sends a row's tokens in pieces of at most
``ROW_PIECE`` (63). Per prompt length, in one run on the embedded GGUF: prefill wall time in
pieces vs in one piece (the backend's limit raised past the prompt), their ratio, and whether
the last logits equal those of one-token steps bit for bit (what the prefix cache needs).
"""

from __future__ import annotations

import argparse
import time

import torch

from sazanami import models
from sazanami.backends import llamacpp


def last_logits(backend: llamacpp.LlamaCppBackend, ids: list[int], split: int) -> tuple[torch.Tensor, float]:
    """Prefill ``ids`` in forwards of ``split`` tokens; the last logits and the wall time."""
    cache = backend.new_cache(1, len(ids) + 1)
    t = time.perf_counter()
    for s in range(0, len(ids), split):
        out = backend.forward(torch.tensor([ids[s : s + split]]), cache, torch.tensor([s]))
    return out[0], time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="64,128,448", help="Prompt lengths (comma-separated).")
    ap.add_argument("--repeats", type=int, default=3, help="Timed prefills per length and mode (best kept).")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    lengths = [int(n) for n in args.tokens.split(",")]
    if not 1 <= args.repeats <= 100 or any(not 1 <= n <= 4000 for n in lengths):
        raise SystemExit("--repeats must be in [1, 100] and every --tokens length in [1, 4000]")
    backend = models.load(models.DEFAULT_MODEL, backend="llamacpp", threads=args.threads)
    text = "Write one vivid sentence about a river, a lantern, an autumn stone and a quiet bridge. "
    base = backend.tokenizer.encode(text)
    print(f"llama.cpp backend, {args.threads} thread(s); row pieces of {llamacpp.ROW_PIECE} tokens vs one piece")
    print(f"{'tokens':>7}{'pieces':>10}{'one piece':>11}{'ratio':>8}  equal to one-token steps (pieces / one piece)")
    piece = llamacpp.ROW_PIECE
    for n in lengths:
        ids = (base * (n // len(base) + 1))[:n]
        steps, _ = last_logits(backend, ids, 1)
        timed = {}
        for mode, limit in (("pieces", piece), ("one", 1 << 20)):
            llamacpp.ROW_PIECE = limit
            runs = [last_logits(backend, ids, n) for _ in range(args.repeats)]
            timed[mode] = (min(t for _, t in runs), torch.equal(runs[0][0], steps))
        llamacpp.ROW_PIECE = piece
        (tp, ep), (to, eo) = timed["pieces"], timed["one"]
        print(f"{n:>7}{tp:>9.3f}s{to:>10.3f}s{tp / to:>8.2f}  {ep} / {eo}")


if __name__ == "__main__":
    main()
