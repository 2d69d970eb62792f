"""Sweeps: methods x protocols x hyper-parameter configurations x seeds, each trial an ordinary run with an
ordinary record, run as Ray tasks, resumable by the trials' hashes, with model selection on validation data."""

from .driver import SweepResult, run_sweep, summary
from .select import RULE, Selection, select
from .spec import SweepSpec, Trial, expand, read_spec_file
from .trial import Context, Outcome, run_trial

__all__ = [
    "RULE",
    "Context",
    "Outcome",
    "Selection",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "expand",
    "read_spec_file",
    "run_sweep",
    "run_trial",
    "select",
    "summary",
]
