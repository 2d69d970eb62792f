"""The method contract (`MetaLearner`), the registry of methods, backbones and paper recipes."""

from ..core.errors import HParamError
from .backbones import BACKBONES, BatchStatNorm2d, make_backbone, statistics_from
from .contract import ALGORITHMS, COMMON_HPARAMS, MetaLearner, TaskInfo, prototypes, register
from .domains import DomainLearner
from .genotype import GENOTYPES, Genotype, architecture_block, architecture_problem
from .noisy import NOISY_RECIPE, NoisyBatch, NoisyLearner, batch_statistics, cifar_anchors
from .recipes import PaperResult, Recipe, ResolvedRecipe, paper_result, resolve_recipe
from .search import Choice, Distribution, LogUniform, Uniform, sample_space

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
    "NOISY_RECIPE",
    "NoisyBatch",
    "NoisyLearner",
    "batch_statistics",
    "cifar_anchors",
    "GENOTYPES",
    "Genotype",
    "architecture_block",
    "architecture_problem",
    "TaskInfo",
    "prototypes",
    "register",
    "PaperResult",
    "Recipe",
    "ResolvedRecipe",
    "paper_result",
    "resolve_recipe",
    "Choice",
    "Distribution",
    "LogUniform",
    "Uniform",
    "sample_space",
]
