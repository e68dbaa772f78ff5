"""Benchmarks that measure what sazanami's samplers buy: :mod:`~sazanami.bench.frontier`.

The ``sazanami bench`` command group over them lives in :mod:`sazanami.cli.bench`.
"""
