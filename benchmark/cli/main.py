"""The `bench` command line."""

from __future__ import annotations

import argparse
import sys
import textwrap

from ..core import paths
from .options import add_hparam_option
from .pretrain import add_pretrain_parser
from .search import add_search_parser
from .sweep import add_sweep_parser

EPILOG = """examples:
  bench data prepare omniglot --source ../shared/data      # once: archive -> prepared dataset
  bench evaluate                                           # ProtoNet on omniglot-5w1s, end to end
  bench evaluate --method maml --protocol omniglot-5w1s --seeds 0 1 2 --hparam first_order=true
  bench list
"""


def _add_data_dir(p):
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"prepared datasets live here (default: ${paths.DATA_DIR_ENV} or ~/.cache/metabench)",
    )


def _add_selection(p):
    p.add_argument(
        "--select",
        choices=("auto", "final"),
        default="auto",
        help="which trained model is scored: auto = the best on the protocol's validation episodes "
        "where it defines a validation split, else the final one; final = always the final one",
    )
    p.add_argument("--val-episodes", type=int, default=100, help="validation episodes per check (default 100)")
    p.add_argument(
        "--val-checks",
        type=int,
        default=5,
        help="validation checks spread over the training budget, plus one at its end (default 5)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench",
        description="metabench: meta-learning methods on fixed, versioned episodes, with 95% confidence intervals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    ev = sub.add_parser(
        "evaluate",
        help="train a method on a protocol and score it on the fixed test episodes",
        description="Train METHOD on PROTOCOL's meta-training split, evaluate it on the "
        "protocol's fixed test episodes, print mean +/- 95% CI and write a result record to "
        "results/<setting>/<protocol>/<method>/<run>.json.",
    )
    ev.add_argument("--method", default="protonet", help="a registered method (default: protonet; see `bench list`)")
    ev.add_argument(
        "--protocol",
        nargs="+",
        default=["omniglot-5w1s"],
        help="a registered or added protocol, or a protocol file (default: omniglot-5w1s); several that share "
        "their training set-up (e.g. caltech101-5w1s and the caltech101-to-pacs-*-5w1s ones) train once per seed",
    )
    ev.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="training seeds; several give per-seed results and a CI over seed means (default: 0)",
    )
    ev.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="test episodes (default: the protocol's, 600); the number of streams on a continual stream protocol "
        "(default 10), of episodes per group on a meta-training sequence (default 100)",
    )
    ev.add_argument(
        "--max-classes",
        type=int,
        default=None,
        help="continual stream protocols: learn only the first N classes of each stream (default: all 600; "
        "scored at the protocol's checkpoints up to N and at N; the record says so)",
    )
    ev.add_argument("--train-steps", type=int, default=None, help="training steps (default: the protocol's budget)")
    ev.add_argument(
        "--max-train-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop training after this many seconds even if --train-steps are not done "
        "(the record keeps the steps actually taken)",
    )
    ev.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    add_hparam_option(ev, "override a hyper-parameter of the method; `bench list --method M` shows them")
    ev.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    _add_selection(ev)
    ev.add_argument(
        "--source",
        default=None,
        help=f"folder holding the dataset archives, used when a dataset is not prepared yet "
        f"(default: ${paths.SOURCE_ENV}_<NAME>, then ${paths.SOURCE_ENV})",
    )
    ev.add_argument(
        "--devices",
        type=int,
        default=1,
        help="train in N processes with Lightning's DDP, the meta-batch split across them (N GPUs; on a CPU, N gloo "
        "processes); episodic settings; the same numbers as one device up to float rounding (default 1)",
    )
    ev.add_argument(
        "--logger",
        choices=("csv", "tensorboard", "mlflow", "wandb"),
        default=None,
        help="log training curves and learning rates with this Lightning logger, offline (the record names where)",
    )
    ev.add_argument("--log-dir", default=None, help="where --logger writes (default: logs/ beside the results folder)")
    ev.add_argument("--no-write", action="store_true", help="print the result only; write no record")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(ev)

    data = sub.add_parser("data", help="prepare datasets from their official archives")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    pr = dsub.add_parser(
        "prepare",
        help="turn an official archive into a Hugging Face dataset on disk",
        description=textwrap.dedent(f"""\
                            Turn a dataset's official archive into a Hugging Face `datasets` dataset (Arrow)
                            in the data folder, with a manifest of checksums. Idempotent and atomic.
                            The source is --source, else ${paths.SOURCE_ENV}_<NAME>, else ${paths.SOURCE_ENV}
                            (a folder with one sub-folder per dataset), else the canonical download URL."""),
    )
    pr.add_argument("name", help="dataset name (see `bench list`); with --from-folder, the name to give yours")
    pr.add_argument("--source", default=None, help="folder (or base URL) holding the archive(s)")
    pr.add_argument(
        "--from-folder",
        default=None,
        metavar="PATH",
        help="your own images instead: PATH/<class>/<image> or PATH/<domain>/<class>/<image>",
    )
    pr.add_argument(
        "--layout",
        choices=("class", "domain/class"),
        default=None,
        help="the --from-folder layout (default: detected from the tree)",
    )
    pr.add_argument("--force", action="store_true", help="rebuild even if already prepared from the same source")
    _add_data_dir(pr)

    pt = sub.add_parser(
        "protocol",
        help="add your own protocol from a TOML or YAML file",
        description="Check a protocol file and copy it to <data dir>/protocols/, so commands "
        "take it by name (--protocol NAME); any command also takes the file's path directly. "
        "See README.md, 'Your own data'.",
    )
    ptsub = pt.add_subparsers(dest="protocol_command", metavar="ACTION")
    pta = ptsub.add_parser("add", help="check a protocol file and add it by name")
    pta.add_argument("file", metavar="FILE", help="a .toml, .yaml or .yml protocol file")
    _add_data_dir(pta)

    ls = sub.add_parser("list", help="list methods, protocols and datasets")
    ls.add_argument("--method", default=None, help="show one method's hyper-parameters and defaults")
    ls.add_argument(
        "--results",
        default=None,
        help="with --method: the results folder its records are compared "
        "with the paper's numbers from (default: $BENCH_RESULTS_DIR or ./results)",
    )
    _add_data_dir(ls)

    perf = sub.add_parser(
        "perf",
        help="speed: each gradient-based method batched vs a per-task loop; evaluation episodes/s of every method",
    )
    perf.add_argument("--device", default="auto")
    perf.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="gradient-based methods to time (default: maml fomaml anil meta-sgd reptile meta-lstm)",
    )
    perf.add_argument("--tasks", type=int, default=None, help="tasks per meta-batch (default: 32 on a GPU, 4 on a CPU)")
    perf.add_argument("--inner-steps", type=int, default=5)
    perf.add_argument(
        "--repeats", type=int, default=None, help="timed calls per variant (default: 5 on a GPU, 2 on a CPU)"
    )
    perf.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        help="ProtoNet episodes to time (default: 5000 on a GPU, 50 on a CPU)",
    )
    perf.add_argument(
        "--eval-batch",
        type=int,
        default=None,
        help="ProtoNet episodes per forward pass (default: 500 on a GPU, 50 on a CPU)",
    )
    perf.add_argument(
        "--eval-methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="methods whose evaluation throughput to time (default: every method that runs omniglot-5w1s)",
    )
    perf.add_argument(
        "--method-episodes",
        type=int,
        default=None,
        help="fixed test episodes per method for that line (default: 600 on a GPU, 10 on a CPU)",
    )
    perf.add_argument(
        "--index",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="instead: the results index at sweep scale; for each N, write N valid records to a temporary folder "
        "and time the first index build, one added record, and the page's first render (e.g. --index 1000 10000)",
    )
    perf.add_argument("--out", default=None, help="also write the numbers as JSON here")
    _add_data_dir(perf)

    sm = sub.add_parser(
        "submit",
        help="run your own method (one Python file) on protocols for the leaderboard",
        description=textwrap.dedent("""\
                            Load PATH.py, a benchmark.algorithms.MetaLearner subclass in one file (name the
                            class with :ClassName if the file defines several), check it meets the method
                            contract with a dry predict, then train and evaluate it on each protocol like
                            `bench evaluate`. Records are of kind 'submission' and name the file and its
                            sha256. See examples/simpleshot.py and examples/README.md."""),
        epilog="examples:\n  bench submit examples/simpleshot.py --protocols omniglot-5w1s "
        "--train-steps 300\n  bench submit mymethod.py:MyMethod --protocols few-shot --seeds 0 1 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sm.add_argument("spec", metavar="PATH.py[:ClassName]", help="the submission file (and class)")
    sm.add_argument(
        "--protocols",
        nargs="+",
        default=["omniglot-5w1s"],
        metavar="NAME",
        help="protocol names, or groups: few-shot, cross-domain, all (default: omniglot-5w1s)",
    )
    sm.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the protocol's)")
    sm.add_argument("--episodes", type=int, default=None, help="test episodes (default: the protocol's, 600)")
    sm.add_argument("--train-steps", type=int, default=None, help="training steps (default: the protocol's budget)")
    sm.add_argument(
        "--max-train-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop training after this many seconds even if --train-steps are not done",
    )
    sm.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    add_hparam_option(sm, "override a hyper-parameter declared in the method's HPARAMS", several=False)
    _add_selection(sm)
    sm.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    sm.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(sm)

    vf = sub.add_parser(
        "verify",
        help="re-run a record's test episodes from its checkpoints",
        description=textwrap.dedent("""\
                            Check a result record: its checkpoints' sha256, the submission file's sha256 (for
                            submissions) and the protocol's fixed test episodes (fingerprint); then reload each
                            seed's weights, re-run every test episode (or --sample N of them, drawn with a
                            fresh random seed that the report prints) and compare the per-episode accuracies
                            with the record (at most one query per episode may differ, half a query on average).
                            The report says how long it took: all 600 episodes of a Conv-4 method take about a
                            minute on a 2-core CPU.
                            Exit status: 0 verified, 1 not reproduced or tampered with, 2 cannot verify
                            (missing record or checkpoint, unknown protocol or version, data not prepared)."""),
        epilog="example:\n  bench verify results/few-shot/omniglot-5w1s/my-simpleshot/RUN.json --sample 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vf.add_argument("record", metavar="RECORD.json", help="a record under <results>/<setting>/<protocol>/<method>/")
    vf.add_argument("--sample", type=int, default=0, help="test episodes to re-run per seed (default 0: all of them)")
    vf.add_argument(
        "--seed", type=int, default=None, help="seed choosing the sampled episodes (default: a fresh random one)"
    )
    vf.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    vf.add_argument(
        "--source",
        default=None,
        metavar="PATH.py",
        help="the submission file, if it is no longer where the record says",
    )
    _add_data_dir(vf)

    cp = sub.add_parser(
        "compare",
        help="paired comparison of two records on the same test episodes",
        description="Is A better than B, by how much, and with what confidence? Compares two "
        "records of the same protocol episode by episode: the mean difference with its 95% CI, "
        "a paired t-test and the Wilcoxon signed-rank test the leaderboard ranks with.",
    )
    cp.add_argument("a", help="record A (a results/.../<run>.json file)")
    cp.add_argument("b", help="record B")
    cp.add_argument(
        "--results",
        default=None,
        help="results folder whose index holds the records' checks and unit scores (default: $BENCH_RESULTS_DIR "
        "or ./results); a record outside it is read and checked from its file",
    )

    ix = sub.add_parser(
        "index",
        help="build or update the results index the leaderboard and `bench compare` read",
        description="Bring the results index up to date: read, validate and check each new or changed record "
        "once and keep its table row, unit scores and rankings (<results>/.index.sqlite, or a temporary file "
        "when the folder cannot be written). The JSON records stay the source of truth; the page and other "
        "commands update the index by themselves, and a damaged index is rebuilt.",
    )
    ix.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    ix.add_argument("--rebuild", action="store_true", help="forget the index and index every record again")

    add_sweep_parser(sub)
    add_search_parser(sub)
    add_pretrain_parser(sub)

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
    # imported only now, so `bench --help` and argument errors answer without loading torch
    from ..core.errors import BenchError

    if args.command == "list":  # the overview needs neither torch nor the methods: about a second
        from .listing import cmd_list as command
    elif args.command == "index":  # reading records needs no torch either
        from .indexing import cmd_index as command
    elif args.command == "pretrain":
        from .pretrain import cmd_pretrain as command
    else:
        from .commands import COMMANDS

        command = COMMANDS[args.command]
    try:
        return command(args, ap)
    except (BenchError, FileExistsError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
