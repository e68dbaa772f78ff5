"""Benchmarks that measure what sazanami's samplers buy: :mod:`~sazanami.bench.frontier`, and the
``sazanami bench`` command group (:mod:`~sazanami.bench.command`)."""
