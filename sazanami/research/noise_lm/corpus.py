"""Offline training text: docstrings of Python's standard library (they ship with Python).

Module, class and function docstrings of a fixed list of stdlib modules, in sorted order,
one document each. They change only with the Python version (3.11 here). Documents are split
into train/dev/test by a seeded shuffle of documents, so no sentence crosses splits.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

import numpy as np

MODULES = (
    "abc argparse ast asyncio bisect calendar codecs collections contextlib copy csv dataclasses datetime "
    "decimal difflib email enum fractions functools hashlib heapq hmac http.client inspect io itertools json "
    "logging math numbers operator os pathlib pickle queue random re sched secrets selectors shutil signal "
    "socket sqlite3 statistics string struct subprocess tarfile tempfile textwrap threading typing unittest "
    "urllib.request uuid weakref xml.etree.ElementTree zipfile"
).split()


def stdlib_docstrings() -> list[str]:
    """Every public docstring of :data:`MODULES` defined in that module, deduplicated, in order."""
    seen, out = set(), []
    for name in MODULES:
        mod = importlib.import_module(name)
        with warnings.catch_warnings():  # typing.io / typing.re warn when touched
            warnings.simplefilter("ignore", DeprecationWarning)
            docs = [mod.__doc__] + [
                inspect.getdoc(obj)
                for attr, obj in sorted(vars(mod).items())
                if not attr.startswith("_") and getattr(obj, "__module__", name) == name
            ]
        for d in docs:
            if d and d not in seen:
                seen.add(d)
                out.append(d)
    return out


def split(docs: list[str], seed: int, dev: float = 0.05, test: float = 0.1) -> tuple[list[str], list[str], list[str]]:
    """Seeded document-level split into (train, dev, test)."""
    perm = np.random.default_rng(seed).permutation(len(docs))
    n_test, n_dev = int(len(docs) * test), int(len(docs) * dev)
    pick = [docs[i] for i in perm]
    return pick[n_test + n_dev :], pick[n_test : n_test + n_dev], pick[:n_test]
