"""The noise-embedding language model: training, next-token distributions, stubs, save/load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import sazanami.research.noise_lm.scattershot as scattershot
import sazanami.research.noise_lm.vocab as vocab
from sazanami.backends.tokenizer import Tokenizer
from sazanami.errors import ModelNotFoundError, ParameterError, check_int
from sazanami.research.noise_lm.config import NoiseLMConfig
from sazanami.research.noise_lm.keys import expand, random_keys
from sazanami.research.noise_lm.lookup import KeyIndex
from sazanami.research.noise_lm.middle import MiddleLayer
from sazanami.research.noise_lm.noise import PAD, NoiseTables, contexts

FORMAT = 1


def encode_docs(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    """Documents → one id stream, each document followed by the end-of-text token."""
    eos = min(tokenizer.eos_token_ids)
    out: list[int] = []
    for d in docs:
        out += tokenizer.encode(d) + [eos]
    return np.array(out, dtype=np.int64)


def sentences(ids: np.ndarray, ends: set[int]) -> list[np.ndarray]:
    """Split an id stream after every token in ``ends`` (the sentence stop and end-of-text)."""
    cut = np.flatnonzero(np.isin(ids, list(ends))) + 1
    return [s for s in np.split(ids, cut) if len(s)]


class NoiseLM:
    """Random token keys + learned noise embeddings + middle layer + sentence store."""

    def __init__(
        self,
        config: NoiseLMConfig,
        tokenizer: Tokenizer,
        keys: np.ndarray,
        tables: NoiseTables,
        unigram: np.ndarray,
        middle: MiddleLayer,
        store: list[np.ndarray],
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.keys = keys  # (V, dim)
        self.tables = tables
        self.unigram = unigram  # (V,) add-one unigram probabilities
        self.middle = middle
        self.store = store  # training sentences (ids) for retrieval
        self.expanded = expand(keys, config.digits, config.digit_factor)  # (V, dim * digits)
        self._index: KeyIndex | None = None
        self._exact: KeyIndex | None = None
        self._hub: np.ndarray | None = None
        self._sentence_index: tuple[KeyIndex, np.ndarray] | None = None

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        docs: list[str],
        config: NoiseLMConfig | None = None,
        vocab_size: int = 2000,
        tokenizer: Tokenizer | None = None,
    ) -> NoiseLM:
        """Learn every table in one pass over ``docs``; the vocabulary is built from them unless given."""
        config = config or NoiseLMConfig()
        check_int("vocab_size", vocab_size, 8, 1_000_000)
        if not docs:
            raise ParameterError("docs", "training needs at least one document, got 0")
        tokenizer = tokenizer or vocab.build(docs, vocab_size)
        ids = encode_docs(tokenizer, docs)
        V = tokenizer.vocab_size
        keys = random_keys(V, config.dim, config.seed)
        tables = NoiseTables.fit(ids, keys, config.order)
        unigram = (np.bincount(ids, minlength=V) + 1.0) / (len(ids) + V)
        sents = sentences(ids, cls._ends(tokenizer))
        middle = MiddleLayer.fit(sents, keys, config.seed)
        return cls(config, tokenizer, keys, tables, unigram.astype(np.float32), middle, sents)

    @staticmethod
    def _ends(tokenizer: Tokenizer) -> set[int]:
        stop = tokenizer.rust.token_to_id(".")
        return set(tokenizer.eos_token_ids) | ({stop} if stop is not None else set())

    def with_config(self, **changes: object) -> NoiseLM:
        """The same learned tables under changed inference settings (lookup, τ, ε, β)."""
        fixed = set(changes) - {"lookup", "temperature", "floor", "backoff", "hub"}
        if fixed:
            raise ParameterError(
                sorted(fixed)[0],
                f"only lookup, temperature, floor, backoff and hub can change after training, got {sorted(fixed)}",
            )
        new = NoiseLM.__new__(NoiseLM)
        new.__dict__ |= self.__dict__
        new.config = dataclasses.replace(self.config, **changes)
        new._index = None if new.config.lookup != self.config.lookup else self._index
        return new

    # -- next-token scores -----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.keys)

    def parameters(self) -> int:
        """Learned numbers (noise tables, middle layer, unigram); the random keys are not learned."""
        return self.tables.size() + self.middle.weights.size + self.middle.variance.size + self.unigram.size

    def index(self) -> KeyIndex:
        """The nearest-key lookup of ``config.lookup`` (built on first use)."""
        if self._index is None:
            self._index = KeyIndex(self.expanded, self.config.lookup)
        return self._index

    def encoder(self, ctx: np.ndarray) -> np.ndarray:
        """(Q, order) contexts → (Q, dim) encoder embeddings (context key − noise)."""
        return self.tables.encoder(ctx, self.config.backoff)

    def distances(self, ctx: np.ndarray) -> np.ndarray:
        """(Q, order) contexts → (Q, V) digit-weighted distances from each encoder embedding to
        every key, minus ``hub`` × the key's distance to the empty context's embedding."""
        return self.key_distances(self.encoder(ctx))

    def key_distances(self, enc: np.ndarray) -> np.ndarray:
        """(Q, dim) encoder embeddings → (Q, V) hub-corrected distances to every key."""
        q = expand(enc, self.config.digits, self.config.digit_factor)
        return self.exact_index().distances(q) - self.config.hub * self.hub_distances()[None]

    def hub_distances(self) -> np.ndarray:
        """(V,) each key's distance to the empty context's encoder embedding (the global centroid).

        Why: a centroid of many keys lies near the middle of the cube, so the keys nearest the
        middle ("hubs") win every flat context; subtracting this term removes that pull (for
        squared L2 it cancels the keys' norms exactly).
        """
        if self._hub is None:
            e0 = self.tables.sums[0] / self.tables.counts[0][:, None]  # (1, dim)
            self._hub = self.exact_index().distances(expand(e0, self.config.digits, self.config.digit_factor))[0]
        return self._hub

    def exact_index(self) -> KeyIndex:
        if self._exact is None:
            self._exact = KeyIndex(self.expanded, "exact")
        return self._exact

    def logprobs_from(self, dist: np.ndarray, temperature: float, floor: float) -> np.ndarray:
        """log[(1 − ε) softmax(−dist / τ) + ε · unigram], (Q, V)."""
        z = -dist / temperature
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        return np.log((1 - floor) * p + floor * self.unigram[None]).astype(np.float32)

    def logprobs(self, ctx: np.ndarray) -> np.ndarray:
        """(Q, order) contexts → (Q, V) next-token log-probabilities."""
        return self.logprobs_from(self.distances(ctx), self.config.temperature, self.config.floor)

    def predict(self, ctx: np.ndarray, k: int = 1) -> np.ndarray:
        """(Q, order) contexts → (Q, k) nearest tokens through the configured lookup.

        With a hub correction an approximate index proposes ``max(8k, 32)`` candidates under
        the plain distance and the correction reranks them (exact search ranks all keys).
        """
        q = expand(self.encoder(ctx), self.config.digits, self.config.digit_factor)
        if self.config.hub == 0:
            return self.index().search(q, k)[1]
        if self.config.lookup == "exact":
            d = self.exact_index().distances(q) - self.config.hub * self.hub_distances()[None]
            return np.argsort(d, axis=1, kind="stable")[:, :k]
        dist, cand = self.index().search(q, max(8 * k, 32))  # (Q, K) plain L1 (Hamming under lsh)
        exact = np.abs(q[:, None, :] - self.expanded[cand.clip(0)]).sum(-1)  # (Q, K) the seed's distance
        score = np.where(cand >= 0, exact - self.config.hub * self.hub_distances()[cand.clip(0)], np.inf)
        order = np.argsort(score, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cand, order, 1)

    def context(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """The (1, order) context after ``ids`` (most recent first)."""
        ctx = np.full((1, self.config.order), PAD, dtype=np.int64)
        tail = list(ids)[-self.config.order :][::-1]
        ctx[0, : len(tail)] = tail
        return ctx

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(
        self, docs: list[str], limit: int | None = None, temperature: float | None = None, floor: float | None = None
    ) -> dict:
        """Next-token accuracy (via the lookup), perplexity and unknown-word rate on ``docs``."""
        ids = encode_docs(self.tokenizer, docs)
        ctx = contexts(ids, self.config.order)[1:]
        target = ids[1:]
        if limit is not None:
            ctx, target = ctx[:limit], target[:limit]
        hits, nll = 0, 0.0
        t = self.config.temperature if temperature is None else temperature
        f = self.config.floor if floor is None else floor
        for a in range(0, len(target), 512):
            c, y = ctx[a : a + 512], target[a : a + 512]
            dist = self.distances(c)
            top = dist.argmin(1) if self.config.lookup == "exact" else self.predict(c)[:, 0]  # = predict() when exact
            hits += int((top == y).sum())
            lp = self.logprobs_from(dist, t, f)
            nll -= float(lp[np.arange(len(y)), y].sum())
        n = len(target)
        return {
            "tokens": n,
            "accuracy": hits / n,
            "perplexity": float(np.exp(nll / n)),
            "unk": float((target == 0).mean()),
        }

    def calibrate(self, docs: list[str], limit: int = 4000) -> NoiseLM:
        """Refit τ and ε on ``docs`` (a dev split) by grid search on perplexity."""
        ids = encode_docs(self.tokenizer, docs)
        ctx, y = contexts(ids, self.config.order)[1:][:limit], ids[1:][:limit]
        dist = self.distances(ctx)
        best = (np.inf, self.config.temperature, self.config.floor)
        for t in np.geomspace(0.25, 64, 17):
            for f in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
                nll = -float(self.logprobs_from(dist, float(t), f)[np.arange(len(y)), y].mean())
                best = min(best, (nll, float(t), f))
        return self.with_config(temperature=best[1], floor=best[2])

    # -- generation -------------------------------------------------------------------------
    def stubs(
        self, prompt: str, width: int = 4, max_tokens: int = 32, seed: int | None = None, weight: float = 1.0
    ) -> list[tuple[str, float]]:
        """Grow ``width`` output stubs by beam search and rank the finished ones.

        Each step every live stub proposes its ``width`` nearest tokens (through the lookup);
        all stubs are scored by their summed log-probability (plus Gumbel noise from ``seed``
        when given, i.e. sampling without replacement) and the worst are discarded. A stub ends
        at a sentence stop, at end-of-text, or at the middle layer's length cap. Finished stubs
        are ranked by mean log-probability + ``weight`` × the middle layer's plausibility.
        """
        check_int("width", width, 1, 64)
        check_int("max_tokens", max_tokens, 1, 4096)
        rng = np.random.default_rng(seed) if seed is not None else None
        ids = self.tokenizer.encode(prompt)
        ends = self._ends(self.tokenizer)
        last = sentences(np.array(ids, dtype=np.int64), ends)
        prompt_keys = self.keys[last[-1]] if last else self.keys[:0]
        cap = min(max_tokens, self.middle.max_length(prompt_keys)) if len(prompt_keys) else max_tokens
        live: list[tuple[list[int], float, float]] = [([], 0.0, 0.0)]  # (tokens, log-prob, perturbed score)
        done: list[tuple[list[int], float, float]] = []
        while live:
            ctx = np.concatenate([self.context(ids + s) for s, _, _ in live])
            cand = self.predict(ctx, width)  # (L, width) via the lookup
            lp = self.logprobs(ctx)
            grown = []
            for (s, score, _), row, lrow in zip(live, cand, lp):
                for tok in row:
                    if tok < 0:
                        continue  # an approximate index may return fewer than width
                    total = score + float(lrow[tok])
                    key = total + (float(rng.gumbel()) if rng is not None else 0.0)
                    grown.append((s + [int(tok)], total, key))
            grown.sort(key=lambda g: -g[2])
            live = []
            for g in grown[: width - len(done)]:  # survivors: the best, up to width in all
                (done if g[0][-1] in ends or len(g[0]) >= cap else live).append(g)
            if len(done) >= width:
                break

        def rank(g: tuple[list[int], float, float]) -> float:
            return g[1] / len(g[0]) + weight * self.middle.plausibility(prompt_keys, self.keys[g[0]])

        done.sort(key=rank, reverse=True)
        return [(self.tokenizer.decode(g[0]), rank(g)) for g in done]

    # -- retrieval --------------------------------------------------------------------------
    def embed(self, ids: np.ndarray) -> np.ndarray:
        """A sentence's scattershot / hierarchical-mean embedding."""
        pattern = scattershot.subsets(self.config.scatter, 3, self.config.seed)
        return scattershot.embed(self.keys[ids], self.config.slots, pattern)

    def nearest_sentences(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` training sentences nearest (L1) to ``text`` under :meth:`embed`."""
        ids = np.array(self.tokenizer.encode(text), dtype=np.int64)
        if not len(ids):
            raise ParameterError("text", "text must contain at least one word")
        if self._sentence_index is None:
            emb = np.stack([self.embed(s) for s in self.store])
            method = "exact" if self.config.lookup == "exact" else "hnsw"
            self._sentence_index = (KeyIndex(emb, method), emb)
        dist, idx = self._sentence_index[0].search(self.embed(ids)[None], k)
        return [(self.tokenizer.decode(self.store[i].tolist()), float(d)) for d, i in zip(dist[0], idx[0]) if i >= 0]

    # -- disk -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write config.json, tokenizer.json and arrays.npz under ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "kind": "noise-lm", "config": self.config.to_dict()}
        (path / "config.json").write_text(json.dumps(meta, indent=1))
        vocab.save(self.tokenizer, path / "tokenizer.json")
        lengths = np.array([len(s) for s in self.store], dtype=np.int64)
        arrays = self.tables.arrays() | {
            "keys": self.keys,
            "unigram": self.unigram,
            "middle_weights": self.middle.weights,
            "middle_variance": self.middle.variance,
            "store_ids": np.concatenate(self.store) if self.store else np.zeros(0, dtype=np.int64),
            "store_lengths": lengths,
        }
        np.savez_compressed(path / "arrays.npz", **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NoiseLM:
        path = Path(path)
        try:
            meta = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"{path} holds no noise-lm model (config.json unreadable: {exc})") from exc
        if meta.get("kind") != "noise-lm" or meta.get("format") != FORMAT:
            raise ModelNotFoundError(f"{path} is not a noise-lm model of format {FORMAT}")
        config = NoiseLMConfig(**meta["config"])
        with np.load(path / "arrays.npz") as z:
            a = dict(z)
        tables = NoiseTables.from_arrays(a, config.order)
        store = np.split(a["store_ids"], np.cumsum(a["store_lengths"])[:-1]) if len(a["store_lengths"]) else []
        middle = MiddleLayer(a["middle_weights"], a["middle_variance"])
        return cls(config, vocab.load(path / "tokenizer.json"), a["keys"], tables, a["unigram"], middle, store)
