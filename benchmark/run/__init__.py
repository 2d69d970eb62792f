"""Running one method: the run configuration, devices, training on a stream, checkpoints, provenance.
Names load on first use, so the configuration is available without importing torch."""

from ..core.lazy import lazy_exports

_EXPORTS = {
    "CHECKPOINTS": ".checkpoints",
    "save_checkpoint": ".checkpoints",
    "KINDS": ".config",
    "RunConfig": ".config",
    "device_info": ".device",
    "on_device_if_it_fits": ".device",
    "place": ".device",
    "resolve_device": ".device",
    "sync": ".device",
    "environment": ".provenance",
    "git_info": ".provenance",
    "FiniteLoss": ".training",
    "Stream": ".training",
    "TrainingDiverged": ".training",
    "fit": ".training",
    "quiet_lightning": ".training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
