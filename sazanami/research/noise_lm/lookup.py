"""Nearest-key search over digit-expanded keys: exact (NumPy) or approximate (faiss).

The seed's "cuckoo hashing where similar values are stored near each other" is a
locality-preserving index. Two real ones from faiss (PyPI ``faiss-cpu``, extra ``research``):

- ``hnsw``: a navigable small-world graph (``IndexHNSWFlat``) searched under L1, i.e. the
  seed's digit-weighted distance itself (:func:`keys.expand`); approximate in which
  neighbours it visits, exact in the distance it reports.
- ``lsh``: random-rotation sign hashes with per-bit median thresholds (``IndexLSH``),
  compared by Hamming distance, the seed's other word; fastest, least faithful.

``exact`` computes every distance. Faiss is imported lazily so the core works without it.
"""

from __future__ import annotations

import numpy as np

from sazanami.errors import ParameterError


def _faiss():  # noqa: ANN202 - the module
    try:
        import faiss
    except ImportError as exc:
        raise ParameterError(
            "lookup", "lookup 'hnsw' and 'lsh' need faiss: pip install 'sazanami[research]' (faiss-cpu)"
        ) from exc
    faiss.omp_set_num_threads(1)
    return faiss


class KeyIndex:
    """Find the ``k`` keys nearest (L1) to each query; ``method`` in exact, hnsw, lsh."""

    def __init__(self, keys: np.ndarray, method: str = "exact", ef: int = 64, bits: int = 512) -> None:
        self.keys = np.ascontiguousarray(keys, dtype=np.float32)  # (V, D)
        self.method = method
        if method == "exact":
            self.index = None
        elif method == "hnsw":
            faiss = _faiss()
            self.index = faiss.IndexHNSWFlat(self.keys.shape[1], 16, faiss.METRIC_L1)
            self.index.hnsw.efConstruction = 80
            self.index.hnsw.efSearch = ef
            self.index.add(self.keys)  # graph construction is deterministic for one thread
        elif method == "lsh":
            faiss = _faiss()
            # faiss draws its rotation from a fixed internal seed: deterministic run to run
            self.index = faiss.IndexLSH(self.keys.shape[1], bits, True, True)
            self.index.train(self.keys)
            self.index.add(self.keys)
        else:
            raise ParameterError("lookup", f"lookup must be one of exact, hnsw, lsh, got {method!r}")

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(Q, D) → (Q, V) exact L1 distances to every key (for full distributions)."""
        q = np.asarray(queries, dtype=np.float32)
        out = np.empty((q.shape[0], self.keys.shape[0]), dtype=np.float32)
        for a in range(0, q.shape[0], 64):  # chunks bound memory at 64 × V × D
            out[a : a + 64] = np.abs(q[a : a + 64, None, :] - self.keys[None]).sum(-1)
        return out

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) → (distances (Q, k), indices (Q, k)), nearest first; distances are L1
        except under ``lsh`` (Hamming bits)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None:
            d = self.distances(q)
            idx = np.argsort(d, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(d, idx, 1), idx
        dist, idx = self.index.search(q, k)
        return dist.astype(np.float32), idx.astype(np.int64)
