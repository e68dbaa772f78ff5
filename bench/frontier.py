"""The diversity-perplexity frontier benchmark (see :mod:`sazanami.evals.frontier`).

    python bench/frontier.py --quick                 # minutes on a laptop CPU
    python bench/frontier.py --out docs              # the full run behind docs/RESULTS.md

Same options as ``sazanami bench frontier``; ``--help`` lists them.
"""

from sazanami.cli.bench import frontier

if __name__ == "__main__":
    frontier()
