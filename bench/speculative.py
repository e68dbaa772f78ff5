"""Speculative decoding, side by side: llama.cpp's own loop, sazanami plain, sazanami with each draft source.

    python bench/speculative.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--ns 1,16] [--tasks 6]
                                [--max-tokens 160] [--threads 1] [--kinds copy,corpus,open] [--quick]
                                [--out FILE.jsonl]

Per model (llama.cpp backend, ``--threads`` threads) and task kind, in one run:

- ``llamacpp``: llama.cpp's own greedy loop through its high-level API (batch 1 only);
- ``llamacpp+lookup``: the same with llama-cpp-python's prompt-lookup drafts (10 tokens a
  draft, verified by whatever kernel llama.cpp picks, weights repacked as it loads them);
- ``plain``: sazanami without speculation;
- ``prompt``, ``siblings`` (n > 1), ``corpus`` (corpus tasks), ``all``: sazanami with those drafts;
- ``all-inexact`` (batch 1): all sources with ``exact=false`` (drafts up to ``--max-draft`` past
  the kernel threshold: ``identical`` then says whether a near-tie flipped).

Tasks: *copy* — edit a HumanEval canonical solution given in the prompt (rename a parameter,
add type hints, add a docstring; the answer copies most of the function); *corpus* — continue
a HumanEval function whose whole text is in a corpus index built here from every canonical
solution; *open* — open-ended prompts (``bench/data/creative_dev.jsonl``). Batch 1 is greedy;
n > 1 samples (temperature 0.7, the same seeds in every arm). Each arm reports tokens/s over
all its tasks — end to end and after each prompt's first step (decoding alone, the prefill left
out) — drafted and accepted tokens, and whether its tokens equal ``plain``'s (the exact arms
must). Ratios printed at the end: each arm over ``plain`` and, at batch 1, over ``llamacpp``.
Raw records (one JSON line per model × n × kind × arm, with the machine, date and command in
the first line) go to ``--out`` (default ``bench/results/speculative-<date>.jsonl``).

Targets (issue 27): copy tasks at batch 1 on Qwen2.5-Coder-0.5B ≥ 2× ``llamacpp``; copy tasks
at n = 16 ≥ 1.3× ``plain``; open-ended ≥ 0.97× ``plain``. Timings need a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from sazanami import models
from sazanami.engine.loop import Engine
from sazanami.sampling.params import SamplingParams
from sazanami.speculative.corpus import build_index

ROOT = Path(__file__).resolve().parent.parent
EDITS = (
    "Rename the parameter `{name}` to `{name}_value` everywhere in this function. Answer with the whole function.",
    "Add type hints to this function. Answer with the whole function.",
    "Add a one-line docstring at the top of this function's body. Answer with the whole function.",
)


def humaneval_functions() -> list[tuple[str, str]]:
    """(entry point, whole function text) of every HumanEval problem: prompt + canonical solution."""
    from sazanami.evals.humaneval.problems import load_problems

    return [(p.entry_point, p.prompt + p.canonical_solution) for p in load_problems()]


def copy_tasks(functions: list[tuple[str, str]], count: int) -> list[str]:
    out = []
    for k, (entry, code) in enumerate(functions[:count]):
        m = re.search(rf"def {re.escape(entry)}\((\w+)", code)
        name = m.group(1) if m else "x"
        out.append(EDITS[k % len(EDITS)].format(name=name) + f"\n\n```python\n{code.strip()}\n```")
    return out


def corpus_tasks(functions: list[tuple[str, str]], count: int) -> list[str]:
    """Continue a function from its signature and first body line (the corpus holds it whole)."""
    out = []
    for _, code in functions[1 : 2 * count : 2]:
        head = code.split('"""')[0] if '"""' in code else code[: len(code) // 3]
        out.append(f"Continue this Python file exactly as written.\n\n```python\n{head}")
    return out


def open_tasks(count: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "bench/data/creative_dev.jsonl").read_text().splitlines() if line]
    return [r["prompt"] for r in rows[:count]]


def llama_cpp_loop(path: Path, prompts: list[str], max_tokens: int, threads: int, lookup: bool = False) -> dict:
    """llama.cpp's own greedy loop (high-level API, flash attention as the backend); ``lookup``:
    with its own prompt-lookup drafts (``LlamaPromptLookupDecoding``, 10 tokens a draft)."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    draft = LlamaPromptLookupDecoding(num_pred_tokens=10) if lookup else None
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=4096, n_threads=threads, flash_attn=True, verbose=False, draft_model=draft
    )
    seconds, first, tokens, ids = 0.0, 0.0, 0, []
    for text in prompts:
        prompt = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm.reset()
        t = time.perf_counter()
        row: list[int] = []
        for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            if not row:
                first += time.perf_counter() - t
            if llama_cpp.llama_token_is_eog(llm._model.vocab, tok):
                break
            row.append(int(tok))
            if len(row) == max_tokens:
                break
        seconds += time.perf_counter() - t
        tokens += len(row)
        ids.append(row)
    return {"seconds": seconds, "first": first, "tokens": tokens, "drafted": 0, "accepted": 0, "ids": ids}


LLAMA_ARMS = ("llamacpp", "llamacpp+lookup")


def report_line(rec: dict, arms: dict[str, dict]) -> str:
    """One arm's line: tokens/s end to end and after the first step, each over ``plain`` and llama.cpp."""
    line = f"{rec['model']:20} n={rec['n']:<3} {rec['kind']:7} {rec['arm']:16}"
    for key, label in (("tokens_per_s", "e2e"), ("decode_tokens_per_s", "decode")):
        line += f"  {label} {rec[key]:6.1f} tok/s ×plain {rec[key] / arms['plain'][key]:4.2f}"
        if "llamacpp" in arms:
            line += f" ×llama.cpp {rec[key] / arms['llamacpp'][key]:4.2f}"
    return line + f"  accepted {rec['accepted']}/{rec['drafted']}  identical={rec['identical']}"


def run_arm(engine: Engine, prompts: list[str], params: SamplingParams) -> dict:
    """One arm over ``prompts``: total seconds, seconds to each prompt's first step, tokens, drafts."""
    seconds, first, tokens, drafted, accepted, ids = 0.0, 0.0, 0, 0, 0, []
    for prompt in prompts:
        engine.clear_prefix_cache()  # every arm computes its prompts
        t = time.perf_counter()
        out: list = []
        for k, _ in enumerate(engine.steps(engine.rows_for([prompt], params), out, deltas=False)):
            if k == 0:
                first += time.perf_counter() - t
        seconds += time.perf_counter() - t
        tokens += sum(c.completion_tokens for c in out)
        drafted += sum(c.drafted_tokens for c in out)
        accepted += sum(c.accepted_tokens for c in out)
        ids.append([c.token_ids for c in out])
    return {"seconds": seconds, "first": first, "tokens": tokens, "drafted": drafted, "accepted": accepted, "ids": ids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=f"{models.DEFAULT_MODEL},{models.QWEN_CODER_MODEL}")
    ap.add_argument("--ns", default="1,16", help="Rows per request (comma-separated).")
    ap.add_argument("--tasks", type=int, default=6, help="Prompts per task kind.")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--max-draft", type=int, default=16)
    ap.add_argument("--kinds", default="copy,corpus,open", help="Task kinds (comma-separated).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="Tiny sizes: SmolLM2, 2 tasks, 32 tokens, n 1 and 4.")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.models, args.ns, args.tasks, args.max_tokens = models.DEFAULT_MODEL, "1,4", 2, 32
    ns = [int(x) for x in args.ns.split(",")]
    if not 1 <= args.tasks <= 82 or not 1 <= args.max_tokens <= 2048 or any(not 1 <= n <= 64 for n in ns):
        raise SystemExit("--tasks must be in [1, 82], --max-tokens in [1, 2048], every --ns in [1, 64]")
    stamp = datetime.now(UTC)
    out_path = Path(args.out or ROOT / f"bench/results/speculative-{stamp:%Y%m%d-%H%M}.jsonl")
    functions = humaneval_functions()
    makers = {
        "copy": lambda: copy_tasks(functions, args.tasks),
        "corpus": lambda: corpus_tasks(functions, args.tasks),
        "open": lambda: open_tasks(args.tasks),
    }
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(makers):
        raise SystemExit(f"--kinds must name some of {', '.join(makers)}, got {args.kinds!r}")
    tasks = {kind: makers[kind]() for kind in kinds}
    records: list[dict] = []
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "cpu": models._cpu_model(models._cpuinfo()),
        "date": stamp.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "threads": args.threads,
        "max_tokens": args.max_tokens,
    }
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for k, (entry, code) in enumerate(functions):
            (docs / f"{k:03d}_{entry}.py").write_text(code)
        for name in args.models.split(","):
            torch.set_num_threads(args.threads)  # sampling beside llama.cpp, as `--threads` does in the CLI
            backend = models.load(name, backend="llamacpp", threads=args.threads)
            regimes = backend.call_regimes()  # probed once, outside the timings
            print(f"{name}: calls of {regimes[0] or 'no'} tokens or more take other kernels", flush=True)
            meta.setdefault("call_regimes", {})[name] = regimes
            engine = Engine(backend)
            index = Path(tmp) / f"index-{name}"
            build_index([docs], index, engine.tokenizer)
            for n in ns:
                for kind, prompts in tasks.items():
                    base = SamplingParams(
                        n=n, seed=1, max_tokens=args.max_tokens, temperature=0.0 if n == 1 else 0.7
                    )  # fmt: skip
                    arms = {"plain": None, "prompt": "prompt"}
                    if n > 1:
                        arms["siblings"] = "siblings"
                    if kind == "corpus":
                        arms["corpus"] = f"corpus={index}"
                    arms["all"] = "prompt,siblings" + (f",corpus={index}" if kind == "corpus" else "")
                    if n == 1:  # drafts past the kernel threshold: not bit-identical, flips counted
                        arms["all-inexact"] = arms["all"] + ",exact=false"
                    got = {}
                    if n == 1:
                        texts = [
                            engine.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts
                        ]
                        got["llamacpp"] = llama_cpp_loop(backend.path, texts, args.max_tokens, args.threads)
                        got["llamacpp+lookup"] = llama_cpp_loop(
                            backend.path, texts, args.max_tokens, args.threads, lookup=True
                        )
                    for arm, spec in arms.items():
                        spec = f"{spec},max_draft={args.max_draft}" if spec else None
                        got[arm] = run_arm(engine, prompts, base.replace(speculative=spec))
                    plain, recs = got["plain"], {}
                    for arm, r in got.items():
                        rec = {"model": name, "n": n, "kind": kind, "arm": arm}
                        rec |= {k: r[k] for k in ("seconds", "first", "tokens", "drafted", "accepted")}
                        rec["tokens_per_s"] = r["tokens"] / r["seconds"]
                        # after each prompt's first step: decoding alone, the prompt's prefill left out
                        rec["decode_tokens_per_s"] = (r["tokens"] - n * len(prompts)) / (r["seconds"] - r["first"])
                        ids = r["ids"] if arm not in LLAMA_ARMS else [[row] for row in r["ids"]]
                        rec["identical"] = ids == plain["ids"]
                        recs[arm] = rec
                    for rec in recs.values():
                        records.append(rec)
                        print(report_line(rec, recs), flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    print(f"raw records: {out_path}")


if __name__ == "__main__":
    main()
