"""1/f-guided structured pruning of attention heads and MLP channels.

Each unit (an attention head, an MLP channel) is scored over calibration text, and per
layer the lowest-scoring fraction ``sparsity`` of heads and of channels is removed.
Scores (higher = keep):

- ``spectral``: |β̂|, the distance from white noise of β̂, the spectral exponent of the
  unit's activation over token positions (P(f) ∝ f^−β̂: periodogram per sequence, Hann
  window, mean removed, averaged over sequences and, for a head, over its D output
  dimensions; fitted over f ∈ [2/T, 1/4] with 1/f weights like
  :func:`sazanami.noise.colored.psd_slope`). A unit whose activation is closest to white noise
  (β̂ ≈ 0) carries least sequential structure and goes first; a unit dominated by slow
  (β̂ > 0) *or* fast (β̂ < 0, "blue") variation is kept. (Ranking by β̂ itself, as an
  earlier version did, removes the bluest units first, not the whitest.)
- ``magnitude``: the L2 norm of the unit's own weights (a head's q_proj rows and o_proj
  columns; a channel's gate/up rows and down_proj column).
- ``activation``: the RMS over calibration tokens of the unit's contribution to the
  residual stream (a head: ‖W_o,h·o_h(t)‖; a channel: |a_c(t)|·‖W_down[:, c]‖).

Removal is exact and keeps shapes: a removed head's q_proj rows and o_proj columns, a
removed channel's gate/up rows and down_proj column are set to zero, so the unit adds
exactly nothing and the checkpoint still loads in any Llama runtime (compacting the
matrices is not done: with GQA and one head count per config, per-layer head removal
does not fit Llama's config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sazanami.errors import ParameterError, check_index, check_range

__all__ = ["SCORES", "Pruned", "perplexity", "prune", "score_units", "spectral_slopes", "window_nll"]

SCORES = ("spectral", "magnitude", "activation")


@dataclass
class UnitScores:
    """Scores of one layer: heads (H,) and channels (I,)."""

    heads: torch.Tensor
    channels: torch.Tensor


@dataclass
class Pruned:
    """What :func:`prune` removed: per layer, the head and channel indices."""

    heads: list[list[int]] = field(default_factory=list)
    channels: list[list[int]] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        return sum(map(len, self.heads)), sum(map(len, self.channels))


def _layers(model: Any) -> list[Any]:
    return list(model.model.layers)


def _check_ids(ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] < 16:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ParameterError("ids", f"ids must be a (B, T) token tensor with T >= 16, got {shape}")
    return ids


def _slope_stats(x: torch.Tensor) -> torch.Tensor:
    """Periodogram of x (B, T, U, S) along T, averaged over B and S: (F, U)."""
    T = x.shape[1]
    x = x - x.mean(dim=1, keepdim=True)
    win = torch.hann_window(T, periodic=False, dtype=x.dtype).view(1, T, 1, 1)
    spec = torch.fft.rfft(x * win, dim=1).abs().pow(2)  # (B, F, U, S)
    return spec.mean(dim=(0, 3))


def _fit_slopes(power: torch.Tensor, T: int) -> torch.Tensor:
    """β̂ per unit from (F, U) periodograms: weighted least squares of log P on log f."""
    freqs = torch.fft.rfftfreq(T, dtype=torch.float64)
    keep = (freqs >= 2.0 / T) & (freqs <= 0.25)
    lf = freqs[keep].log()  # (F',)
    lp = power.double()[keep].clamp_min(1e-30).log()  # (F', U)
    w = 1.0 / freqs[keep]
    w = w / w.sum()
    mf = (w * lf).sum()
    mp = (w[:, None] * lp).sum(0)
    cov = (w[:, None] * (lf - mf)[:, None] * (lp - mp)).sum(0)
    var = (w * (lf - mf) ** 2).sum()
    return (-cov / var).float()  # (U,)


@torch.no_grad()
def score_units(model: Any, ids: torch.Tensor | None, score: str, *, batch: int = 4) -> list[UnitScores]:
    """Per-layer head and channel scores (higher = keep); ``ids`` (B, T) calibration tokens.

    ``magnitude`` needs no text (``ids`` may be None).
    """
    if score not in SCORES:
        raise ParameterError("score", f"score must be one of {', '.join(SCORES)}, got {score!r}")
    cfg = model.config
    H, D = cfg.num_attention_heads, cfg.head_dim
    layers = _layers(model)
    if score == "magnitude":
        out = []
        for layer in layers:
            q = layer.self_attn.q_proj.weight.view(H, D, -1).pow(2).sum(dim=(1, 2))
            o = layer.self_attn.o_proj.weight.view(-1, H, D).pow(2).sum(dim=(0, 2))
            gu = layer.mlp.gate_proj.weight.pow(2).sum(1) + layer.mlp.up_proj.weight.pow(2).sum(1)
            dn = layer.mlp.down_proj.weight.pow(2).sum(0)
            out.append(UnitScores((q + o).sqrt(), (gu + dn).sqrt()))
        return out
    if score == "spectral":  # keep score: distance from white (β̂ = 0)
        return [UnitScores(s.heads.abs(), s.channels.abs()) for s in spectral_slopes(model, ids, batch=batch)]
    return _from_activations(model, ids, "activation", batch)


def spectral_slopes(model: Any, ids: torch.Tensor, *, batch: int = 4) -> list[UnitScores]:
    """β̂ of every head and channel over ``ids`` (B, T): P(f) ∝ f^−β̂ (0 white, > 0 slow, < 0 blue)."""
    return _from_activations(model, ids, "slope", batch)


@torch.no_grad()
def _from_activations(model: Any, ids: torch.Tensor, score: str, batch: int) -> list[UnitScores]:
    """Hooks on o_proj and down_proj inputs: ``slope`` (β̂) or ``activation`` (RMS contribution)."""
    cfg = model.config
    H, D = cfg.num_attention_heads, cfg.head_dim
    layers = _layers(model)
    ids = _check_ids(ids)
    T = ids.shape[1]
    stats: list[dict[str, torch.Tensor]] = [{} for _ in layers]

    def add(i: int, key: str, value: torch.Tensor) -> None:
        stats[i][key] = stats[i][key] + value if key in stats[i] else value

    def attn_hook(i: int, layer: Any):  # input of o_proj: (B, T, H·D), the heads' outputs
        wo = layer.self_attn.o_proj.weight.view(-1, H, D)  # (C, H, D)

        def hook(mod: Any, args: tuple) -> None:
            o = args[0].float().view(args[0].shape[0], T, H, D)  # (B, T, H, D)
            if score == "slope":
                add(i, "heads", _slope_stats(o))
            else:
                contrib = torch.einsum("bthd,chd->bthc", o, wo)  # (B, T, H, C)
                add(i, "heads", contrib.pow(2).sum(-1).sum(dim=(0, 1)))
            add(i, "tokens", torch.tensor(float(o.shape[0] * T)))

        return hook

    def mlp_hook(i: int, layer: Any):  # input of down_proj: (B, T, I), the channels' activations
        col = layer.mlp.down_proj.weight.pow(2).sum(0)  # (I,)

        def hook(mod: Any, args: tuple) -> None:
            a = args[0].float()
            if score == "slope":
                add(i, "channels", _slope_stats(a.unsqueeze(-1)))
            else:
                add(i, "channels", (a.pow(2) * col).sum(dim=(0, 1)))

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(attn_hook(i, layer)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(mlp_hook(i, layer)))
    was_training = model.training
    model.eval()
    try:
        for chunk in ids.split(batch):
            model(chunk)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for s in stats:
        if score == "slope":
            out.append(UnitScores(_fit_slopes(s["heads"], T), _fit_slopes(s["channels"], T)))
        else:
            n = s["tokens"]
            out.append(UnitScores((s["heads"] / n).sqrt(), (s["channels"] / n).sqrt()))
    return out


@torch.no_grad()
def prune(model: Any, scores: list[UnitScores], sparsity: float) -> Pruned:
    """Zero the lowest-scoring round(sparsity·H) heads and round(sparsity·I) channels of every layer.

    Modifies ``model`` in place; returns the removed indices.
    """
    check_range("sparsity", sparsity, 0, 1, high_open=True)
    cfg = model.config
    H, D = cfg.num_attention_heads, cfg.head_dim
    layers = _layers(model)
    if len(scores) != len(layers):
        raise ParameterError("scores", f"scores must hold one entry per layer ({len(layers)}), got {len(scores)}")
    removed = Pruned()
    for layer, s in zip(layers, scores):
        n_h = round(sparsity * H)
        n_c = round(sparsity * cfg.intermediate_size)
        heads = sorted(torch.argsort(s.heads, stable=True)[:n_h].tolist())
        chans = sorted(torch.argsort(s.channels, stable=True)[:n_c].tolist())
        q = layer.self_attn.q_proj.weight.view(H, D, -1)
        o = layer.self_attn.o_proj.weight.view(-1, H, D)
        for h in heads:
            q[h].zero_()
            o[:, h].zero_()
        if chans:
            idx = torch.tensor(chans)
            layer.mlp.gate_proj.weight[idx] = 0.0
            layer.mlp.up_proj.weight[idx] = 0.0
            layer.mlp.down_proj.weight[:, idx] = 0.0
        removed.heads.append(heads)
        removed.channels.append(chans)
    return removed


@torch.no_grad()
def window_nll(model: Any, ids: torch.Tensor, *, batch: int = 4) -> torch.Tensor:
    """Mean next-token NLL of each window of ``ids`` (B, T): (B,) (for intervals over windows)."""
    ids = _check_ids(ids)
    batch = check_index("batch", batch, 1)
    was_training = model.training
    model.eval()
    out = []
    try:
        for chunk in ids.split(batch):
            logits = model(chunk).logits[:, :-1].float()  # (b, T − 1, V)
            nll = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none")  # (b, T − 1)
            out.append(nll.mean(1))
    finally:
        model.train(was_training)
    return torch.cat(out)


def perplexity(model: Any, ids: torch.Tensor, *, batch: int = 4) -> float:
    """exp(mean next-token NLL) over ``ids`` (B, T) windows (equal-length windows, so the mean of means)."""
    return math.exp(float(window_nll(model, ids, batch=batch).mean()))


def windows(token_ids: list[int], length: int) -> torch.Tensor:
    """Non-overlapping windows of ``length`` tokens: (N, length) (the tail is dropped)."""
    length = check_index("length", length, 16)
    n = len(token_ids) // length
    if n < 1:
        raise ParameterError("length", f"text of {len(token_ids)} tokens is shorter than one window of {length}")
    return torch.tensor(token_ids[: n * length]).view(n, length)


__all__ += ["UnitScores", "windows"]


def text_windows(tokenizer: Any, part: str, length: int) -> torch.Tensor:
    """Offline text as (N, length) token windows: the Python reference topics of the standard
    library's ``pydoc_data`` (PSF license), even-numbered topics for ``calibration``,
    odd-numbered for ``heldout``."""
    from pydoc_data.topics import topics

    if part not in ("calibration", "heldout"):
        raise ParameterError("part", f"part must be calibration or heldout, got {part!r}")
    keys = sorted(topics)[0 if part == "calibration" else 1 :: 2]
    ids = tokenizer.encode("\n\n".join(topics[k] for k in keys))
    return windows(ids, length)


__all__ += ["text_windows"]
