"""`bench sweep`: its options (added to the parser by main.py without importing torch or Ray) and the command."""

from __future__ import annotations

import argparse
import sys
import textwrap

from ..core import paths
from .options import key_values

SWEEP_EPILOG = """examples:
  bench sweep --method protonet maml --protocol omniglot-5w1s --seeds 0 1 2
  bench sweep --method protonet --protocol omniglot-5w1s --trials 8 --train-steps 2000   # random search
  bench sweep --method maml --grid inner_lr=0.1,0.4 --grid meta_lr=1e-3,3e-4               # a grid
  bench sweep sweep.toml --address auto                  # a sweep file, on a running Ray cluster
"""


def add_sweep_parser(sub) -> None:
    sw = sub.add_parser(
        "sweep",
        help="many runs on Ray: methods x protocols x seeds x hyper-parameters, resumable, selected on validation",
        description=textwrap.dedent("""\
            Run every trial of a sweep (one `bench evaluate` run of one configuration and seed, with its own
            record) as Ray tasks: Ray starts in this process unless --address names a running cluster. A trial
            whose record exists (matched by the sha256 of its full configuration) is skipped, so a sweep stopped
            at any point and started again runs only what is missing. Per method and protocol, the configuration
            with the best validation accuracy averaged over its seeds becomes one record in the results folder
            (the test episodes never choose). Exit status 1 when a trial failed."""),
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sw.add_argument("file", nargs="?", default=None, help="a sweep file (.toml, .yaml): the options below as keys")
    sw.add_argument("--method", nargs="+", default=None, help="methods (default: protonet)")
    sw.add_argument("--protocol", nargs="+", default=None, help="protocols (default: omniglot-5w1s)")
    sw.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the protocol's)")
    sw.add_argument("--train-steps", type=int, default=None, help="training steps (default: the recipe's/protocol's)")
    sw.add_argument("--episodes", type=int, default=None, help="test episodes (default: the protocol's, 600)")
    sw.add_argument("--max-train-time", type=float, default=None, metavar="SECONDS", help="training time cap per trial")
    sw.add_argument(
        "--hparam", action="append", default=None, metavar="KEY=VALUE", help="fixed in every trial (repeatable)"
    )
    sw.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="KEY=V1,V2",
        help="grid search: every combination of these values (repeatable)",
    )
    sw.add_argument(
        "--trials",
        type=int,
        default=None,
        help="random search: configurations drawn per method and protocol from the method's search space "
        "(`bench list --method M` shows it)",
    )
    sw.add_argument(
        "--sweep-seed", type=int, default=None, help="which configurations --trials draws (default 0): a pure function"
    )
    sw.add_argument("--name", default=None, help="the sweep's folder name (default: from the methods and protocols)")
    sw.add_argument("--val-episodes", type=int, default=None, help="validation episodes per check (default 100)")
    sw.add_argument("--val-checks", type=int, default=None, help="validation checks per run (default 5)")
    sw.add_argument("--address", default=None, help="a running Ray cluster: auto or HOST:PORT (default: Ray here)")
    sw.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs each trial reserves (default 1)")
    sw.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="the GPU share each trial reserves, e.g. 0.25: four trials per GPU (default: 0.25 where the cluster "
        "has GPUs, else 0)",
    )
    sw.add_argument("--logger", choices=("csv", "tensorboard", "mlflow", "wandb"), default=None, help="training curves")
    sw.add_argument("--log-dir", default=None, help="where loggers write (default: logs/ beside the sweep folder)")
    sw.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    sw.add_argument(
        "--sweeps",
        default=None,
        help="where sweep folders live (default: $BENCH_SWEEPS_DIR, else sweeps/ beside the results folder)",
    )
    sw.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module each trial imports first, e.g. one that registers your backbone (repeatable)",
    )
    sw.add_argument("--dry-run", action="store_true", help="list the trials and which are recorded; run nothing")
    sw.add_argument(
        "--source",
        default=None,
        help=f"archives of datasets not prepared yet (default: ${paths.SOURCE_ENV}_<NAME>, ${paths.SOURCE_ENV})",
    )
    sw.add_argument(
        "--data-dir",
        default=None,
        help=f"prepared datasets (default: ${paths.DATA_DIR_ENV} or ~/.cache/metabench); Ray workers must see it",
    )
    sw.add_argument("--quiet", action="store_true", help="no progress bar")


def spec_from_args(args):
    """The sweep file's settings, overridden by each option given on the command line."""
    from ..sweep import SweepSpec, read_spec_file

    settings = read_spec_file(args.file) if args.file else {}
    given = {
        "methods": args.method,
        "protocols": args.protocol,
        "seeds": args.seeds,
        "train_steps": args.train_steps,
        "episodes": args.episodes,
        "max_train_time": args.max_train_time,
        "trials": args.trials,
        "seed": args.sweep_seed,
        "name": args.name,
        "val_episodes": args.val_episodes,
        "val_checks": args.val_checks,
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "logger": args.logger,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    if args.hparam:
        settings["hparams"] = {**settings.get("hparams", {}), **key_values(args.hparam, "--hparam")}
    if args.grid:
        grid = {k: [x.strip() for x in v.split(",") if x.strip()] for k, v in key_values(args.grid, "--grid").items()}
        settings["grid"] = {**settings.get("grid", {}), **grid}
    from ..core.errors import BenchError

    try:
        return SweepSpec(
            **settings,
            data_dir=args.data_dir,
            results_dir=args.results,
            sweeps_dir=args.sweeps,
            log_dir=args.log_dir,
        )
    except TypeError as e:  # a file value of the wrong kind
        raise BenchError(f"sweep settings: {e}") from None


def cmd_sweep(args, ap) -> int:
    import importlib

    from ..data import ensure_prepared
    from ..protocols import PROTOCOLS
    from ..protocols import added as protocol_files
    from ..sweep import expand, run_sweep

    for module in args.imports:  # here too: planning checks the methods and backbones they register
        importlib.import_module(module)
    spec = spec_from_args(args)
    trials = expand(spec, args.data_dir)  # every configuration checked before any data or Ray
    if args.source:
        import os

        os.environ[paths.SOURCE_ENV] = args.source
    names = protocol_files.resolve(spec.protocols, args.data_dir)
    if not args.dry_run and trials:
        ensure_prepared(list(dict.fromkeys(d for n in names for d in PROTOCOLS.get(n).datasets)), args.data_dir)
    try:
        imports = ("baselines", *args.imports)  # by name: the sweep layer does not import the methods itself
        result = run_sweep(spec, args.address, imports, progress=not args.quiet, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print("bench: interrupted; finished trials keep their records: the same command resumes.", file=sys.stderr)
        return 130
    return 1 if result.failed else 0
