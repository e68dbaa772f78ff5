"""Throughput of sazanami's engine vs transformers' ``model.generate`` and llama.cpp, side by side.

    python bench/throughput.py [--tokens 64] [--quick] [--threads N]
    .venv-vllm/bin/python bench/throughput.py --backend vllm [--model DIR]
    python bench/throughput.py --backend llamacpp      # only the llama.cpp rows

Measured in one run on the embedded model:
- batch 1 tokens/s: ``model.generate`` (float32, sampling) vs sazanami (float32 and the default dtype);
- sazanami aggregate tokens/s for n = 1, 4, 16 variants of one prompt;
- llama.cpp (when llama-cpp-python is installed; same GGUF, same prompt): its own decode loop
  through the bindings (one ``llama_decode`` per token, greedy: the anchor), its high-level
  API, its raw batched decode of 16 sequences (argmax per row), and sazanami on the llama.cpp
  backend at n = 1, 4, 16 (+ pink-temperature and pink-draw, Gumbel and quantile, at n = 16);
- time from process start to first streamed token (warm cache), in a fresh process;
- bf16 quality: greedy-token agreement and mean NLL difference vs float32.

With ``--backend vllm`` (in the vLLM venv; ``--model`` an HF directory, default the embedded
model): vLLM's own ``LLM.generate`` at n = 1 and 16 (the anchor) against sazanami on vLLM at
n = 1 and 16, plain (vLLM's sampler) and with pink-temperature / pink-draw (sazanami's sampler
in the logits processor).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch

from sazanami import models
from sazanami.backends.llama import LlamaBackend
from sazanami.engine.loop import Engine
from sazanami.sampling.params import SamplingParams

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


def engine_tps(engine: Engine, n: int, tokens: int, fluctuation: str | None = None) -> float:
    params = SamplingParams(n=n, seed=1, max_tokens=tokens, ignore_eos=True, temperature=0.7, fluctuation=fluctuation)
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


def llamacpp_rows(tokens: int, threads: int) -> list[tuple[str, float, float]]:
    """llama.cpp's own loops and sazanami on the llama.cpp backend (rows of the table)."""
    import llama_cpp as L

    from sazanami.backends.llamacpp import LlamaCppBackend

    gguf = str(models.gguf_path(models.DEFAULT_MODEL))
    backend = LlamaCppBackend(gguf, name=models.DEFAULT_MODEL, threads=threads)
    engine = Engine(backend)
    ids = engine.encode(PROMPT)
    V = backend.vocab_size

    def context(n_seq: int) -> object:
        p = L.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = 4096, 512, 512, n_seq
        p.n_threads = p.n_threads_batch = threads
        p.kv_unified = True
        return L.llama_init_from_model(backend.model, p)

    def own_loop(n: int) -> float:
        """Prefill once, copy to ``n`` sequences, then one llama_decode of n tokens per step, argmax per row.

        Timed from the prefill on, like sazanami's runs; the first run of a context is its warm-up.
        """
        ctx = context(n)
        mem = L.llama_get_memory(ctx)
        batch = L.llama_batch_init(max(len(ids), n), 0, 1)
        start = time.perf_counter()  # prefill included, as in sazanami's runs
        for i, tok in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = tok, i, 1, 0, 0
        batch.logits[len(ids) - 1] = 1
        batch.n_tokens = len(ids)
        L.llama_decode(ctx, batch)
        for s in range(1, n):
            L.llama_memory_seq_cp(mem, 0, s, -1, -1)
        last = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(V,))
        nxt = np.full(n, int(last.argmax()))
        for step in range(tokens):
            for s in range(n):
                batch.token[s], batch.pos[s], batch.n_seq_id[s], batch.seq_id[s][0], batch.logits[s] = (
                    int(nxt[s]),
                    len(ids) + step,
                    1,
                    s,
                    1,
                )
            batch.n_tokens = n
            L.llama_decode(ctx, batch)
            nxt = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n, V)).argmax(-1)  # (n,)
        dt = time.perf_counter() - start
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        return n * tokens / dt

    def high_level() -> float:
        llm = L.Llama(model_path=gguf, n_ctx=4096, n_threads=threads, flash_attn=True, verbose=False)
        ptoks = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        t = time.perf_counter()
        for i, _ in enumerate(llm.generate(ptoks, temp=0.7, top_k=0, top_p=1.0, min_p=0.0), 1):
            if i == tokens:
                break
        return tokens / (time.perf_counter() - t)

    own_loop(1)  # warm-up
    anchor = own_loop(1)
    raw16 = own_loop(16)
    rows = [
        (f"llama.cpp own decode loop, batch 1 ({threads} threads)", anchor, 1.0),
        ("llama.cpp high-level API (Llama.generate)", high_level(), 0.0),
        ("llama.cpp raw batched decode, 16 seqs", raw16, 1.0),
    ]
    rows[1] = (rows[1][0], rows[1][1], rows[1][1] / anchor)
    for n in (1, 4, 16):
        s = engine_tps(engine, n, tokens)
        rows.append((f"sazanami on llama.cpp, n={n}", s, s / (anchor if n == 1 else raw16 if n == 16 else anchor)))
    plain16 = rows[-1][1]
    quantile = {"draw": {"mode": "quantile", "beta": 1.0}}  # one colored stream per row
    for name, fl in (("pink-temperature", "pink-temperature"), ("pink-draw (gumbel)", "pink-draw"),
                     ("pink-draw (quantile)", quantile)):  # fmt: skip
        s = engine_tps(engine, 16, tokens, fl)
        rows.append((f"sazanami on llama.cpp, n=16, {name}", s, s / plain16))
    return rows


def vllm_rows(tokens: int, model: str) -> list[tuple[str, float, str]]:
    """vLLM's own generate vs sazanami on the vLLM backend (rows of the table)."""
    import vllm

    from sazanami.backends.vllm import VllmEngine

    engine = VllmEngine(model)

    def own(n: int) -> float:
        prompt = vllm.inputs.TokensPrompt(prompt_token_ids=engine.encode(PROMPT))
        sp = vllm.SamplingParams(n=n, seed=1, max_tokens=tokens, ignore_eos=True, temperature=0.7)
        engine.llm.generate([prompt], sp, use_tqdm=False)  # warm-up
        t = time.perf_counter()
        out = engine.llm.generate([prompt], sp, use_tqdm=False)
        return sum(len(o.token_ids) for o in out[0].outputs) / (time.perf_counter() - t)

    rows = []
    for n in (1, 16):
        anchor = own(n)
        rows.append((f"vLLM generate, n={n}", anchor, ""))
        s = engine_tps(engine, n, tokens)
        rows.append((f"sazanami on vLLM, n={n}", s, f"{s / anchor:.2f}x vs vLLM n={n}"))
    plain = rows[-1][1]
    for fl in ("pink-temperature", "pink-draw"):
        s = engine_tps(engine, 16, tokens, fl)
        rows.append((f"sazanami on vLLM, n=16, {fl}", s, f"{s / plain:.2f}x vs plain n=16"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="32 tokens per run")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: physical cores)")
    ap.add_argument(
        "--backend", choices=("torch", "llamacpp", "vllm"), default="torch",
        help="torch: everything; llamacpp / vllm: only that backend's rows",
    )  # fmt: skip
    ap.add_argument("--model", default=models.DEFAULT_MODEL, help="vllm: an HF directory (default: embedded)")
    args = ap.parse_args()
    tokens = 32 if args.quick else args.tokens
    torch.set_grad_enabled(False)
    if args.backend == "vllm":
        print(f"vLLM backend, model {args.model}; {tokens} new tokens per run\n")
        print(f"{'run':52} {'tok/s':>8}")
        for name, tps, ref in vllm_rows(tokens, args.model):
            print(f"{name:52} {tps:8.1f}  {ref}")
        return
    if args.backend == "llamacpp":
        from sazanami.backends import llamacpp

        threads = args.threads or llamacpp.physical_cores()
        print(f"llama.cpp backend, {threads} threads; {tokens} new tokens per run\n")
        for name, tps, ratio in llamacpp_rows(tokens, threads):
            print(f"{name:60} {tps:8.1f}  {ratio:5.2f}x")
        return
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
    s16 = rows[-1][1]
    f32_16 = engine_tps(f32, 16, tokens)
    rows.append(("sazanami, n=16 aggregate (float32)", f32_16, f32_16 / s1_f32))
    refs = {"transformers": "", "sazanami, batch": "vs generate", "sazanami, n=": "vs own n=1"}
    table = [(name, tps, ratio, next(v for k, v in refs.items() if name.startswith(k))) for name, tps, ratio in rows]
    from sazanami.backends import llamacpp

    if llamacpp.available():
        threads = args.threads or llamacpp.physical_cores()
        for name, tps, ratio in llamacpp_rows(tokens, threads):
            ref = (
                "" if name.startswith("llama.cpp own") or name.startswith("llama.cpp raw")
                else "vs pink-free n=16" if "pink" in name
                else "vs raw batched 16" if "n=16" in name
                else "vs own loop"
            )  # fmt: skip
            table.append((name, tps, ratio, ref))
        lcp16 = next(t for n, t, _, _ in table if n == "sazanami on llama.cpp, n=16")
        table.append(("torch n=16 vs llama.cpp n=16 (sazanami)", s16, s16 / lcp16, "auto picks the faster"))
    else:
        print("(llama-cpp-python not installed: `make fast` adds the llama.cpp rows)\n")
    print(f"{'run':52} {'tok/s':>8} {'ratio':>8}")
    for name, tps, ratio, ref in table:
        print(f"{name:52} {tps:8.1f} {ratio:7.2f}x  {f'({ref})' if ref else ''}")
    ft = first_token_seconds()
    print(f"\nprocess start → first token (warm cache): {ft:.2f} s")
    agree, dnll = bf16_quality(tokens)
    print(
        f"bf16 vs float32: greedy tokens identical for the first {agree:.0%} of {tokens}; mean |ΔNLL| {dnll:.4f} nats/token"
    )


if __name__ == "__main__":
    main()
