"""Registered algorithms: one file each. Importing this package registers them all."""

from . import (  # noqa: F401
    anil,
    erm,
    finetune,
    icl_transformer,
    maml,
    mann,
    matching,
    meta_lstm,
    meta_sgd,
    mldg,
    protonet,
    relation,
    reptile,
    siamese,
    simpleshot,
    snail,
)
