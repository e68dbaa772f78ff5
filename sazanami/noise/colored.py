"""Colored (1/f^β) noise: a streaming source, its lanes, a stateless source and a block generator.

β = 0 is white, 1 pink, 2 brown; every generator here gives zero-mean, unit-variance
Gaussian samples laid out as ``(steps, streams)``: time runs along axis 0.

Streaming source (:class:`ColoredNoise`)
    One sample per stream per :meth:`~ColoredNoise.step`, for as many steps as needed.

    1. *Fit* (cached per (β, max_steps)). K ≈ 2 AR(1) corner frequencies per decade,
       log-spaced from 1/(10·max_steps) to Nyquist, φ_k = exp(−2π f_k), plus a white
       term. Their weights are fitted by non-negative least squares against the exact
       discrete AR(1) spectra S_k(f) = (1 − φ_k²)/|1 − φ_k e^{−2πif}|² (continuous-time
       "textbook" weights bias the slope by up to 0.1), on a log-spaced grid from
       1/max_steps to 1/4, in log space: rows are scaled by the target (relative error),
       then a few Gauss–Newton steps on the log error. A log-spaced grid makes every
       decade count equally. Weights are normalised to unit total variance; components
       the fit leaves at zero are dropped. β = 0 is exactly white. The local log-log
       slope stays within 0.03 of β up to f = 0.1; above, every positive sum of AR(1)
       spectra flattens towards Nyquist (its slope is at most 2πf·cot(πf), 1.57 at
       f = 1/4), so β = 2 is a random walk with a corner at 1/(10·max_steps).
    2. *One innovation per stream per step.* A bank of independent AR(1)s needs K + 1
       normals per stream per step. The sum is a Gaussian process with a rational
       spectrum, so its Kalman innovations form (spectral factorisation through the
       discrete algebraic Riccati equation) has the same law, and the same K poles,
       driven by ONE normal e_t per stream::

           y_t = a·e_t + Σ_k c_k v_k(t),     v_k(t+1) = v_k(t) + (1 − φ_k)·(e_t − v_k(t))

       (the update is one ``torch.lerp_`` over the (K, streams) state). The realised
       spectrum equals the fitted one to ~1e-8 (checked in the tests).
    3. *Stationary start.* v(0) is drawn from the stationary covariance of the state, so
       the variance is 1 from step 0, not after a burn-in.

Counter-based randomness
    The normal e_t of a stream is a pure function of (seed, stream id, step): a stream's
    values do not depend on which other streams are generated with it, on how many steps
    are generated at once, or on any global RNG. The construction (SplitMix64 in counter
    mode, in int64 torch ops; ``>>>`` is a logical shift, emulated by an arithmetic shift
    and a mask; all arithmetic modulo 2^64)::

        mix64(z)   = z ^= z >>> 30; z *= 0xBF58476D1CE4E5B9;
                     z ^= z >>> 27; z *= 0x94D049BB133111EB; z ^ (z >>> 31)
        seed key   s = mix64(seed ^ 0x6A09E667F3BCC909)
        stream key k = mix64(s + (id + 1)·γ),                 γ = 0x9E3779B97F4A7C15
        pair word  h = mix64(k + (m + 1)·γ)                   m = step // 2

    The top 24 bits of h give u1 ∈ (0, 1], the low 24 bits u2 ∈ [0, 1), and Box–Muller
    gives e_{2m} = √(−2 ln u1)·cos 2πu2 and e_{2m+1} = √(−2 ln u1)·sin 2πu2
    (|e| ≤ 5.77). The initial state uses the same words at negative pair indices
    m = −1, −2, … Only element-wise torch ops are used (no reductions or BLAS: torch's
    ``sum(0)`` and small matmuls were measured to round differently for different batch
    shapes), so values are bitwise identical whatever the batch or block size (tested on
    this CPU build, which runs every element through the same vector code).

Lanes (:class:`ColoredLanes`)
    L lanes of S streams of the streaming source, each lane with its own seed and step:
    what a sampler batch steps (one lane per row and noise-mixture component), bitwise the
    values of a :class:`ColoredNoise` per lane.

Stateless source (:func:`colored_noise_at`)
    The value of (seed, stream, step) from the counter alone — no per-stream state — as a
    Voss–McCartney sum of held normals (see its docstring). Its cost follows the streams
    asked for, so the sampler's per-token noise (noise version 2) is computed for a row's
    candidate tokens only, and a token that becomes a candidate later gets the value its
    stream always had.

Block generator (:func:`colored_noise_block`)
    Timmer & König (1995), "On generating power law noise", A&A 300, 707: Gaussian
    Fourier amplitudes with variance ∝ f^−β, inverse real FFT; for a known length.

The estimators that check these spectra (Welch PSD, its fitted slope, DFA, a PSD plot)
live in :mod:`sazanami.noise.spectra`.

Example::

    >>> from sazanami.noise.spectra import psd_slope
    >>> src = ColoredNoise(1.0, streams=4, seed=7)
    >>> src.step().shape
    torch.Size([4])
    >>> round(psd_slope(colored_noise_block(1.0, 4096, 64, seed=1)), 1)
    1.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

from sazanami.errors import ParameterError, check_index, check_range

__all__ = [
    "ColoredLanes",
    "ColoredNoise",
    "NoiseState",
    "colored_noise_at",
    "colored_noise_at_spectrum",
    "colored_noise_block",
    "fit_bank",
]

SeedLike = int | Sequence[int] | torch.Tensor
"""One seed for all streams, or one per stream."""

_U64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, the SplitMix64 increment
_MIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None))
_SEED_DOMAIN = 0x6A09E667F3BCC909  # frac(√2): keeps seed keys apart from stream ids
_PER_DECADE = 2.0  # AR(1) corners per frequency decade
_GRID_PER_DECADE = 50  # rows of the fit per decade
_FIT_HI = 0.25  # top of the fit grid: above it no positive AR(1) sum can stay steep (see module doc)
_MAX_BLOCK = 64  # most steps of normals generated per refill


# --------------------------------------------------------------------------- validation


def _check_seed(seed: object, streams: int, param: str = "seed") -> int | torch.Tensor:
    """One seed (an int in [0, 2**64)) or one per stream (an int64 tensor of ``streams`` values ≥ 0)."""
    msg = f"{param} must be an integer in [0, 2**64) or one such integer per stream, got "
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise ParameterError(param, msg + f"a {seed.dtype} tensor")
        if seed.dim() == 0:
            return _check_seed(int(seed), streams, param)
        seeds = seed.detach().to("cpu", torch.int64).reshape(-1).clone()
        if seeds.numel() != streams:
            raise ParameterError(param, f"{param} must hold one seed per stream ({streams}), got {seeds.numel()}")
        if bool((seeds < 0).any()):
            raise ParameterError(param, msg + f"{int(seeds.min())}")
        return seeds
    if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        if len(seed) != streams:
            raise ParameterError(param, f"{param} must hold one seed per stream ({streams}), got {len(seed)}")
        return torch.tensor([_i64(_check_seed(s, 1, param)) for s in seed], dtype=torch.int64)  # type: ignore[arg-type]
    try:
        return check_index(param, seed, 0, _U64)
    except ParameterError:
        # Reworded: a seed may also be one per stream.
        raise ParameterError(param, msg + repr(seed)) from None


def _check_beta(beta: object) -> float:
    check_range("beta", beta, 0, 2)  # type: ignore[arg-type]
    return float(beta)  # type: ignore[arg-type]


def _check_dtype(dtype: object) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ParameterError("dtype", f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype  # type: ignore[return-value]


# --------------------------------------------------------------------------- counter-based RNG


def _i64(x: int) -> int:
    """The int64 (two's complement) view of the 64-bit word ``x mod 2**64``."""
    x &= _U64
    return x - (1 << 64) if x >> 63 else x


def _mix64(x: int) -> int:
    """SplitMix64's finaliser on a Python int (reference for the tensor version)."""
    x &= _U64
    for shift, mult in _MIX:
        x ^= x >> shift
        if mult is not None:
            x = (x * mult) & _U64
    return x


def _mix64_(z: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, in place on an int64 tensor (``tmp``: scratch of the same shape)."""
    for shift, mult in _MIX:
        torch.bitwise_right_shift(z, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)  # arithmetic → logical shift
        z.bitwise_xor_(tmp)
        if mult is not None:
            z.mul_(_i64(mult))  # int64 products wrap modulo 2^64
    return z


def _stream_keys(seed: int | torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """k = mix64(mix64(seed ^ D) + (id + 1)·γ) per stream: (N,) int64 on ``ids.device``."""
    if isinstance(seed, torch.Tensor):
        s = seed.to(ids.device) ^ _i64(_SEED_DOMAIN)
        s = _mix64_(s, torch.empty_like(s))
    else:
        s = _i64(_mix64(seed ^ _SEED_DOMAIN))
    z = ids * _i64(_GAMMA) + s + _i64(_GAMMA)
    return _mix64_(z, torch.empty_like(z))


def _box_muller(
    keys: torch.Tensor, m0: int, pairs: int, out: torch.Tensor, scratch: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Normals for steps 2·m0 … 2·(m0 + pairs) − 1 of every stream into ``out`` (2·pairs, N).

    ``scratch``: reusable buffers (filled on first use) so refills allocate nothing.
    """
    n = keys.numel()
    if not scratch:
        ints = [torch.empty(pairs, n, dtype=torch.int64, device=keys.device) for _ in range(2)]
        flts = [torch.empty(pairs, n, dtype=out.dtype, device=keys.device) for _ in range(2)]
        if scratch is not None:
            scratch.extend(ints + flts)
    else:
        ints, flts = scratch[:2], scratch[2:]
    z, tmp = ints
    r, theta = flts
    counters = [_i64((m + 1) * _GAMMA) for m in range(m0, m0 + pairs)]
    offs = torch.tensor(counters, dtype=torch.int64, device=keys.device).unsqueeze(1)  # (P, 1)
    torch.add(keys.unsqueeze(0), offs, out=z)  # (P, N): k + (m + 1)·γ
    _mix64_(z, tmp)
    # u1 = (top 24 bits + 1)·2^-24 ∈ (0, 1]; exact in float32
    torch.bitwise_right_shift(z, 40, out=tmp)  # signed: [-2^23, 2^23)
    r.copy_(tmp).add_(2**23 + 1).mul_(2.0**-24)
    r.log_().mul_(-2.0).sqrt_()  # √(−2 ln u1)
    # u2 = (low 24 bits)·2^-24 ∈ [0, 1)
    torch.bitwise_and(z, 0xFFFFFF, out=tmp)
    theta.copy_(tmp).mul_(2 * math.pi * 2.0**-24)
    pair = out.view(pairs, 2, n)  # row 2i ↔ step 2(m0 + i), row 2i + 1 ↔ the next step
    torch.cos(theta, out=pair[:, 0]).mul_(r)
    torch.sin(theta, out=pair[:, 1]).mul_(r)
    return out


# --------------------------------------------------------------------------- fitted bank


@dataclass(frozen=True)
class _Bank:
    """Fitted AR(1) bank in innovations form; arrays are read-only."""

    fit_phi: np.ndarray  # (K,) poles of the fit
    weights: np.ndarray  # (K + 1,) NNLS variance weights (last: white), Σ = 1
    a: float  # weight of e_t in y_t
    c: np.ndarray  # (K,) weights of the state in y_t
    lerp: np.ndarray  # (K,) 1 − φ_k
    chol: np.ndarray  # (K, K) stationary covariance factor of v

    def spectrum(self, freqs: np.ndarray) -> np.ndarray:
        """Two-sided PSD of the fitted bank (∫_{−1/2}^{1/2} S = 1)."""
        return _ar1_spectra(self.fit_phi, np.asarray(freqs, dtype=np.float64)) @ self.weights


def _ar1_spectra(phi: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(len(f), K + 1): exact unit-variance AR(1) spectra, then a white column."""
    cos = np.cos(2 * np.pi * f)[:, None]
    s = (1 - phi**2)[None, :] / (1 - 2 * phi[None, :] * cos + phi[None, :] ** 2)
    return np.hstack([s, np.ones((len(f), 1))])


def _nnls(m: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """argmin ‖m w − rhs‖ over w ≥ 0, with unit-norm columns for conditioning."""
    norms = np.linalg.norm(m, axis=0)
    w, _ = scipy.optimize.nnls(m / norms, rhs, maxiter=100 * m.shape[1])
    return w / norms


def _readonly(*arrays: np.ndarray) -> None:
    for arr in arrays:
        arr.flags.writeable = False


@lru_cache(maxsize=128)
def fit_bank(beta: float, max_steps: int) -> _Bank:
    """NNLS fit of a 1/f^β spectrum, then its one-innovation (Kalman) form; see the module doc."""
    if beta == 0.0:
        return _white_bank()
    f_lo = 1.0 / (10 * max_steps)
    n_poles = math.ceil(_PER_DECADE * math.log10(0.5 / f_lo)) + 1
    phi = np.exp(-2 * np.pi * np.geomspace(f_lo, 0.5, n_poles))
    grid_lo = min(1.0 / max_steps, 1.0 / 16)
    n_grid = max(32, round(_GRID_PER_DECADE * math.log10(_FIT_HI / grid_lo)))
    grid = np.geomspace(grid_lo, _FIT_HI, n_grid)
    basis = _ar1_spectra(phi, grid)  # (G, K + 1)
    target = grid**-beta
    w = _nnls(basis / target[:, None], np.ones(len(grid)))  # relative error
    for _ in range(5):  # Gauss–Newton on log(model) − log(target), w ≥ 0
        model = basis @ w
        w = _nnls(basis / model[:, None], 1.0 - np.log(model / target))
    w = w / w.sum()
    keep = w[:-1] > 1e-6
    phi, wk, w0 = phi[keep], w[:-1][keep], w[-1]
    total = wk.sum() + w0
    wk, w0 = wk / total, w0 / total
    if not len(phi):
        return _white_bank()

    # Innovations form. State s_t = x(t − 1) of the independent bank x_k(t) = φ_k x_k(t−1) + σ_k e_k(t):
    #   s_{t+1} = A s_t + σ∘e(t),   y_t = φᵀ s_t + (σᵀ e(t) + √w0 e_0(t)),  σ_k² = w_k (1 − φ_k²).
    sig2 = wk * (1 - phi**2)
    A, C = np.diag(phi), phi[None, :]
    Q, R, S = np.diag(sig2), np.array([[sig2.sum() + w0]]), sig2[:, None]
    P = scipy.linalg.solve_discrete_are(A.T, C.T, Q, R, s=S)  # steady prediction-error covariance
    omega = float((C @ P @ C.T + R)[0, 0])  # innovation variance
    gain = ((A @ P @ C.T + S) / omega)[:, 0]
    # ŝ_{t+1} = A ŝ_t + gain·ε_t,  y_t = φᵀ ŝ_t + ε_t,  ε_t = √ω e_t.  With u_k = φ_k ŝ_k and
    # v_k = u_k (1 − φ_k) / b_k (b_k = φ_k gain_k √ω), the update is a lerp towards e_t.
    b = phi * gain * math.sqrt(omega)
    live = np.abs(b) > 1e-12 * np.abs(b).max()  # an undriven component has zero stationary variance
    pi_s = (np.diag(wk) - P)[np.ix_(live, live)]  # stationary covariance of ŝ
    b, phi_v = b[live], phi[live]
    lerp = 1.0 - phi_v
    c = b / lerp
    cov_v = pi_s * np.outer(phi_v / c, phi_v / c)
    cov_v = (cov_v + cov_v.T) / 2
    try:
        chol = np.linalg.cholesky(cov_v)
    except np.linalg.LinAlgError:  # numerically semi-definite: symmetric square root
        lam, vec = np.linalg.eigh(cov_v)
        chol = vec * np.sqrt(np.clip(lam, 0, None))
    bank = _Bank(phi, np.append(wk, w0), math.sqrt(omega), c, lerp, chol)
    _readonly(bank.fit_phi, bank.weights, bank.c, bank.lerp, bank.chol)
    return bank


def _white_bank() -> _Bank:
    empty = np.zeros(0)
    bank = _Bank(empty, np.ones(1), 1.0, empty, empty, np.zeros((0, 0)))
    _readonly(bank.fit_phi, bank.weights, bank.c, bank.lerp, bank.chol)
    return bank


# --------------------------------------------------------------------------- streaming source


@dataclass(frozen=True)
class NoiseState:
    """A snapshot of a :class:`ColoredNoise`: restore it to continue exactly from ``step``.

    Immutable by convention: the tensors are private copies; do not modify them.
    """

    step: int
    """Steps generated before the snapshot."""
    state: torch.Tensor
    """(K, streams) AR state (the lerp form of the module doc)."""
    seed: int | torch.Tensor
    """The seed, or the per-stream seeds."""
    beta: float
    max_steps: int
    streams: int


class ColoredNoise:
    """Streaming 1/f^β noise: ``streams`` independent unit-variance Gaussian streams.

    Args:
        beta: spectral exponent in [0, 2] (0 white, 1 pink, 2 brown).
        streams: number of streams N ≥ 1.
        seed: an int in [0, 2**64), or one per stream (a sequence or int64 tensor of N).
        max_steps: the longest time scale with the 1/f^β shape; the lowest corner is
            1/(10·max_steps), below it the spectrum flattens. Stepping further is allowed.
        dtype: ``torch.float32`` or ``torch.float64``.
        device: where the state and the samples live.
        stream_ids: N distinct ids ≥ 0 keying the streams (default 0 … N − 1): stream
            (seed, id) gives the same values in any source that holds it, so a batch of
            rows × vocabulary can use ``ids = arange(V).repeat(rows)`` with per-row seeds.
        block: steps of normals generated per refill (even, ≥ 2; default: by N). It only
            changes speed, never values.

    ``step()`` → (N,), ``steps(n)`` → (n, N). Stateful; not thread-safe.
    """

    def __init__(
        self,
        beta: float,
        streams: int,
        seed: SeedLike,
        *,
        max_steps: int = 4096,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        stream_ids: Sequence[int] | torch.Tensor | None = None,
        block: int | None = None,
    ) -> None:
        self.beta = _check_beta(beta)
        self.streams = check_index("streams", streams, 1)
        self.max_steps = check_index("max_steps", max_steps, 1)
        self.dtype = _check_dtype(dtype)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if block is None:
            # refills of ≤ 2048 normals per op while N is small: torch runs log/cos/sin on
            # ≥ 4096 elements in parallel, and a parallel region costs more than it saves there
            # (on a busy 2-core machine, milliseconds); large N refill one pair of steps at a time
            block = 2 * min(max(2048 // self.streams, 1), _MAX_BLOCK // 2)
        self.block = check_index("block", block, 2)
        if self.block % 2:
            raise ParameterError("block", f"block must be an even integer in [2, inf), got {block!r}")
        self._ids = self._check_ids(stream_ids)
        self._bank = fit_bank(self.beta, self.max_steps)
        bank = self._bank
        self._a = bank.a
        self._c = bank.c.tolist()
        self._lerp = torch.tensor(bank.lerp, dtype=self.dtype, device=self.device).unsqueeze(1)  # (K, 1)
        self._set_seed(_check_seed(seed, self.streams))
        self._step = 0
        self._state = self._initial_state()  # (K, N)

    # -- public API --------------------------------------------------------------------------
    @property
    def components(self) -> int:
        """K, the number of AR(1) components (0 for white noise)."""
        return len(self._c)

    @property
    def position(self) -> int:
        """Steps generated so far (the index of the next step)."""
        return self._step

    @property
    def seed(self) -> int | torch.Tensor:
        return self._seed.clone() if isinstance(self._seed, torch.Tensor) else self._seed

    def step(self) -> torch.Tensor:
        """The next sample of every stream: (N,)."""
        out = torch.empty(self.streams, dtype=self.dtype, device=self.device)
        self._advance(out)
        return out

    def steps(self, n: int) -> torch.Tensor:
        """The next ``n`` samples of every stream: (n, N)."""
        n = check_index("n", n, 1)
        out = torch.empty(n, self.streams, dtype=self.dtype, device=self.device)
        for i in range(n):
            self._advance(out[i])
        return out

    def snapshot(self) -> NoiseState:
        """The state at the current step (a private copy)."""
        seed = self._seed.clone() if isinstance(self._seed, torch.Tensor) else self._seed
        return NoiseState(self._step, self._state.clone(), seed, self.beta, self.max_steps, self.streams)

    def restore(self, state: NoiseState) -> None:
        """Continue from ``state``: the following values equal those after the snapshot."""
        if not isinstance(state, NoiseState):
            raise ParameterError("state", f"state must be a NoiseState, got {type(state).__name__}")
        mine = (self.beta, self.max_steps, self.streams)
        theirs = (state.beta, state.max_steps, state.streams)
        if mine != theirs:
            raise ParameterError("state", f"state is for (beta, max_steps, streams) = {theirs}, this source has {mine}")
        self._set_seed(state.seed.clone() if isinstance(state.seed, torch.Tensor) else state.seed)
        self._state = state.state.to(self.device, self.dtype, copy=True)
        self._step = state.step

    def fork(self, seed: SeedLike) -> ColoredNoise:
        """A new source continuing from the current AR state with fresh randomness from ``seed``.

        The original is unchanged. ``fork(s)`` with this source's own seed would repeat its
        continuation; any other seed diverges from the next step on.
        """
        new = copy.copy(self)
        new._set_seed(_check_seed(seed, self.streams))
        new._state = self._state.clone()
        return new

    def spectrum(self, freqs: np.ndarray | Sequence[float]) -> np.ndarray:
        """The source's exact two-sided PSD at ``freqs`` (cycles/step), ∫_{−1/2}^{1/2} = 1."""
        return self._bank.spectrum(np.asarray(freqs, dtype=np.float64))

    def __repr__(self) -> str:
        return (
            f"ColoredNoise(beta={self.beta:g}, streams={self.streams}, max_steps={self.max_steps}, "
            f"components={self.components}, step={self._step}, dtype={self.dtype}, device={self.device})"
        )

    # -- internals ---------------------------------------------------------------------------
    def _check_ids(self, stream_ids: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        if stream_ids is None:
            return torch.arange(self.streams, dtype=torch.int64, device=self.device)
        if isinstance(stream_ids, torch.Tensor):
            if stream_ids.dtype.is_floating_point or stream_ids.dtype == torch.bool:
                raise ParameterError("stream_ids", f"stream_ids must be integers, got a {stream_ids.dtype} tensor")
            ids = stream_ids.detach().reshape(-1).to(self.device, torch.int64).clone()
        else:
            ids = torch.tensor([check_index("stream_ids", i, 0) for i in stream_ids], dtype=torch.int64)
            ids = ids.to(self.device)
        if ids.numel() != self.streams:
            raise ParameterError("stream_ids", f"stream_ids must hold {self.streams} ids, got {ids.numel()}")
        if ids.numel() and bool((ids < 0).any()):
            raise ParameterError("stream_ids", f"stream_ids must be in [0, 2**63), got {int(ids.min())}")
        return ids

    def _set_seed(self, seed: int | torch.Tensor) -> None:
        self._seed = seed
        self._keys = _stream_keys(seed, self._ids)  # (N,) int64
        self._buf: torch.Tensor | None = None  # (block, N) normals of steps [buf_start, buf_start + block)
        self._buf_start = -1
        self._scratch: list[torch.Tensor] = []

    def _initial_state(self) -> torch.Tensor:
        """v(0) ~ N(0, Σ_v) per stream from the words at negative pair indices."""
        k = self.components
        state = torch.zeros(k, self.streams, dtype=self.dtype, device=self.device)
        if k == 0:
            return state
        pairs = (k + 1) // 2
        z = torch.empty(2 * pairs, self.streams, dtype=self.dtype, device=self.device)
        _box_muller(self._keys, -pairs, pairs, z)  # pair indices −pairs … −1
        chol = self._bank.chol.tolist()
        for i in range(k):  # v = L z, element-wise (not BLAS) so values do not depend on N
            for j in range(k):
                if chol[i][j] != 0.0:
                    state[i].add_(z[j], alpha=chol[i][j])
        return state

    def _normals(self) -> torch.Tensor:
        """The normals e_t of the current step: (N,), from the refill buffer."""
        t = self._step
        if self._buf is None or not self._buf_start <= t < self._buf_start + self.block:
            if self._buf is None:
                self._buf = torch.empty(self.block, self.streams, dtype=self.dtype, device=self.device)
            self._buf_start = t - t % 2  # pairs start at even steps
            _box_muller(self._keys, self._buf_start // 2, self.block // 2, self._buf, self._scratch)
        return self._buf[t - self._buf_start]

    def _advance(self, out: torch.Tensor) -> None:
        """y_t into ``out``; then the state moves to t + 1."""
        self._recurrence(self._normals(), out)
        self._step += 1

    def _recurrence(self, e: torch.Tensor, out: torch.Tensor) -> None:
        """y_t = a·e_t + Σ_k c_k v_k(t) into ``out``; v ← lerp(v, e_t, 1 − φ). Element-wise only."""
        torch.mul(e, self._a, out=out)
        for k, ck in enumerate(self._c):
            out.add_(self._state[k], alpha=ck)
        if self._c:
            self._state.lerp_(e, self._lerp)  # (K, N) ← (N,) broadcast, weights (K, 1)


# --------------------------------------------------------------------------- lanes


class ColoredLanes:
    """Streaming 1/f^β noise for L lanes of S streams each; every lane keeps its own step.

    Lane l, stream j gives exactly the values of ``ColoredNoise(beta, S, seeds[l],
    max_steps=max_steps)``'s stream j at the same step: the normals are counter-based and
    every operation is element-wise, so one call steps what per-lane sources stepped one by
    one, and a subset of lanes can step while the others wait (a row that skipped a step).

    ``step(lanes)`` → (n, S) for lanes ``lanes`` (all when None); ``select(lanes)`` keeps a
    subset of lanes (indices, in order). Stateful; not thread-safe.
    """

    def __init__(self, beta: float, streams: int, seeds: Sequence[int], max_steps: int = 4096) -> None:
        L, S = len(seeds), streams
        seed = torch.tensor(list(seeds), dtype=torch.int64).repeat_interleave(S)
        src = ColoredNoise(beta, L * S, seed, max_steps=max_steps, stream_ids=torch.arange(S).repeat(L))
        self.streams = S
        self._a, self._c = src._a, src._c
        self._lerp = src._lerp.unsqueeze(2)  # (K, 1, 1)
        self._keys = src._keys.view(L, S)
        self._state = src._state.view(-1, L, S)  # (K, L, S), the stationary start of each lane
        self._pairs = max(1, min(1024 // (L * S), 32))  # pairs of steps of normals per refill
        self._buf = torch.empty(L, 2 * self._pairs, S)
        self._buf_start = torch.full((L,), -(2**62), dtype=torch.long)  # step of buf[:, 0] per lane
        self._t = torch.zeros(L, dtype=torch.long)

    def __len__(self) -> int:
        return self._keys.shape[0]

    @property
    def positions(self) -> torch.Tensor:
        """(L,) steps generated so far per lane (a copy)."""
        return self._t.clone()

    def step(self, lanes: torch.Tensor | None = None) -> torch.Tensor:
        """The next sample of lanes ``lanes`` (indices; all when None): (n, S)."""
        idx = torch.arange(len(self)) if lanes is None else lanes
        t = self._t[idx]
        stale = (t < self._buf_start[idx]) | (t >= self._buf_start[idx] + 2 * self._pairs)
        if bool(stale.any()):
            self._refill(idx[stale], t[stale])
        off = t - self._buf_start[idx]
        if lanes is None and bool((off == off[0]).all()):
            e = self._buf[:, int(off[0])]  # (L, S) view: lanes in step, as usual
        else:
            e = self._buf[idx, off]  # (n, S) normals e_t
        state = self._state if lanes is None else self._state[:, lanes]
        out = torch.mul(e, self._a)  # y_t = a·e_t + Σ_k c_k v_k(t), as ColoredNoise._recurrence
        for k, ck in enumerate(self._c):
            out.add_(state[k], alpha=ck)
        if self._c:
            state.lerp_(e, self._lerp)
            if lanes is not None:
                self._state[:, lanes] = state
        self._t[idx] += 1
        return out

    def select(self, lanes: torch.Tensor) -> None:
        """Keep lanes ``lanes`` (indices into the current lanes, in order)."""
        self._keys, self._state, self._buf = self._keys[lanes], self._state[:, lanes], self._buf[lanes]
        self._buf_start, self._t = self._buf_start[lanes], self._t[lanes]

    def _refill(self, lanes: torch.Tensor, t: torch.Tensor) -> None:
        for m in torch.unique(t // 2).tolist():  # usually one value: lanes move in step
            sel = lanes[t // 2 == m]
            out = torch.empty(2 * self._pairs, sel.numel() * self.streams)
            _box_muller(self._keys[sel].reshape(-1), m, self._pairs, out)
            self._buf[sel] = out.view(2 * self._pairs, sel.numel(), self.streams).transpose(0, 1)
            self._buf_start[sel] = 2 * m


# --------------------------------------------------------------------------- stateless (counter-based) noise


@dataclass(frozen=True)
class _Octaves:
    """Voss–McCartney octave weights for one (β, max_steps); arrays are read-only."""

    lengths: np.ndarray  # (J,) int64: component j holds its value for lengths[j] steps
    weights: np.ndarray  # (J,) variance weights, Σ = 1

    def spectrum(self, freqs: np.ndarray) -> np.ndarray:
        """Two-sided PSD (∫_{−1/2}^{1/2} S = 1), averaged over the stream's clock offset."""
        return _hold_spectra(self.lengths.astype(np.float64), np.asarray(freqs, dtype=np.float64)) @ self.weights


def _hold_spectra(lengths: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(len(f), J): PSD of unit-variance white noise held for L steps at a uniform random phase,
    (1/L)·(sin πfL / sin πf)² (the Fejér kernel; autocovariance max(0, 1 − |τ|/L))."""
    s = np.sin(np.pi * f)[:, None]
    num = np.sin(np.pi * f[:, None] * lengths[None, :])
    safe = np.where(s == 0, 1.0, s)
    return np.where(s == 0, lengths[None, :], (num / safe) ** 2 / lengths[None, :])


def _octave_lengths(n: int) -> np.ndarray:
    """1, 2, then the largest prime ≤ 2^j for j = 2 … n − 1: 1, 2, 3, 7, 13, 31, 61, 127, …"""

    def prime(m: int) -> bool:
        return m > 1 and all(m % d for d in range(2, math.isqrt(m) + 1))

    out = [1, 2][:n]
    for j in range(2, n):
        m = 2**j
        while not prime(m):
            m -= 1
        out.append(m)
    return np.array(out, dtype=np.int64)


@lru_cache(maxsize=128)
def _fit_octaves(beta: float, max_steps: int) -> _Octaves:
    """NNLS weights of J held-white components (≈ 2^j steps each) for 1/f^β; see :func:`colored_noise_at`.

    J = ⌈log2 max_steps⌉ + 3, so the longest component holds ≈ 4·max_steps steps; the fit
    (relative error, then Gauss–Newton on the log error, as :func:`fit_bank`) runs on a
    log-spaced grid from 1/max_steps to 1/2. β = 0 is component 0 alone: one fresh normal a step.
    """
    if beta == 0.0:
        octs = _Octaves(np.ones(1, dtype=np.int64), np.ones(1))
    else:
        lengths = _octave_lengths(math.ceil(math.log2(max_steps)) + 3)
        grid = np.geomspace(1.0 / max_steps, 0.5, max(64, round(_GRID_PER_DECADE * math.log10(0.5 * max_steps))))
        basis = _hold_spectra(lengths.astype(np.float64), grid)  # (G, J)
        target = grid**-beta
        w = _nnls(basis / target[:, None], np.ones(len(grid)))
        for _ in range(5):
            model = basis @ w
            w = _nnls(basis / model[:, None], 1.0 - np.log(model / target))
        w = w / w.sum()
        keep = w > 1e-6
        octs = _Octaves(lengths[keep], w[keep] / w[keep].sum())
    _readonly(octs.lengths, octs.weights)
    return octs


def _as_int64(param: str, value: object, high: int, high_text: str) -> int | torch.Tensor:
    """An int, or an integer torch/NumPy array as an int64 tensor, every value in [0, high)."""
    msg = f"{param} must be an integer in [0, {high_text}) or an integer array of them, got "
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.integer):
            raise ParameterError(param, msg + f"a {value.dtype} array")
        value = torch.from_numpy(value.astype(np.int64))
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise ParameterError(param, msg + f"a {value.dtype} tensor")
        t = value.detach().to(torch.int64)
        if t.numel() and bool((t < 0).any()):
            raise ParameterError(param, msg + f"{int(t.min())}")
        if t.numel() and int(t.max()) >= high:
            raise ParameterError(param, msg + f"{int(t.max())}")
        return t
    try:
        return check_index(param, value, 0, high - 1)
    except ParameterError:
        raise ParameterError(param, msg + repr(value)) from None


_COUNTER_DOMAIN = 0xBB67AE8584CAA73B  # frac(√3): keeps these words apart from ColoredNoise's
_OFFSET_BITS = 40  # a stream's clock offset: uniform in [0, 2^40)
_MAX_STEP = 2**56  # (step + offset) · 64 stays below 2^63


def colored_noise_at(
    beta: float,
    seed: int | torch.Tensor | np.ndarray,
    stream_ids: int | torch.Tensor | np.ndarray,
    step: int | torch.Tensor | np.ndarray,
    *,
    max_steps: int = 4096,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """1/f^β noise without state: the value of stream ``stream_ids`` at ``step`` under ``seed``.

    Voss–McCartney (Gardner 1978, "White and brown music, fractal curves and one-over-f
    fluctuations", Sci. Am. 238(4)), counter-based: y = Σ_j √w_j · n_j with component j a
    standard normal that holds for L_j steps,

        n_j = N(seed, stream, j, ⌊(step + o) / L_j⌋),

    L_j = 1, 2, then the largest prime ≤ 2^j (3, 7, 13, 31, 61, …), and o a per-stream clock
    offset in [0, 2^40), so the streams' components do not all change at the same steps.
    Coprime lengths keep the components' spectral nulls (f = k/L_j) apart; with nested
    lengths 2^j every longer component is null at f = 1/2^j and the sum dips there.
    N is the Box–Muller normal of one SplitMix64 word (its cosine branch; |n| ≤ 5.77) keyed
    by k' = mix64(k ^ D') (k the stream key of :class:`ColoredNoise`, D' = frac(√3)); o is the
    top 40 bits of k', and the word of component j, block c is mix64(k' + (64·c + j + 1)·γ).
    The weights w_j ≥ 0 (Σ w_j = 1, so every value is exactly N(0, 1)) are fitted by NNLS to
    f^−β over [1/max_steps, 1/2] against each component's exact spectrum
    (1/L)(sin πfL / sin πf)²; β = 0 is component 0 alone: a fresh normal every step. The
    spectrum's fitted log-log slope is within 0.05 of −β for β in [0, 2] (tested); at large β,
    where a few long components carry the power, it ripples around the line (their sinc²
    lobes); :func:`colored_noise_at_spectrum` gives it exactly.

    Nothing is kept between calls: a stream's value at a step is the same whichever other
    streams, steps and seeds are evaluated with it, in whatever order or shape (only
    element-wise ops; no reductions), so a token that enters a candidate set later gets the
    value its stream would have had all along.

    Args:
        beta: in [0, 2].
        seed: an int in [0, 2**64), or an integer tensor/array of seeds in [0, 2**63).
        stream_ids: ints ≥ 0 (an int, torch or NumPy integer array).
        step: ints in [0, 2**56).
        max_steps: longest time scale fitted to 1/f^β (≥ 2; the longest component holds
            ≥ 4·max_steps steps).
        dtype: ``torch.float32`` or ``torch.float64``.

    Returns the broadcast shape of ``seed``, ``stream_ids`` and ``step``.

    >>> x = colored_noise_at(1.0, 7, torch.arange(5)[None, :], torch.arange(3)[:, None])
    >>> x.shape
    torch.Size([3, 5])
    >>> bool((colored_noise_at(1.0, 7, torch.tensor([4, 2]), 1) == x[1, [4, 2]]).all())
    True
    """
    octs = _fit_octaves(_check_beta(beta), check_index("max_steps", max_steps, 2))
    dtype = _check_dtype(dtype)
    ids = _as_int64("stream_ids", stream_ids, 2**63, "2**63")
    steps = _as_int64("step", step, _MAX_STEP, "2**56")
    if isinstance(seed, (torch.Tensor, np.ndarray)):
        seeds: int | torch.Tensor = _as_int64("seed", seed, 2**63, "2**63")
    else:
        seeds = _check_seed(seed, 1)
    tensors = [x for x in (ids, steps, seeds) if isinstance(x, torch.Tensor)]
    # NumPy's rule (torch.broadcast_shapes imports sympy on first use: a second's delay)
    shape = torch.Size(np.broadcast_shapes(*(tuple(x.shape) for x in tensors)))
    ids_t = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, dtype=torch.int64)
    k = _stream_keys(seeds, ids_t.expand(shape) if ids_t.shape != shape else ids_t)
    k = _mix64_(k.bitwise_xor_(_i64(_COUNTER_DOMAIN)).contiguous(), torch.empty_like(k))  # k' (shape)
    tmp = torch.empty_like(k)
    # clock: step + o, o = the top 40 bits of k' (logical shift)
    torch.bitwise_right_shift(k, 64 - _OFFSET_BITS, out=tmp).bitwise_and_((1 << _OFFSET_BITS) - 1)
    clock = tmp.add_(steps)  # (shape)
    col = (-1, *([1] * len(shape)))
    lengths = torch.tensor(octs.lengths, dtype=torch.int64).view(col)  # (J, 1, …)
    comp = torch.tensor([int(n - 1).bit_length() + 1 for n in octs.lengths], dtype=torch.int64).view(col)  # j + 1
    # word of component j: mix64(k' + (64·⌊clock / L_j⌋ + j + 1)·γ)
    z = torch.div(clock.unsqueeze(0), lengths, rounding_mode="floor").mul_(64).add_(comp).mul_(_i64(_GAMMA))
    z.add_(k.unsqueeze(0))  # (J, *shape), contiguous
    e = _box_muller_cos(_mix64_(z, torch.empty_like(z)), dtype)
    amp = torch.tensor(np.sqrt(octs.weights), dtype=dtype).view(-1, *([1] * len(shape)))
    e.mul_(amp)
    out = e[0].clone()
    for j in range(1, e.shape[0]):  # in order of j, one add per component: no reduction kernel
        out.add_(e[j])
    return out


def _box_muller_cos(h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """√(−2 ln u1)·cos 2πu2 per 64-bit word (u1 from the top 24 bits, u2 from the low 24)."""
    tmp = torch.bitwise_right_shift(h, 40)  # signed: [-2^23, 2^23)
    r = tmp.to(dtype).add_(2**23 + 1).mul_(2.0**-24).log_().mul_(-2.0).sqrt_()
    torch.bitwise_and(h, 0xFFFFFF, out=tmp)
    theta = tmp.to(dtype).mul_(2 * math.pi * 2.0**-24)
    return theta.cos_().mul_(r)


def colored_noise_at_spectrum(beta: float, freqs: np.ndarray | Sequence[float], *, max_steps: int = 4096) -> np.ndarray:
    """The exact two-sided PSD of :func:`colored_noise_at` at ``freqs`` (cycles/step), ∫ = 1."""
    octs = _fit_octaves(_check_beta(beta), check_index("max_steps", max_steps, 2))
    return octs.spectrum(np.asarray(freqs, dtype=np.float64))


# --------------------------------------------------------------------------- block generator


def colored_noise_block(
    beta: float,
    steps: int,
    streams: int = 1,
    seed: int | torch.Generator = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``streams`` series of ``steps`` samples of 1/f^β noise: (steps, streams).

    Timmer & König (1995), A&A 300, 707: for each positive FFT frequency f the Fourier
    amplitude is complex Gaussian with variance ∝ f^−β (real at Nyquist), the DC term is 0,
    and the inverse real FFT gives the series; it is then divided by its expected standard
    deviation, so every stream has zero sample mean and unit variance in expectation. The
    series is periodic (its end joins its start); use :class:`ColoredNoise` for streaming.

    Args:
        beta: in [0, 2]. steps: ≥ 2. streams: ≥ 1.
        seed: an int in [0, 2**64) (a private ``torch.Generator`` is seeded from it) or a
            ``torch.Generator`` (CPU) that is advanced.

    >>> colored_noise_block(1.0, 1024, 8, seed=3).shape
    torch.Size([1024, 8])
    """
    beta = _check_beta(beta)
    steps = check_index("steps", steps, 2)
    streams = check_index("streams", streams, 1)
    dtype = _check_dtype(dtype)
    if isinstance(seed, torch.Generator):
        gen = seed
    else:
        gen = torch.Generator().manual_seed(_i64(_mix64(_check_seed(seed, 1))))  # type: ignore[arg-type]
    freqs = torch.fft.rfftfreq(steps, dtype=dtype)  # (F,)
    amp = torch.zeros_like(freqs)
    amp[1:] = freqs[1:] ** (-beta / 2)
    # complex Gaussian per (frequency, stream): real and imaginary parts of variance amp²/2
    spec = torch.view_as_complex(torch.randn(len(freqs), streams, 2, generator=gen, dtype=dtype))
    scale = amp * math.sqrt(0.5)
    spec.imag[0] = 0.0
    if steps % 2 == 0:  # the Nyquist term of a real series is real, of variance amp²
        spec.imag[-1] = 0.0
        scale[-1] = amp[-1]
    spec *= scale.unsqueeze(1)
    x = torch.fft.irfft(spec, n=steps, dim=0)  # (steps, streams)
    # E Σ_t x_t² = (1/n) Σ_k E|X_k|²: every positive frequency twice, Nyquist once
    power = amp.double() ** 2
    sigma = math.sqrt(2 * float(power[1:].sum()) - (float(power[-1]) if steps % 2 == 0 else 0.0)) / steps
    return x.div_(sigma).to(device=device)
