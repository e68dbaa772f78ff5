"""The noise-embedding LM of seed 003 against Kneser–Ney and a tiny transformer (issue #18).

    nice -n 19 env OMP_NUM_THREADS=1 python bench/noise_lm.py              # ~6 min on 2 busy cores
    nice -n 19 env OMP_NUM_THREADS=1 python bench/noise_lm.py --gpt-seconds 20 --eval-tokens 1000  # quick

Data: docstrings of 58 standard-library modules (they ship with Python 3.11;
``sazanami.research.noise_lm.corpus``), split by document (seed 0) into train/dev/test. One
word-level vocabulary (2000 words, from the full train split) serves every model and size.
Writes ``docs/noise_lm.json`` and ``docs/noise_lm_accuracy.png``; prints the tables.
Timings are wall-clock on whatever machine runs it: quote them with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sazanami import Engine, SamplingParams, load  # noqa: E402
from sazanami.models import cpu_model  # noqa: E402
from sazanami.research.noise_lm import NoiseLM, NoiseLMConfig, corpus, scattershot, vocab  # noqa: E402
from sazanami.research.noise_lm.baselines import KneserNey, TinyGPT, evaluate_gpt, train_gpt  # noqa: E402
from sazanami.research.noise_lm.lookup import KeyIndex  # noqa: E402
from sazanami.research.noise_lm.middle import stats  # noqa: E402
from sazanami.research.noise_lm.model import encode_docs, sentences  # noqa: E402
from sazanami.research.noise_lm.noise import contexts  # noqa: E402

PROMPTS = ["return the number of", "if the file is", "this function raises"]


def timed(fn, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN201
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def lookups(lm: NoiseLM, test_ids: np.ndarray, n: int) -> list[dict]:
    """Exact vs faiss HNSW vs faiss LSH on the test contexts: top-1 agreement with exact search,
    accuracy and query time, for the plain lookup (hub 0) and the hub-corrected one (rerank)."""
    ctx, y = contexts(test_ids, lm.config.order)[1 : n + 1], test_ids[1 : n + 1]
    rows = []
    for hub in (0.0, lm.config.hub):
        exact = None
        for method in ("exact", "hnsw", "lsh"):
            m = lm.with_config(lookup=method, hub=hub)
            _, build = timed(m.index)
            m.predict(ctx[:8])  # warm caches (hub distances)
            top, secs = timed(lambda: m.predict(ctx)[:, 0])  # noqa: B023 - called at once
            exact = top if exact is None else exact
            rows.append(
                {
                    "lookup": method,
                    "hub": hub,
                    "agree_exact": float((top == exact).mean()),
                    "accuracy": float((top == y).mean()),
                    "build_s": build,
                    "us_per_query": 1e6 * secs / len(ctx),
                }
            )
    return rows


def middle_layer(lm: NoiseLM, test_ids: np.ndarray, seed: int) -> dict:
    """R² of the middle layer's predicted log length and key variance of a sentence's rest."""
    rng = np.random.default_rng(seed)
    pred, true = [], []
    for s in sentences(test_ids, NoiseLM._ends(lm.tokenizer)):
        if len(s) < 2:
            continue
        cut = int(rng.integers(1, len(s)))
        pred.append(lm.middle.predict(lm.keys[s[:cut]])[0][:2])
        true.append(stats(lm.keys[s[cut:]])[:2])
    P, Y = np.array(pred), np.array(true)
    r2 = 1 - ((Y - P) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    return {
        "pairs": len(Y),
        "r2_log_length": float(r2[0]),
        "r2_key_variance": float(r2[1]),
        "mean_abs_length_error": float(np.abs(np.exp(P[:, 0]) - np.exp(Y[:, 0])).mean()),
        "constant_abs_length_error": float(np.abs(np.exp(Y[:, 0].mean()) - np.exp(Y[:, 0])).mean()),
    }


def retrieval(lm: NoiseLM, n: int, corrupt: float, seed: int) -> dict:
    """Find a training sentence again after replacing ``corrupt`` of its words at random."""
    rng = np.random.default_rng(seed)
    store = [s for s in lm.store if len(s) >= 6]
    pattern = scattershot.subsets(lm.config.scatter, 3, lm.config.seed)
    kinds = {
        "scattershot+level": lambda k: scattershot.embed(k, lm.config.slots, pattern),
        "level only": lambda k: scattershot.level(k, lm.config.slots).ravel().astype(np.float32),
        "mean of keys": scattershot.mean_embedding,
    }
    picks = rng.choice(len(store), size=min(n, len(store)), replace=False)
    queries = []
    for i in picks:
        s = store[i].copy()
        swap = rng.random(len(s)) < corrupt
        s[swap] = rng.integers(4, lm.vocab_size, swap.sum())
        queries.append(s)
    out = {}
    for name, fn in kinds.items():
        emb = np.stack([fn(lm.keys[s]) for s in store])
        index = KeyIndex(emb, "exact")
        _, idx = index.search(np.stack([fn(lm.keys[q]) for q in queries]), 1)
        out[name] = float((idx[:, 0] == picks).mean())
    return {"sentences": len(store), "queries": len(picks), "corrupt": corrupt, "top1": out}


def gpt_samples(model: TinyGPT, tok, prompt: str, n: int, seed: int) -> str:  # noqa: ANN001
    gen = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-model.context :]]))[0, -1]
            ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
    return tok.decode(ids)


def kn_sample(kn: KneserNey, tok, prompt: str, n: int, seed: int) -> str:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    ids = tok.encode(prompt)
    for _ in range(n):
        p = kn.dist(ids[-(kn.order - 1) :])
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return tok.decode(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default="0.0625,0.125,0.25,0.5,1")
    ap.add_argument("--eval-tokens", type=int, default=3000)
    ap.add_argument("--gpt-seconds", type=float, default=150.0)
    ap.add_argument("--gpt-dims", default="256,128", help="Model widths of the tiny transformers (4 layers each).")
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "noise_lm.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    train_docs, dev_docs, test_docs = corpus.split(corpus.stdlib_docstrings(), args.seed)
    tok = vocab.build(train_docs, args.vocab)
    test_ids = encode_docs(tok, test_docs)
    full_ids = encode_docs(tok, train_docs)
    res: dict = {
        "machine": f"{cpu_model()}, torch threads 1, Python {platform.python_version()}",
        "data": {
            "train_docs": len(train_docs),
            "dev_docs": len(dev_docs),
            "test_docs": len(test_docs),
            "train_tokens": len(full_ids),
            "test_tokens": len(test_ids),
            "vocab": tok.vocab_size,
            "test_unk": float((test_ids == 0).mean()),
            "eval_tokens": min(args.eval_tokens, len(test_ids) - 1),
        },
        "sizes": [],
    }
    print(json.dumps(res["data"]))

    # -- accuracy vs training size: noise LM and Kneser–Ney -------------------------------------
    lm = kn = None
    for frac in [float(f) for f in args.fractions.split(",")]:
        docs = train_docs[: max(1, round(frac * len(train_docs)))]
        ids = encode_docs(tok, docs)
        lm, t_train = timed(NoiseLM.train, docs, NoiseLMConfig(seed=args.seed), tokenizer=tok)
        lm, t_cal = timed(lm.calibrate, dev_docs, 2000)
        ev, t_eval = timed(lm.evaluate, test_docs, args.eval_tokens)
        kn3 = KneserNey(ids, tok.vocab_size, 3)
        kev3 = kn3.evaluate(test_ids, args.eval_tokens)
        kn, k_train = timed(KneserNey, ids, tok.vocab_size, 4)  # the noise LM's 3 context words, + the target
        kev, k_eval = timed(kn.evaluate, test_ids, args.eval_tokens)
        row = {
            "fraction": frac,
            "train_tokens": len(ids),
            "noise_lm": ev
            | {
                "train_s": t_train,
                "calibrate_s": t_cal,
                "eval_s": t_eval,
                "learned": lm.parameters(),
                "temperature": lm.config.temperature,
                "floor": lm.config.floor,
            },
            "kneser_ney": kev | {"train_s": k_train, "eval_s": k_eval, "stored": kn.size(), "order": 4},
            "kneser_ney_3": kev3 | {"stored": kn3.size(), "order": 3},
        }
        res["sizes"].append(row)
        print(json.dumps(row))

    assert lm is not None and kn is not None
    with tempfile.TemporaryDirectory() as d:
        lm.save(d)
        disk = sum(p.stat().st_size for p in Path(d).iterdir())
        engine = Engine(load(f"noise-lm:{d}"))
        p = SamplingParams(n=2, seed=args.seed, max_tokens=16, temperature=1.0)
        engine_samples = {
            pr: [c.text for c in engine.generate(pr, p.replace(seed=args.seed + i), raw=True)]
            for i, pr in enumerate(PROMPTS)
        }
        (_, t_gen) = timed(
            engine.generate, PROMPTS[0], SamplingParams(n=1, seed=1, max_tokens=64, ignore_eos=True), raw=True
        )
    arrays = lm.tables.arrays() | {"keys": lm.keys}
    res["noise_lm_memory"] = {
        "array_bytes": int(sum(a.nbytes for a in arrays.values())),
        "disk_bytes": disk,
        "engine_ms_per_token": 1000 * t_gen / 64,
    }
    res["lookups"] = lookups(lm, test_ids, args.eval_tokens)
    res["middle_layer"] = middle_layer(lm, test_ids, args.seed)
    res["retrieval"] = retrieval(lm, 300, 0.3, args.seed)
    res["samples"] = {
        "noise_lm_stubs": {pr: lm.stubs(pr, width=4, max_tokens=24)[:2] for pr in PROMPTS},
        "noise_lm_engine": engine_samples,
        "kneser_ney": {pr: kn_sample(kn, tok, pr, 16, args.seed + i) for i, pr in enumerate(PROMPTS)},
    }
    for k in ("lookups", "middle_layer", "retrieval", "samples"):
        print(k, json.dumps(res[k], indent=1))

    # -- NLTK's Kneser–Ney on the same data, as a check of ours ---------------------------------
    try:
        from nltk.lm import KneserNeyInterpolated
        from nltk.lm.preprocessing import padded_everygram_pipeline

        train, vocab_ = padded_everygram_pipeline(3, [[str(t) for t in full_ids]])  # one stream, as ours
        nk = KneserNeyInterpolated(3, discount=0.75)
        _, t_nltk = timed(nk.fit, train, vocab_)
        seq = [str(t) for t in test_ids[:401]]
        lp = [nk.logscore(seq[i], seq[max(0, i - 2) : i]) for i in range(1, len(seq))]
        ours = KneserNey(full_ids, tok.vocab_size, 3).evaluate(test_ids, 400)
        res["nltk_check"] = {
            "tokens": 400,
            "nltk_perplexity": float(2 ** (-np.mean(lp))),
            "ours_perplexity": ours["perplexity"],
            "nltk_fit_s": t_nltk,
        }
    except ImportError:
        res["nltk_check"] = "nltk not installed (pip install 'sazanami[research]')"
    print("nltk", res["nltk_check"])

    # -- tiny transformers, full data, checkpoints in time -------------------------------------
    full_lm_train = res["sizes"][-1]["noise_lm"]["train_s"]
    marks = tuple(sorted({round(full_lm_train, 2), 10.0, 30.0, 90.0} - {0.0}))
    res["gpt"], res["samples"]["gpt"] = [], {}
    for dim in [int(x) for x in args.gpt_dims.split(",")]:
        gpt = TinyGPT(tok.vocab_size, dim=dim, layers=4, heads=4, context=64, seed=args.seed)
        curve: list[dict] = []

        def check(model: TinyGPT, secs: float, seen: int, curve: list[dict] = curve, dim: int = dim) -> None:
            ev, t = timed(evaluate_gpt, model, test_ids, args.eval_tokens)
            curve.append({"train_s": secs, "tokens_seen": seen} | ev | {"eval_s": t})
            print("gpt", dim, curve[-1])

        info = train_gpt(
            gpt,
            full_ids,
            args.gpt_seconds,
            seed=args.seed,
            checkpoints=tuple(m for m in marks if m < args.gpt_seconds),
            on_checkpoint=check,
        )
        check(gpt, args.gpt_seconds, info["tokens_seen"])
        res["gpt"].append(
            {
                "parameters": gpt.parameters_count(),
                "dim": dim,
                "layers": 4,
                "context": 64,
                "steps": info["steps"],
                "curve": curve,
            }
        )
        res["samples"]["gpt"][dim] = {pr: gpt_samples(gpt, tok, pr, 16, args.seed + i) for i, pr in enumerate(PROMPTS)}
        print("gpt samples", json.dumps(res["samples"]["gpt"][dim], indent=1))

    # -- ablations of the noise LM at full size ------------------------------------------------
    res["ablations"] = []
    for changes in ({"hub": 0.0}, {"dim": 256}, {"order": 2}, {"order": 4}, {"digits": 1}, {"backoff": 0.5}):
        cfg = NoiseLMConfig(**(NoiseLMConfig(seed=args.seed).to_dict() | changes))
        m, t = timed(NoiseLM.train, train_docs, cfg, tokenizer=tok)
        m = m.calibrate(dev_docs, 2000)
        res["ablations"].append(
            {"changes": changes, "train_s": t, "learned": m.parameters()} | m.evaluate(test_docs, args.eval_tokens)
        )
        print("ablation", res["ablations"][-1])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    Path(args.out).write_text(json.dumps(res, indent=1))
    plot(res, Path(args.out).with_name("noise_lm_accuracy.png"))


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["train_tokens"] for r in res["sizes"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(n, [r["noise_lm"]["accuracy"] for r in res["sizes"]], "o-", label="noise-embedding LM (seed 003)")
    ax.plot(n, [r["kneser_ney"]["accuracy"] for r in res["sizes"]], "s-", label="Kneser–Ney, order 4 (same context)")
    ax.plot(n, [r["kneser_ney_3"]["accuracy"] for r in res["sizes"]], "s--", alpha=0.6, label="Kneser–Ney, order 3")
    for i, g in enumerate(res["gpt"]):
        color, last = f"C{3 + i}", g["curve"][-1]
        label = f"transformer {g['parameters'] / 1e6:.1f}M params, {last['train_s']:.0f} s (faint: earlier)"
        ax.plot([n[-1]], [last["accuracy"]], "^", ms=9, color=color, label=label)
        for c in g["curve"][:-1]:
            ax.plot([n[-1]], [c["accuracy"]], "^", color=color, alpha=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens (stdlib docstrings)")
    ax.set_ylabel(f"next-token accuracy, {res['data']['eval_tokens']} test tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
