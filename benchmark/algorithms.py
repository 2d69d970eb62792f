"""The name submissions written before the re-layout import the contract by; it is `benchmark.methods`."""

from .methods.contract import ALGORITHMS, COMMON_HPARAMS, HParamError, MetaLearner, TaskInfo, prototypes, register

__all__ = ["ALGORITHMS", "COMMON_HPARAMS", "HParamError", "MetaLearner", "TaskInfo", "prototypes", "register"]
