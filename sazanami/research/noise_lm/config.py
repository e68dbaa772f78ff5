"""The noise-embedding LM's hyperparameters: one frozen, validated object."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sazanami.errors import ParameterError, check_int, check_range

LOOKUPS = ("exact", "hnsw", "lsh")


@dataclass(frozen=True)
class NoiseLMConfig:
    """Everything that shapes a model; saved next to its arrays."""

    dim: int = 64
    """Length of each token's random key (uniform on [0, 1))."""
    order: int = 3
    """Longest context (tokens) a noise embedding is kept for; shorter ones back it off."""
    digits: int = 3
    """Decimal digits of each key coordinate the digit-weighted distance compares."""
    digit_factor: float = 10.0
    """f: digit j (from the left, j = 0, 1, ...) weighs f**-j; f = 10 makes the distance ≈ L1."""
    lookup: str = "exact"
    """Nearest-key search: ``exact`` (NumPy), ``hnsw`` or ``lsh`` (faiss, extra ``research``)."""
    temperature: float = 4.0
    """τ in p(v) ∝ exp(-distance(e, key_v) / τ); training refits it on the dev split (calibrate)."""
    floor: float = 0.5
    """ε: the unigram share mixed into p so no token has probability 0."""
    backoff: float = 1.0
    """β: weight of the shorter context's embedding in the Witten–Bell-style interpolation."""
    hub: float = 1.0
    """λ: subtract λ × each key's distance to the empty context's embedding (a hub correction; 0 = the seed's plain lookup)."""
    slots: int = 4
    """S: the hierarchical-mean level kept for a sentence is the one with S vectors."""
    scatter: int = 4
    """R: random position subsets ('scattershot') averaged into a sentence's embedding."""
    seed: int = 0
    """Seeds the keys, the scattershot subsets and the middle layer's training cuts."""

    def __post_init__(self) -> None:
        check_int("dim", self.dim, 2, 4096)
        check_int("order", self.order, 1, 8)
        check_int("digits", self.digits, 1, 6)
        check_range("digit_factor", self.digit_factor, 1.0, None)
        if self.lookup not in LOOKUPS:
            raise ParameterError("lookup", f"lookup must be one of {', '.join(LOOKUPS)}, got {self.lookup!r}")
        check_range("temperature", self.temperature, 0.0, None, low_open=True)
        check_range("floor", self.floor, 0.0, 1.0, high_open=True)
        check_range("backoff", self.backoff, 0.0, None, low_open=True)
        check_range("hub", self.hub, 0.0, 1.0)
        check_int("slots", self.slots, 1, 64)
        check_int("scatter", self.scatter, 0, 64)
        check_int("seed", self.seed, 0, 2**63 - 1)

    def to_dict(self) -> dict:
        return asdict(self)
