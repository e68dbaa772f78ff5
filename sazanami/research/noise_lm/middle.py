"""The middle layer: from an input's statistics to the output's intended mean and variance.

Training pairs are sentences cut at a seeded random point: input x = the words before the
cut, output y = the rest of the sentence. A sequence's statistics are its length, the mean of
its token keys and their variance. The "key" the seed averages over many examples is the
pair of running means ``XᵀX / m`` and ``XᵀY / m``; solving them (ridge) gives a linear map
from the input's statistics to the output's expected ones, and the mean squared residual of
each output statistic is its predicted variance. Generation uses both: a stub whose
statistics sit far from the prediction (in predicted standard deviations) is implausible,
and a stub longer than the predicted length plus two standard deviations stops.
"""

from __future__ import annotations

import numpy as np


def stats(keys: np.ndarray) -> np.ndarray:
    """(n, dim) token keys → [log n, mean variance over dims, mean key (dim)]."""
    n = max(len(keys), 1)
    var = float(keys.var(0).mean()) if len(keys) > 1 else 0.0
    mean = keys.mean(0) if len(keys) else np.zeros(keys.shape[1], dtype=np.float32)
    return np.concatenate([[np.log(n), var], mean]).astype(np.float64)


class MiddleLayer:
    """Linear map input statistics → output statistics, with residual variances."""

    def __init__(self, weights: np.ndarray, variance: np.ndarray) -> None:
        self.weights = weights  # (1 + F, F): bias row first
        self.variance = variance  # (F,)

    @classmethod
    def fit(cls, sentences: list[np.ndarray], keys: np.ndarray, seed: int, ridge: float = 1e-2) -> MiddleLayer:
        """Cut each sentence (≥ 2 tokens) at a random point and fit input stats → output stats."""
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for s in sentences:
            if len(s) < 2:
                continue
            cut = int(rng.integers(1, len(s)))
            xs.append(stats(keys[s[:cut]]))
            ys.append(stats(keys[s[cut:]]))
        X = np.column_stack([np.ones(len(xs)), np.array(xs)])  # (m, 1 + F)
        Y = np.array(ys)  # (m, F)
        m = len(X)
        xtx, xty = X.T @ X / m, X.T @ Y / m  # the running means the seed calls the 'key'
        W = np.linalg.solve(xtx + ridge * np.eye(X.shape[1]), xty)
        var = ((Y - X @ W) ** 2).mean(0) + 1e-9
        return cls(W, var)

    def predict(self, prompt_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The output statistics' predicted mean and variance for an input (its token keys)."""
        x = np.concatenate([[1.0], stats(prompt_keys)])
        return x @ self.weights, self.variance

    def plausibility(self, prompt_keys: np.ndarray, output_keys: np.ndarray) -> float:
        """Mean Gaussian log-density (per statistic) of the output's statistics under the prediction."""
        mu, var = self.predict(prompt_keys)
        z2 = (stats(output_keys) - mu) ** 2 / var
        return float(-0.5 * (z2 + np.log(2 * np.pi * var)).mean())

    def max_length(self, prompt_keys: np.ndarray) -> int:
        """The stop rule's cap: exp(predicted log-length + 2 standard deviations)."""
        mu, var = self.predict(prompt_keys)
        return max(1, int(np.ceil(np.exp(mu[0] + 2 * np.sqrt(var[0])))))
