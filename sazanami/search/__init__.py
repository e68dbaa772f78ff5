"""Search: strategies that turn diversity into quality, and the trees they return.

    >>> from sazanami import Engine, SamplingParams, load
    >>> from sazanami.search import search
    >>> engine = Engine(load())
    >>> tree = search(engine, "Write one sentence using: dog, ball, park.", "anneal",
    ...               scorer="contains:dog,ball,park", budget=800, seed=1,
    ...               params=SamplingParams(max_tokens=48), rounds=3)
    >>> print(tree.text)            # the winner
    >>> print(tree.render())        # the whole tree, indented, with scores

Tools and grammars (:class:`sazanami.islands.Islands`) go in with ``islands=``: every
candidate gets them, each branch keeps its own tool history.

Parts: :mod:`~sazanami.search.scorers` (built from specs by :mod:`~sazanami.search.scorer_specs`;
keyword inflections in :mod:`~sazanami.search.inflection`), :mod:`~sazanami.search.selectors`,
:mod:`~sazanami.search.synthesis`, :mod:`~sazanami.search.budget`,
:mod:`~sazanami.search.tree`, :mod:`~sazanami.search.strategies`,
:mod:`~sazanami.search.flows`; the CLI commands live in :mod:`~sazanami.cli.search`.
"""

from sazanami.search.budget import Budget, BudgetError, Ledger
from sazanami.search.context import SearchContext
from sazanami.search.flows import Flow
from sazanami.search.scorer_specs import make_scorer
from sazanami.search.scorers import (
    CombinedScorer,
    ContainsScorer,
    JudgeScorer,
    LogprobScorer,
    NoveltyScorer,
    RegexScorer,
    Score,
    Scorer,
    VerifierScorer,
    parse_judge_score,
)
from sazanami.search.selectors import MMR, Selector, TopK, make_selector
from sazanami.search.strategies import (
    STRATEGIES,
    anneal,
    beam,
    best_of_n,
    check_strategy_options,
    neighbour,
    noise_search,
    optimize,
    search,
    strategy_options,
    synthesize,
    temperature_schedule,
    tree_search,
)
from sazanami.search.synthesis import Improver, Synthesizer
from sazanami.search.tree import Node, Tree, TreeError

__all__ = [
    "MMR",
    "STRATEGIES",
    "Budget",
    "BudgetError",
    "CombinedScorer",
    "ContainsScorer",
    "Flow",
    "Improver",
    "JudgeScorer",
    "Ledger",
    "LogprobScorer",
    "Node",
    "NoveltyScorer",
    "RegexScorer",
    "Score",
    "Scorer",
    "SearchContext",
    "Selector",
    "Synthesizer",
    "TopK",
    "Tree",
    "TreeError",
    "VerifierScorer",
    "anneal",
    "beam",
    "best_of_n",
    "check_strategy_options",
    "make_scorer",
    "make_selector",
    "neighbour",
    "noise_search",
    "optimize",
    "parse_judge_score",
    "search",
    "strategy_options",
    "synthesize",
    "temperature_schedule",
    "tree_search",
]
