"""The `bench` command line."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from . import paths

EPILOG = """examples:
  bench data prepare omniglot --source ../shared/data      # once: archive -> prepared dataset
  bench evaluate                                           # ProtoNet on omniglot-5w1s, end to end
  bench evaluate --method maml --protocol omniglot-5w1s --seeds 0 1 2 --hparam first_order=true
  bench list
"""


def _hparams(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise SystemExit(f"bench: --hparam expects KEY=VALUE, got {p!r}")
        out[k.strip()] = v.strip()
    return out


def _add_data_dir(p):
    p.add_argument("--data-dir", default=None,
                   help=f"prepared datasets live here (default: ${paths.DATA_DIR_ENV} or ~/.cache/metabench)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench", description="metabench: meta-learning methods on fixed, versioned "
                                 "episodes, with 95% confidence intervals.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    ev = sub.add_parser("evaluate", help="train a method on a protocol and score it on the fixed test episodes",
                        description="Train METHOD on PROTOCOL's meta-training split, evaluate it on the "
                        "protocol's fixed test episodes, print mean +/- 95%% CI and write a result record to "
                        "results/<setting>/<protocol>/<method>/<run>.json.")
    ev.add_argument("--method", default="protonet", help="a registered method (default: protonet; see `bench list`)")
    ev.add_argument("--protocol", default="omniglot-5w1s", help="a registered protocol (default: omniglot-5w1s)")
    ev.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds; several give per-seed results and a CI over seed means (default: 0)")
    ev.add_argument("--episodes", type=int, default=None, help="test episodes (default: the protocol's, 600)")
    ev.add_argument("--train-steps", type=int, default=None, help="training steps (default: the protocol's budget)")
    ev.add_argument("--max-train-time", type=float, default=None, metavar="SECONDS",
                    help="stop training after this many seconds even if --train-steps are not done "
                         "(the record keeps the steps actually taken)")
    ev.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    ev.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                    help="override a hyper-parameter of the method (repeatable); `bench list --method M` shows them")
    ev.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    ev.add_argument("--no-write", action="store_true", help="print the result only; write no record")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(ev)

    data = sub.add_parser("data", help="prepare datasets from their official archives")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    pr = dsub.add_parser("prepare", help="turn an official archive into a Hugging Face dataset on disk",
                         description=textwrap.dedent(f"""\
                            Turn a dataset's official archive into a Hugging Face `datasets` dataset (Arrow)
                            in the data folder, with a manifest of checksums. Idempotent and atomic.
                            The source is --source, else ${paths.SOURCE_ENV}_<NAME>, else ${paths.SOURCE_ENV}
                            (a folder with one sub-folder per dataset), else the canonical download URL."""))
    pr.add_argument("name", help="dataset name (see `bench list`)")
    pr.add_argument("--source", default=None, help="folder (or base URL) holding the archive(s)")
    pr.add_argument("--force", action="store_true", help="rebuild even if already prepared from the same source")
    _add_data_dir(pr)

    ls = sub.add_parser("list", help="list methods, protocols and datasets")
    ls.add_argument("--method", default=None, help="show one method's hyper-parameters and defaults")
    _add_data_dir(ls)

    perf = sub.add_parser("perf", help="speed: batched MAML vs a per-task loop; ProtoNet evaluation episodes/s")
    perf.add_argument("--device", default="auto")
    perf.add_argument("--tasks", type=int, default=32, help="MAML tasks per meta-batch (default 32)")
    perf.add_argument("--inner-steps", type=int, default=5)
    perf.add_argument("--repeats", type=int, default=5, help="timed meta-batches per variant")
    perf.add_argument("--eval-episodes", type=int, default=2000, help="ProtoNet episodes to time")
    perf.add_argument("--eval-batch", type=int, default=500, help="ProtoNet episodes per forward pass")
    perf.add_argument("--out", default=None, help="also write the numbers as JSON here")
    _add_data_dir(perf)

    lb = sub.add_parser("leaderboard", help="open the leaderboard web page over a results folder")
    lb.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    lb.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 0
    from .data import DataError
    from .registry import UnknownName
    from .algorithms import HParamError
    from .harness import BenchError
    try:
        return COMMANDS[args.command](args, ap)
    except (DataError, BenchError, UnknownName, HParamError, FileExistsError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; nothing was written.", file=sys.stderr)
        return 130


def cmd_evaluate(args, ap) -> int:
    from .harness import run
    from .protocols import PROTOCOLS
    proto = PROTOCOLS.get(args.protocol)
    ensure_prepared(proto.datasets, args.data_dir)
    run(args.method, args.protocol, seeds=args.seeds, episodes=args.episodes, train_steps=args.train_steps,
        device=args.device, hparams=_hparams(args.hparam), data_dir=args.data_dir, results_dir=args.results,
        write=not args.no_write, progress=not args.quiet, max_train_time=args.max_train_time)
    return 0


def ensure_prepared(names, data_dir) -> None:
    """Prepare missing datasets when a source is configured; otherwise say which command to run."""
    from .data import DataError, load_prepared, prepare
    for name in names:
        try:
            load_prepared(name, data_dir)
        except DataError:
            if os.environ.get(paths.SOURCE_ENV) or os.environ.get(paths.source_env_var(name)):
                print(f"{name} is not prepared yet; preparing it from the configured source ...")
                prepare(name, data_dir=data_dir)
            else:
                raise


def cmd_data(args, ap) -> int:
    from .data import prepare
    if args.data_command != "prepare":
        ap.parse_args(["data", "--help"])
        return 2
    prepare(args.name, source=args.source, data_dir=args.data_dir, force=args.force)
    return 0


def cmd_list(args, ap) -> int:
    from .algorithms import ALGORITHMS
    from .data import DATASETS, read_manifest_if_prepared
    from .harness import method_class
    from .protocols import PROTOCOLS
    method_class("protonet")  # imports the built-in methods
    if args.method:
        cls = ALGORITHMS.get(args.method)
        print(f"{cls.name}: {cls.paper}\ntrains on: {cls.training_data}\nhyper-parameters (defaults):")
        for k, v in sorted(cls.defaults().items()):
            print(f"  {k} = {v!r}")
        return 0
    print("methods:")
    for name, cls in ALGORITHMS.items():
        print(f"  {name:<14} {cls.paper}")
    print("\nprotocols:")
    for name, p in PROTOCOLS.items():
        print(f"  {name:<34} v{p.version}  {p.setting:<13} {p.episode.ways}-way {p.episode.shots}-shot, "
              f"{p.image_size}px, {p.test_episodes} test episodes")
    print(f"\ndatasets (prepared in {paths.data_dir(args.data_dir)}):")
    for name, spec in DATASETS.items():
        m = read_manifest_if_prepared(name, args.data_dir)
        state = f"prepared: {m['rows']} images, {m['classes']} classes" if m else f"not prepared (bench data prepare {name})"
        print(f"  {name:<14} {state}\n  {'':<14} {spec.description}")
    return 0


def cmd_perf(args, ap) -> int:
    from .perf import main as perf_main
    return perf_main(args)


def cmd_leaderboard(args, ap) -> int:
    from .serve import launch
    return launch(paths.results_dir(args.results), port=args.port)


COMMANDS = {"evaluate": cmd_evaluate, "data": cmd_data, "list": cmd_list, "perf": cmd_perf,
            "leaderboard": cmd_leaderboard}

if __name__ == "__main__":
    sys.exit(main())
