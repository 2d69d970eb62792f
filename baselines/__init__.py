"""Registered algorithms: one file each. Importing this package registers them all."""

from . import finetune, maml, protonet  # noqa: F401
