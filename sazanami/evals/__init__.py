"""Benchmarks that measure what sazanami's samplers buy: :mod:`~sazanami.evals.frontier`.

The ``sazanami bench`` command group over them lives in :mod:`sazanami.cli.bench`.
"""
