"""`bench pretrain`: its options (added to the parser by main.py without importing torch) and the command."""

from __future__ import annotations

import argparse
import os
import textwrap

from ..core import paths
from .options import request_from_args

PRETRAIN_EPILOG = """examples:
  bench pretrain --ssl rotation --protocol omniglot-5w1s --train-seconds 120
  bench pretrain --ssl rotation --protocol caltech101-5w1s --train-seconds 300 --seed 1
  bench evaluate --method protonet-ssl --protocol omniglot-5w1s --hparam init=PATH   # PATH: what it printed
"""


def add_pretrain_parser(sub) -> None:
    sp = sub.add_parser(
        "pretrain",
        help="self-supervised pre-training of a backbone on a protocol's training images (no labels)",
        description=textwrap.dedent("""\
            Pre-train a backbone by rotation prediction (Gidaris et al. 2018: name which of four turns an image
            was shown at) on the images of PROTOCOL's training split, without their labels; the validation and
            test splits are never read. Writes an SSL checkpoint (the backbone's weights and what produced them)
            under <results>/checkpoints/ssl/, named by its sha256, and prints its path and sha256. maml-ssl and
            protonet-ssl start from it (--hparam init=PATH) on any protocol with the same training split, image
            size and channels; their records name it and `bench verify` re-checks it."""),
        epilog=PRETRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("--ssl", default="rotation", help="the self-supervised task (rotation)")
    sp.add_argument("--protocol", default="omniglot-5w1s", help="whose training images (default omniglot-5w1s)")
    sp.add_argument("--backbone", default="conv4", help="the backbone to pre-train (default conv4)")
    sp.add_argument("--steps", type=int, default=5000, help="training steps (default 5000)")
    sp.add_argument("--train-seconds", type=float, default=None, metavar="SECONDS", help="stop after this many seconds")
    sp.add_argument("--seed", type=int, default=0, help="initialisation and batches (default 0)")
    sp.add_argument("--batch-size", type=int, default=64, help="images per step, each at 4 turns (default 64)")
    sp.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    sp.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    sp.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    sp.add_argument(
        "--source",
        default=None,
        help=f"folder holding the dataset archives, used when a dataset is not prepared yet (default: "
        f"${paths.SOURCE_ENV}_<NAME>, then ${paths.SOURCE_ENV})",
    )
    sp.add_argument("--data-dir", default=None, help="prepared datasets live here (default: $BENCH_DATA_DIR)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_pretrain(args, ap) -> int:
    from ..run.pretrain import PretrainRequest, check_request, pretrain

    req = request_from_args(PretrainRequest, args, results_dir=args.results, progress=not args.quiet)
    check_request(req)  # every option before any data is read
    if args.source:
        os.environ[paths.SOURCE_ENV] = args.source
    out = pretrain(req)
    print(f"wrote {out['path']}")
    print(f"sha256 {out['sha256']}")
    print(
        f"use it: bench evaluate --method protonet-ssl --protocol {req.protocol} --hparam init={out['path']}"
        + (f" --hparam backbone={req.backbone}" if req.backbone != "conv4" else "")
    )
    return 0
