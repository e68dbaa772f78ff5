"""Spectral estimates of a series (time along axis 0, streams along axis 1): is it 1/f^β?

:func:`psd` (Welch), :func:`psd_slope` (log-log fit over a band, β̂ > 0 for PSD ∝ 1/f^β̂),
:func:`dfa_exponent` (detrended fluctuation analysis, α ≈ (β + 1)/2) and :func:`plot_psd`.
They check :mod:`sazanami.noise.colored`'s generators and measure surprisal series
(:func:`sazanami.measure.metrics.surprisal_spectrum`); moved here from ``sazanami/noise/colored.py``.

Example::

    >>> from sazanami.noise.colored import colored_noise_block
    >>> round(psd_slope(colored_noise_block(1.0, 4096, 64, seed=1)), 1)
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.signal
import torch

from sazanami.errors import ParameterError, check_index, check_range

__all__ = ["DEFAULT_BAND", "dfa_exponent", "plot_psd", "psd", "psd_slope"]

DEFAULT_BAND = (1 / 128, 1 / 8)
"""Frequency band (cycles/step) of :func:`psd_slope` and :func:`plot_psd` unless told otherwise."""


def _as_series(x: object, param: str = "x", min_steps: int = 8) -> np.ndarray:
    """(steps, streams) float64 array from a 1-D or 2-D tensor/array (time along axis 0)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ParameterError(param, f"{param} must be 1-D (steps,) or 2-D (steps, streams), got shape {arr.shape}")
    if arr.shape[0] < min_steps or arr.shape[1] < 1:
        raise ParameterError(param, f"{param} must have at least {min_steps} steps, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ParameterError(param, f"{param} must be finite")
    return arr


def psd(x: torch.Tensor | np.ndarray, *, nperseg: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD along axis 0 (time), averaged over streams (axis 1): (freqs, power).

    ``x``: (steps,) or (steps, streams). One-sided density in cycles/step (∫_0^{1/2} ≈ var),
    Hann window, 50 % overlap, per-segment mean removed. ``nperseg`` defaults to
    min(steps, max(16, min(1024, steps // 2))).
    """
    arr = _as_series(x)
    n = arr.shape[0]
    if nperseg is None:
        nperseg = min(n, max(16, min(1024, n // 2)))
    nperseg = check_index("nperseg", nperseg, 8, n)
    freqs, power = scipy.signal.welch(arr, fs=1.0, window="hann", nperseg=nperseg, axis=0, detrend="constant")
    return freqs, power.mean(axis=1)


def psd_slope(
    x: torch.Tensor | np.ndarray, band: tuple[float, float] = DEFAULT_BAND, *, nperseg: int | None = None
) -> float:
    """β̂ with PSD ∝ 1/f^β̂ over ``band`` (cycles/step; white ≈ 0, pink ≈ 1, brown ≈ 2).

    The default band, [1/128, 1/8], avoids the lowest Welch bins (window leakage) and the
    top octaves, where every discrete-time brown noise (a random walk's 1/sin²(πf), and
    :class:`ColoredNoise` at β = 2) is flatter than f^−2: over (0.01, 0.25) its β̂ ≈ 1.96.

    Welch spectrum of :func:`psd` (axis 0 time, averaged over streams), then a least-squares
    line through (log f, log P) for f in [band[0], band[1]], each point weighted by 1/f so
    every decade of the band counts equally.
    """
    lo, hi = _check_band(band)
    freqs, power = psd(x, nperseg=nperseg)
    keep = (freqs >= lo) & (freqs <= hi) & (power > 0)
    if keep.sum() < 3:
        raise ParameterError("band", f"band {band} holds fewer than 3 frequencies of the spectrum; widen it")
    lf, lp, w = np.log(freqs[keep]), np.log(power[keep]), 1.0 / freqs[keep]
    slope = np.polyfit(lf, lp, 1, w=np.sqrt(w))[0]
    return float(-slope)


def _check_band(band: object) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in band)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ParameterError("band", f"band must be a pair (f_lo, f_hi), got {band!r}") from None
    if not 0 < lo < hi <= 0.5:
        raise ParameterError("band", f"band must satisfy 0 < f_lo < f_hi <= 0.5, got {band!r}")
    return lo, hi


def dfa_exponent(x: torch.Tensor | np.ndarray, *, scales: Sequence[int] | None = None) -> float:
    """Detrended fluctuation analysis (DFA-1) exponent α of ``x`` (steps,) or (steps, streams).

    Profile Y = cumsum(x − mean) per stream; for each scale s, non-overlapping windows of
    s steps each get a least-squares line removed; F(s)² is the mean squared residual over
    windows and streams; α is the slope of log F against log s. For 1/f^β noise α ≈ (β + 1)/2
    (white 0.5, pink 1, brown 1.5). Needs ≥ 32 steps. Default scales: ~16 log-spaced
    integers from max(4, min(16, steps // 16)) to steps // 4.
    """
    arr = _as_series(x, min_steps=32)
    n = arr.shape[0]
    if scales is None:
        lo, hi = max(4, min(16, n // 16)), n // 4
        scales = np.unique(np.geomspace(lo, hi, 16).astype(int)).tolist()
    else:
        scales = sorted({check_index("scales", s, 3, n) for s in scales})
    if len(scales) < 2:
        raise ParameterError("scales", f"scales must hold at least 2 distinct sizes in [3, {n}], got {scales}")
    profile = np.cumsum(arr - arr.mean(axis=0), axis=0)
    fluct = []
    for s in scales:
        w = n // s
        seg = profile[: w * s].reshape(w, s, -1)  # (windows, s, streams)
        t = np.arange(s) - (s - 1) / 2
        slope = np.einsum("i,wik->wk", t, seg) / (t @ t)
        resid = seg - seg.mean(axis=1, keepdims=True) - t[None, :, None] * slope[:, None, :]
        fluct.append(np.sqrt(np.mean(resid**2)))
    return float(np.polyfit(np.log(scales), np.log(fluct), 1)[0])


def plot_psd(
    x: torch.Tensor | np.ndarray,
    beta: float,
    path: str | Path,
    *,
    nperseg: int | None = None,
    title: str | None = None,
) -> Path:
    """Write a log-log PNG of the Welch PSD of ``x`` with the ideal 1/f^β line; returns the path.

    The ideal line is scaled to meet the spectrum (least squares in log) over ``DEFAULT_BAND``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_range("beta", beta, 0, 2)
    beta = float(beta)
    freqs, power = psd(x, nperseg=nperseg)
    f, p = freqs[1:], power[1:]
    band = (f >= DEFAULT_BAND[0]) & (f <= DEFAULT_BAND[1])
    if not band.any():
        band = np.ones_like(f, dtype=bool)
    offset = np.mean(np.log(p[band]) + beta * np.log(f[band]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(f, p, lw=1, label="Welch PSD")
    ax.loglog(f, np.exp(offset) * f**-beta, "--", lw=1, label=f"1/f^{beta:g}")
    try:
        ax.set_title(title or f"β = {beta:g}, measured {psd_slope(x, nperseg=nperseg):.3f}")
    except ParameterError:
        ax.set_title(title or f"β = {beta:g}")
    ax.set_xlabel("frequency (cycles/step)")
    ax.set_ylabel("power")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
