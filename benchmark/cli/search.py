"""`bench search`: its options (added to the parser by main.py without importing torch) and the command."""

from __future__ import annotations

import argparse
import textwrap

from .options import add_hparam_option, key_values, request_from_args

SEARCH_EPILOG = """examples:
  bench search --strategy darts --objective protonet --dataset omniglot --max-time 1800
  bench search --strategy rl --objective protonet --dataset omniglot --steps 2000 --seed 1
  bench search --strategy darts --objective maml --dataset caltech101 --hparam order=1
  bench search --strategy random --dataset omniglot            # the random-search reference, same size
  bench evaluate --method protonet --protocol omniglot-20w1s --hparam backbone=darts-omniglot-v1
"""


def add_search_parser(sub) -> None:
    sp = sub.add_parser(
        "search",
        help="search a few-shot backbone's cell (DARTS, RL) and write it as a genotype, a backbone by name",
        description=textwrap.dedent("""\
            Search the DARTS-style cell space for a few-shot backbone: architecture weights (darts) or an RL
            controller (rl) on the protocol's meta-validation episodes, the shared network's weights on its
            meta-training episodes; random draws one cell uniformly (the baseline NAS is judged against). The
            found cell is widened to a reference backbone's parameter count (--match) and written as a genotype
            file with its seed and search cost (device, wall-clock seconds, episodes seen). Files in
            benchmark/methods/genotypes/ (the default --out) are backbones: --hparam backbone=NAME. The search
            checkpoints itself; --resume continues an interrupted one. The test split is never read."""),
        epilog=SEARCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("--strategy", required=True, choices=("darts", "rl", "random"))
    sp.add_argument("--objective", default="protonet", choices=("protonet", "maml"), help="(default protonet)")
    sp.add_argument("--dataset", default=None, help="omniglot (searched on omniglot-20w1s) or caltech101 (5w1s)")
    sp.add_argument("--protocol", default=None, help="the few-shot protocol whose splits and episodes it searches on")
    sp.add_argument("--steps", type=int, default=1000, help="search steps, a meta-batch each (default 1000)")
    sp.add_argument("--max-time", type=float, default=None, metavar="SECONDS", help="stop the search after this")
    sp.add_argument("--seed", type=int, default=0, help="initialisation and episodes; the genotype names it")
    sp.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    add_hparam_option(sp, "a search hyper-parameter: order=1|2, alpha_lr, w_lr, meta_batch, controller_lr, ...")
    sp.add_argument("--width", type=int, default=None, help="the supernet's channels while searching (default 16)")
    sp.add_argument("--cells", type=int, default=None, help="cells in the network (default 4)")
    sp.add_argument(
        "--match",
        default="conv4",
        choices=("conv4", "resnet12", "none"),
        help="widen the found cell to this backbone's parameter count at the protocol's input (default conv4)",
    )
    sp.add_argument("--name", default=None, help="the genotype's name, ending in -vN (default <strategy>-<dataset>-vN)")
    sp.add_argument("--out", default=None, help="the genotype file (default benchmark/methods/genotypes/NAME.json)")
    sp.add_argument("--checkpoint", default=None, help="(default <data dir>/nas/NAME.ckpt.pt)")
    sp.add_argument("--resume", action="store_true", help="continue the search in --checkpoint")
    sp.add_argument("--data-dir", default=None, help="prepared datasets live here (default: $BENCH_DATA_DIR)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_search(args, ap) -> int:
    from ..nas.run import SearchRequest, check_request, search

    req = request_from_args(SearchRequest, args, hparams=key_values(args.hparam), progress=not args.quiet)
    check_request(req)  # every option before any data is read
    g, path = search(req)
    s = g.search
    print(f"found {g.name}: {g.cell}")
    print(
        f"  {g.params['count']:,} weights at {g.params['image_size']} px ({g.channels} channels; matched to "
        f"{g.params['matched_to']}: {g.params['references'].get(g.params['matched_to'], '-')}); search: "
        f"{s['steps']} steps, {s['episodes']['train']} + {s['episodes']['val']} episodes, {s['wall_s']:.0f} s on "
        f"{s['device'].get('name', s['device'].get('type'))}, stopped by {s['stopped_by']}"
    )
    print(f"wrote {path}")
    print(f"use it: bench evaluate --method protonet --protocol {s['protocol']} --hparam backbone={g.name}")
    return 0
