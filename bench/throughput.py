"""Throughput of sazanami's engine vs transformers' ``model.generate``, side by side.

    python bench/throughput.py [--tokens 64] [--quick]

Measured in one run on the embedded model:
- batch 1 tokens/s: ``model.generate`` (float32, sampling) vs sazanami (float32 and the default dtype);
- sazanami aggregate tokens/s for n = 1, 4, 16 variants of one prompt;
- time from process start to first streamed token (warm cache), in a fresh process;
- bf16 quality: greedy-token agreement and mean NLL difference vs float32.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from sazanami import models
from sazanami.backends.llama import LlamaBackend
from sazanami.engine import Engine
from sazanami.params import SamplingParams

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def hf_generate_tps(tokens: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(models.embedded_dir()), dtype=torch.float32).eval()
    engine = Engine(models.load(dtype="float32"))
    ids = torch.tensor([engine.encode(PROMPT)])
    gen = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=0.7, top_k=0)
    with torch.inference_mode():
        model.generate(ids, **(gen | {"max_new_tokens": 4, "min_new_tokens": 4}))
        t = time.perf_counter()
        model.generate(ids, **gen)
        return tokens / (time.perf_counter() - t)


def engine_tps(engine: Engine, n: int, tokens: int) -> float:
    params = SamplingParams(n=n, seed=1, max_tokens=tokens, ignore_eos=True, temperature=0.7)
    engine.generate(PROMPT, params.replace(max_tokens=4))  # warm-up
    t = time.perf_counter()
    out = engine.generate(PROMPT, params)
    return sum(c.completion_tokens for c in out) / (time.perf_counter() - t)


FIRST_TOKEN = """
import time; t0 = time.perf_counter()
from sazanami import Engine, SamplingParams, load
e = Engine(load())
for deltas in e.stream("Hello!", SamplingParams(max_tokens=1, seed=0)):
    break
print(time.perf_counter() - t0)
"""


def first_token_seconds() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", FIRST_TOKEN], check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def bf16_quality(tokens: int) -> tuple[float, float]:
    """(greedy agreement over ``tokens`` steps, mean |ΔNLL| per token) of bf16 vs float32."""
    f32 = Engine(models.load(dtype="float32"))
    b16 = Engine(LlamaBackend.from_dir(models.embedded_dir(), dtype=torch.bfloat16))
    greedy = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    a = f32.generate(PROMPT, greedy)[0]
    b = b16.generate(PROMPT, greedy)[0]
    agree = 0
    for x, y in zip(a.token_ids, b.token_ids):
        if x != y:
            break
        agree += 1
    ids = f32.encode(PROMPT) + a.token_ids
    P = len(ids) - len(a.token_ids)
    nll = []
    for e in (f32, b16):
        be = e.backend
        logits = be.forward(
            torch.tensor([ids]), be.new_cache(1, len(ids)), torch.zeros(1, dtype=torch.long), last_only=False
        )[0]
        logp = torch.log_softmax(logits, -1)[P - 1 : -1].gather(-1, torch.tensor(a.token_ids)[:, None])
        nll.append(-logp.squeeze(-1))
    return agree / len(a.token_ids), float((nll[0] - nll[1]).abs().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="32 tokens per run")
    args = ap.parse_args()
    tokens = 32 if args.quick else args.tokens
    torch.set_grad_enabled(False)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; {tokens} new tokens per run\n")
    rows = []
    hf = hf_generate_tps(tokens)
    rows.append(("transformers generate, batch 1 (float32)", hf, 1.0))
    f32 = Engine(models.load(dtype="float32"))
    default = Engine(models.load())
    dname = str(default.backend.dtype).replace("torch.", "")
    s1_f32 = engine_tps(f32, 1, tokens)
    rows.append(("sazanami, batch 1 (float32)", s1_f32, s1_f32 / hf))
    s1 = engine_tps(default, 1, tokens)
    rows.append((f"sazanami, batch 1 ({dname})", s1, s1 / hf))
    for n in (4, 16):
        s = engine_tps(default, n, tokens)
        rows.append((f"sazanami, n={n} aggregate ({dname})", s, s / s1))
    print(f"{'run':44} {'tok/s':>8} {'ratio':>8}")
    for name, tps, ratio in rows:
        ref = "vs generate" if "batch 1" in name else "vs own n=1"
        print(f"{name:44} {tps:8.1f} {ratio:7.2f}x  ({ref})")
    ft = first_token_seconds()
    print(f"\nprocess start → first token (warm cache): {ft:.2f} s")
    agree, dnll = bf16_quality(tokens)
    print(
        f"bf16 vs float32: greedy tokens identical for the first {agree:.0%} of {tokens}; mean |ΔNLL| {dnll:.4f} nats/token"
    )


if __name__ == "__main__":
    main()
