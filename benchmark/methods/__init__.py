"""The method contract (`MetaLearner`), the registry of methods, backbones and paper recipes."""

from ..core.errors import HParamError
from .backbones import BACKBONES, BatchStatNorm2d, make_backbone, statistics_from
from .contract import ALGORITHMS, COMMON_HPARAMS, MetaLearner, TaskInfo, prototypes, register
from .domains import DomainLearner
from .recipes import PaperResult, Recipe, ResolvedRecipe, paper_result, resolve_recipe

__all__ = [
    "HParamError",
    "BACKBONES",
    "BatchStatNorm2d",
    "make_backbone",
    "statistics_from",
    "ALGORITHMS",
    "COMMON_HPARAMS",
    "MetaLearner",
    "DomainLearner",
    "TaskInfo",
    "prototypes",
    "register",
    "PaperResult",
    "Recipe",
    "ResolvedRecipe",
    "paper_result",
    "resolve_recipe",
]
