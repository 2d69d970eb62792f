"""Protocols: frozen, versioned values (which data a method trains on, which fixed episodes test it),
the versioned class splits they refer to, and the registry of every protocol by name."""

from .builtin import ROT4
from .continual import stream_order
from .noisy import corrupt, noise_key
from .protocol import PROTOCOLS, ContinualSpec, EpisodeSpec, NoiseSpec, Protocol, SplitSpec, Stage, register_protocol
from .splits import class_split, split_sha256

__all__ = [
    "PROTOCOLS",
    "ContinualSpec",
    "EpisodeSpec",
    "NoiseSpec",
    "corrupt",
    "noise_key",
    "stream_order",
    "Protocol",
    "SplitSpec",
    "Stage",
    "register_protocol",
    "ROT4",
    "class_split",
    "split_sha256",
]
