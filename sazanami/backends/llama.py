"""A compact Llama-family forward pass with a pre-allocated per-row KV cache.

Loads the weights of any ``LlamaForCausalLM`` safetensors checkpoint (SmolLM2,
TinyLlama, Llama 2/3 ...). Compared with calling ``transformers`` per step it
removes most of the Python per token: fused QKV and gate/up projections, one
cache tensor per layer written in place, no cache objects re-created per step.

Every position is computed in the same shapes however the work is cut: alone or beside
other rows, in a prefill of any length or a one-token decode step, after its prefix was
computed or after it was copied from the prefix cache. A CPU BLAS picks its kernel (and how
it sums) by the product's shape: on an AVX-512 Intel Xeon with MKL, a one-row product
(GEMV) rounds differently from a product of 2–16 rows, with two threads a product of 17 or
more rows with 1,536 inner terms splits its sums over the threads, and torch's fused
attention rounds a query by its key length and query count. So a token's keys, values and
logits moved in the fifth digit with the batch, the prompt split and the prefix cache.
Here every matrix product runs in :data:`TILE`-row tiles (:func:`_matmul`), and attention
sums its keys in :data:`KEY_CHUNK`-key chunks, in order (:func:`_attend`): a position's
numbers depend only on its row's tokens, the model, the dtype and the CPU — not on the
batch, on how the prompt was split, on the prefix cache or on the thread count
(``tests/test_prefix_cache.py`` checks each, bit for bit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sazanami.backends import Capabilities, HiddenHook
from sazanami.backends.tokenizer import Tokenizer
from sazanami.noise.fluctuation import POINTS

TILE = 16
"""Rows per matrix product: longer inputs run as a batch of 16-row products, a single row as
two (BLAS kernels, and how they split sums over threads, follow the row count; 2–16 rows
share one kernel)."""
KEY_CHUNK = 64
"""Attention sums keys in chunks of this many, chunk after chunk in position order; caches
hold a multiple of it (masked keys add exact zeros, so a row's sum ignores the key length)."""
QUERY_BLOCK = 256
"""Queries attended at a time (a long prefill's scores are (rows, heads, queries, keys))."""


def _matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` (..., K) @ (K, N) with each row computed as in a product of 2–16 rows."""
    *lead, K = x.shape
    rows = x.reshape(-1, K)  # (M, K)
    M = rows.shape[0]
    if M == 1:
        out = (rows.expand(2, K) @ w)[:1]  # a one-row product would take the GEMV kernel
    elif M <= TILE:
        out = rows @ w
    else:
        tiles = -(-M // TILE)
        rows = F.pad(rows, (0, 0, 0, tiles * TILE - M)).view(tiles, TILE, K)
        out = torch.bmm(rows, w.expand(tiles, *w.shape)).view(tiles * TILE, -1)[:M]  # (M, N)
    return out.view(*lead, w.shape[1])


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Causal attention of queries ``q`` (B, H, T, D) at positions ``pos`` (B, T) over the
    cached keys/values ``k``, ``v`` (B, KV, L, D), L a multiple of :data:`KEY_CHUNK`; key ``j``
    is visible to query ``(b, t)`` iff ``j <= pos[b, t]``. Returns (B, H, T, D).

    Head ``h`` reads KV head ``h // (H / KV)`` (grouped-query attention). Scores and
    exponentials are per key; the weighted sum over keys runs chunk by chunk, in order, so a
    query's result does not depend on how many keys, queries or rows share the call.
    """
    B, H, T, D = q.shape
    if T > QUERY_BLOCK:  # bounds the scores' memory: (B, H, QUERY_BLOCK, L) at a time
        return torch.cat([_attend(q[:, :, a : a + QUERY_BLOCK], k, v, pos[:, a : a + QUERY_BLOCK])
                          for a in range(0, T, QUERY_BLOCK)], dim=2)  # fmt: skip
    L = min(-(-(int(pos.max()) + 1) // KEY_CHUNK) * KEY_CHUNK, k.shape[2])  # keys past the last query: masked
    k, v = k[:, :, :L], v[:, :, :L]
    KV = k.shape[1]
    G = H // KV
    qg = (q * D**-0.5).reshape(B, KV, G * T, D)  # the G heads of a KV head share its keys
    if G * T == 1:
        qg = qg.expand(B, KV, 2, D)  # not a one-row product (see _matmul)
    s = qg @ k.transpose(-1, -2)  # (B, KV, GT, L)
    visible = torch.arange(L)[None, None, :] <= pos[:, :, None]  # (B, T, L)
    visible = visible[:, None, None].expand(B, KV, G, T, L).reshape(B, KV, G * T, L)
    if G * T == 1:
        visible = visible.expand(B, KV, 2, L)
    s = s.masked_fill(~visible, float("-inf"))
    e = (s - s.amax(-1, keepdim=True)).exp()  # (B, KV, GT', L): 0 where masked
    n = L // KEY_CHUNK
    e = e.view(*e.shape[:3], n, KEY_CHUNK).transpose(2, 3)  # (B, KV, n, GT', C)
    parts = e @ v.view(B, KV, n, KEY_CHUNK, D)  # (B, KV, n, GT', D): each chunk's weighted sum
    total = parts.cumsum(2)[:, :, -1]  # chunks added in order: (B, KV, GT', D)
    weight = e.sum(-1, keepdim=True).cumsum(2)[:, :, -1]  # (B, KV, GT', 1)
    out = (total / weight)[:, :, : G * T]
    return out.reshape(B, H, T, D)


@dataclass(frozen=True)
class LlamaConfig:
    """The architecture numbers read from a Hugging Face ``config.json``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int
    tie_word_embeddings: bool

    @classmethod
    def from_hf(cls, cfg: dict) -> LlamaConfig:
        rope = cfg.get("rope_parameters") or {}
        heads = cfg["num_attention_heads"]
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
            max_positions=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        )


class KVCache:
    """Keys and values of every layer: (L, B, KV, capacity, D), written in place."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k = k
        self.v = v

    @classmethod
    def empty(cls, cfg: LlamaConfig, batch: int, capacity: int, dtype: torch.dtype) -> KVCache:
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, capacity, cfg.head_dim)
        return cls(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def select(self, rows: torch.Tensor) -> KVCache:
        """A compacted copy holding ``rows`` only (finished rows stop costing compute)."""
        return KVCache(self.k.index_select(1, rows), self.v.index_select(1, rows))

    def narrow(self, row: int, count: int = 1) -> KVCache:
        """A view of ``count`` rows from ``row``: writes go to this cache."""
        return KVCache(self.k.narrow(1, row, count), self.v.narrow(1, row, count))

    def copy_rows(self, src: KVCache, src_row: int, dst_rows: torch.Tensor, length: int) -> None:
        """Copy the first ``length`` positions of ``src`` row ``src_row`` into ``dst_rows``.

        This is how n variants share one prompt: it runs through the model once
        and its keys/values are copied, not recomputed.
        """
        self.k[:, dst_rows, :, :length] = src.k[:, src_row : src_row + 1, :, :length]
        self.v[:, dst_rows, :, :length] = src.v[:, src_row : src_row + 1, :, :length]

    def read_block(self, row: int, start: int, end: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        """A copy of positions ``[start, end)`` of ``row`` for the prefix cache, and its bytes."""
        k = self.k[:, row, :, start:end].clone()  # (L, KV, end - start, D)
        v = self.v[:, row, :, start:end].clone()
        return (k, v), 2 * k.numel() * k.element_size()

    def trim(self, row: int, length: int) -> None:
        """``row`` keeps its first ``length`` positions: nothing to do here, as a forward writes a
        row's positions before any query reads them (a rejected draft's keys are overwritten)."""

    def write_blocks(self, row: int, blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Write consecutive cached blocks into ``row`` from position 0; returns positions written."""
        at = 0
        for k, v in blocks:
            n = k.shape[2]
            self.k[:, row, :, at : at + n] = k
            self.v[:, row, :, at : at + n] = v
            at += n
        return at


class LlamaBackend:
    """Forward pass of a Llama-family causal LM over a :class:`KVCache`."""

    capabilities = Capabilities(backend="torch", fluctuation_points=POINTS, islands=True, beams=True)
    supports_prefix_cache = True
    """Its caches read and write blocks of positions (:meth:`KVCache.read_block`)."""
    ragged_prefill = True
    """:meth:`forward` takes ``last``: prompts of different lengths prefill in one pass."""
    verifies_drafts = True
    """Speculative decoding: :meth:`forward` gives every position's logits; positions are
    computed in the same shapes however they are batched (see the module), so a drafted
    position's logits are those of a one-token step."""
    prefix_block = 4
    """Prefix-cache block, in tokens: a block is two small copies here, so blocks of 4 keep a
    row's recomputed tail short (a prompt reuses all but its last 1–4 tokens) for little overhead."""

    def draft_limits(self, rows: int, exact: bool = True) -> tuple[int, int]:
        """Drafted tokens a forward of ``rows`` rows may carry (in all, per row): any number, as
        positions are computed in the same shapes however many a call holds (exact or not)."""
        return 1 << 30, 1 << 30

    def __init__(
        self,
        name: str,
        cfg: LlamaConfig,
        weights: dict[str, torch.Tensor],
        tokenizer: Tokenizer,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.vocab_size = cfg.vocab_size
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.max_positions = cfg.max_positions

        def w(key: str) -> torch.Tensor:
            return weights[key].to(dtype).contiguous()

        layers = range(cfg.num_layers)
        p = "model.layers.{}."
        self.embed = w("model.embed_tokens.weight")  # (V, C)
        self.lm_head = self.embed if cfg.tie_word_embeddings else w("lm_head.weight")
        self.final_norm = w("model.norm.weight")
        self.attn_norm = [w(p.format(i) + "input_layernorm.weight") for i in layers]
        self.mlp_norm = [w(p.format(i) + "post_attention_layernorm.weight") for i in layers]
        # Fused projections: one matmul for q,k,v and one for gate,up.
        self.wqkv = [
            torch.cat([w(p.format(i) + f"self_attn.{x}_proj.weight") for x in "qkv"]).T.contiguous() for i in layers
        ]  # (C, (H + 2KV) * D)
        self.wo = [w(p.format(i) + "self_attn.o_proj.weight").T.contiguous() for i in layers]
        self.wgu = [
            torch.cat([w(p.format(i) + f"mlp.{x}_proj.weight") for x in ("gate", "up")]).T.contiguous() for i in layers
        ]  # (C, 2I)
        self.wdown = [w(p.format(i) + "mlp.down_proj.weight").T.contiguous() for i in layers]
        self.lm_head_t = self.lm_head.T.contiguous()  # (C, V)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        angles = torch.outer(torch.arange(cfg.max_positions, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (P, D)
        self.cos = angles.cos().float()
        self.sin = angles.sin().float()

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one position takes in a cache: every layer's KV heads, float32."""
        cfg = self.cfg
        return cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * 4

    @property
    def label(self) -> str:
        """Which engine runs, for logs and the demo: ``torch (bfloat16)``."""
        return f"torch ({str(self.dtype).removeprefix('torch.')})"

    @classmethod
    def from_dir(cls, path: str | Path, name: str | None = None, dtype: torch.dtype = torch.float32) -> LlamaBackend:
        """Load ``config.json``, ``model.safetensors`` and the tokenizer from ``path``."""
        from safetensors.torch import load_file

        path = Path(path)
        hf = json.loads((path / "config.json").read_text())
        cfg = LlamaConfig.from_hf(hf)
        weights: dict[str, torch.Tensor] = {}
        for file in sorted(path.glob("*.safetensors")):
            weights.update(load_file(str(file)))
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        tokenizer = Tokenizer.from_dir(path, extra_eos_ids=eos_ids)
        return cls(name or path.name, cfg, weights, tokenizer, dtype)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        capacity = min(capacity, self.cfg.max_positions)
        capacity = -(-capacity // KEY_CHUNK) * KEY_CHUNK  # whole key chunks (see _attend)
        # float32 cache: CPU attention kernels are several times faster in float32 than bf16
        return KVCache.empty(self.cfg, batch, capacity, torch.float32)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: (B, heads, T, D); cos/sin: (B, 1, T, D)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(
        self,
        tokens: torch.Tensor,
        cache: KVCache,
        starts: torch.Tensor,
        hidden_hook: HiddenHook | None = None,
        last_only: bool = True,
        last: torch.Tensor | None = None,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run ``tokens`` (B, T) at positions ``starts[b] + t``; returns float32 logits.

        Row ``b`` of ``cache`` must hold exactly ``starts[b]`` positions before
        the call; it holds ``starts[b] + T`` after it. ``last`` (B,): return the logits
        (B, V) at token ``last[b]`` of each row instead (right-padded rows of different
        lengths; what follows ``last[b]`` is padding, written to the cache but never read).
        ``counts`` (B,): row b's tokens past ``counts[b]`` are padding (drafts of different
        lengths): computed like ``last``'s padding; their logits are not to be read.
        """
        cfg = self.cfg
        B, T = tokens.shape
        H, KV, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        x = self.embed[tokens]  # (B, T, C)
        if hidden_hook is not None:
            x = hidden_hook(-1, x)
        offsets = torch.arange(T)
        pos = starts[:, None] + offsets  # (B, T)
        cos = self.cos[pos].unsqueeze(1)  # (B, 1, T, D)
        sin = self.sin[pos].unsqueeze(1)
        uniform = bool((starts == starts[0]).all())
        s0 = int(starts[0])
        # keys the call reads: whole chunks up to the last position written
        key_len = min(-(-(int(starts.max()) + T) // KEY_CHUNK) * KEY_CHUNK, cache.capacity)
        if not uniform:
            rows = torch.arange(B)[:, None].expand(B, T)
        for i in range(cfg.num_layers):
            h = F.rms_norm(x, (cfg.hidden_size,), self.attn_norm[i], cfg.rms_norm_eps)
            qkv = _matmul(h, self.wqkv[i])  # (B, T, (H + 2KV) * D)
            q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
            q = self._rope(q.view(B, T, H, D).transpose(1, 2).float(), cos, sin)  # (B, H, T, D)
            k = self._rope(k.view(B, T, KV, D).transpose(1, 2).float(), cos, sin)  # (B, KV, T, D)
            v = v.view(B, T, KV, D).transpose(1, 2).float()
            ck, cv = cache.k[i], cache.v[i]  # (B, KV, cap, D)
            if uniform:
                ck[:, :, s0 : s0 + T] = k
                cv[:, :, s0 : s0 + T] = v
            else:
                ck[rows, :, pos] = k.permute(0, 2, 1, 3)  # (B, T, KV, D)
                cv[rows, :, pos] = v.permute(0, 2, 1, 3)
            att = _attend(q, ck[:, :, :key_len], cv[:, :, :key_len], pos)  # (B, H, T, D)
            x = x + _matmul(att.transpose(1, 2).reshape(B, T, H * D).to(self.dtype), self.wo[i])
            h = F.rms_norm(x, (cfg.hidden_size,), self.mlp_norm[i], cfg.rms_norm_eps)
            gate, up = _matmul(h, self.wgu[i]).chunk(2, dim=-1)
            x = x + _matmul(F.silu(gate) * up, self.wdown[i])
            if hidden_hook is not None:
                x = hidden_hook(i, x)
        if last is not None:
            x = x[torch.arange(B), last]
        elif last_only:
            x = x[:, -1]
        x = F.rms_norm(x, (cfg.hidden_size,), self.final_norm, cfg.rms_norm_eps)
        return _matmul(x, self.lm_head_t).float()
