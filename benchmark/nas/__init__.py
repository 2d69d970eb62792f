"""Architecture search for few-shot backbones: DARTS and an RL controller over the cell space of
benchmark.methods.nas_space; found cells become genotype files (benchmark.methods.genotype)."""

from .darts import Darts, alpha_gradient
from .objective import Objective, SearchModel
from .rl import Controller, Enas
from .search import STRATEGIES, SearchConfig, SearchOutcome, resolve_hparams, run_search

__all__ = [
    "Darts",
    "alpha_gradient",
    "Objective",
    "SearchModel",
    "Controller",
    "Enas",
    "STRATEGIES",
    "SearchConfig",
    "SearchOutcome",
    "resolve_hparams",
    "run_search",
]
