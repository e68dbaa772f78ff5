"""Trainable models and checkpoints: a sazanami backend ↔ a ``transformers`` Llama module.

:func:`trainable` rebuilds a ``LlamaForCausalLM`` (float32) from any loaded
:class:`~sazanami.backends.llama.LlamaBackend` by un-fusing its weights, so the embedded
model, a local directory and the tiny test model all train the same way.
:func:`save_model` writes ``config.json`` + ``model.safetensors`` + the tokenizer, the
layout :func:`sazanami.models.load` reads from a directory, so a fine-tuned or pruned model
generates and searches like any other. :func:`save_state` / :func:`load_state` write the
resumable training state atomically (a Ctrl-C during a save leaves the previous one).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from sazanami.backends.llama import LlamaBackend

__all__ = ["load_state", "save_model", "save_state", "state_dict_of", "trainable"]


def state_dict_of(backend: LlamaBackend) -> dict[str, torch.Tensor]:
    """The backend's weights under Hugging Face Llama names (float32 copies, un-fused)."""
    cfg = backend.cfg
    H, KV, D, I = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size

    def f32(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(torch.float32).contiguous().clone()

    sd = {"model.embed_tokens.weight": f32(backend.embed), "model.norm.weight": f32(backend.final_norm)}
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = f32(backend.lm_head)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        q, k, v = backend.wqkv[i].T.split([H * D, KV * D, KV * D])  # rows of (out, in) weights
        gate, up = backend.wgu[i].T.split([I, I])
        sd |= {
            p + "input_layernorm.weight": f32(backend.attn_norm[i]),
            p + "post_attention_layernorm.weight": f32(backend.mlp_norm[i]),
            p + "self_attn.q_proj.weight": f32(q),
            p + "self_attn.k_proj.weight": f32(k),
            p + "self_attn.v_proj.weight": f32(v),
            p + "self_attn.o_proj.weight": f32(backend.wo[i].T),
            p + "mlp.gate_proj.weight": f32(gate),
            p + "mlp.up_proj.weight": f32(up),
            p + "mlp.down_proj.weight": f32(backend.wdown[i].T),
        }
    return sd


def trainable(backend: LlamaBackend) -> Any:
    """A float32 ``transformers.LlamaForCausalLM`` with the backend's weights (train mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = backend.cfg
    eos = sorted(backend.tokenizer.eos_token_ids)
    hf = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=cfg.tie_word_embeddings,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        attention_dropout=0.0,
    )
    hf._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = LlamaForCausalLM(hf)
    model.load_state_dict(state_dict_of(backend), assign=True, strict=False)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    # buffers (rotary inv_freq) were created on meta: rebuild them on the CPU
    model.model.rotary_emb = type(model.model.rotary_emb)(config=hf)
    model.train()
    return model


def save_model(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Write ``model`` (a ``LlamaForCausalLM``) and the sazanami ``tokenizer`` to ``path``.

    The result loads with ``sazanami.models.load(path)``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.rust.save(str(path / "tokenizer.json"))
    eos = sorted(tokenizer.eos_token_ids)
    config: dict[str, Any] = {"eos_token": tokenizer.token_text(eos[0]) if eos else None}
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    if tokenizer.bos_token:
        config["bos_token"] = tokenizer.bos_token
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return path


def save_state(state: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then an atomic rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_state(path: str | Path) -> dict:
    """The state written by :func:`save_state`."""
    return torch.load(str(path), weights_only=False)
