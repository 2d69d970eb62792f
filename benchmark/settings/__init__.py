"""Settings: each owns how its protocols train and score, its record section, the statistic that ranks it
and its page section (base.py); the run loop over seeds and protocols (runner.py) calls their hooks.

Importing this package registers the built-in settings and loads no torch: names from the training
side (the run loop, episodic_training) load on first use."""

from ..core.lazy import lazy_exports
from .base import SETTINGS, PageSpec, Scored, Setting, Trained, check_record, load_record, register_setting
from .continual import Continual
from .domain_setting import DomainGeneralisation
from .episodic import CrossDomain, Episodic, FewShot
from .noisy import NoisyLabels

_EXPORTS = {
    "Prepared": ".episodic_training",
    "evaluate_model": ".episodic_training",
    "prepare_run": ".episodic_training",
    "evaluate": ".runner",
    "make_record": ".runner",
    "method_class": ".runner",
    "plan": ".runner",
    "run": ".runner",
    "setting_of": ".runner",
}
__all__ = [
    "SETTINGS",
    "PageSpec",
    "Scored",
    "Setting",
    "Trained",
    "check_record",
    "load_record",
    "register_setting",
    "Continual",
    "CrossDomain",
    "DomainGeneralisation",
    "Episodic",
    "FewShot",
    "NoisyLabels",
    *_EXPORTS,
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
