"""Registered algorithms: one file each. Importing this package registers them all."""

from . import anil, finetune, maml, meta_lstm, meta_sgd, protonet, reptile  # noqa: F401
