"""The unbiased pass@k estimator (Chen et al., 2021, eq. 1)."""

from __future__ import annotations

import numpy as np

from sazanami.errors import ParameterError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n, c of them
    correct, passes: ``1 − C(n−c, k) / C(n, k)``, computed as a stable product."""
    if n < 1:
        raise ParameterError("n", f"n must be in [1, inf), got {n}")
    if not 0 <= c <= n:
        raise ParameterError("c", f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ParameterError("k", f"k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
