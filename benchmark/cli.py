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
                        "protocol's fixed test episodes, print mean +/- 95% CI and write a result record to "
                        "results/<setting>/<protocol>/<method>/<run>.json.")
    ev.add_argument("--method", default="protonet", help="a registered method (default: protonet; see `bench list`)")
    ev.add_argument("--protocol", nargs="+", default=["omniglot-5w1s"],
                    help="a registered protocol (default: omniglot-5w1s); several that share their training "
                         "set-up (e.g. caltech101-5w1s and the caltech101-to-pacs-*-5w1s ones) train once per seed")
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

    sm = sub.add_parser("submit", help="run your own method (one Python file) on protocols for the leaderboard",
                        description=textwrap.dedent("""\
                            Load PATH.py, a benchmark.algorithms.MetaLearner subclass in one file (name the
                            class with :ClassName if the file defines several), check it meets the method
                            contract with a dry predict, then train and evaluate it on each protocol like
                            `bench evaluate`. Records are of kind 'submission' and name the file and its
                            sha256. See examples/simpleshot.py and examples/README.md."""),
                        epilog="examples:\n  bench submit examples/simpleshot.py --protocols omniglot-5w1s "
                        "--train-steps 300\n  bench submit mymethod.py:MyMethod --protocols few-shot --seeds 0 1 2",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("spec", metavar="PATH.py[:ClassName]", help="the submission file (and class)")
    sm.add_argument("--protocols", nargs="+", default=["omniglot-5w1s"], metavar="NAME",
                    help="protocol names, or groups: few-shot, cross-domain, all (default: omniglot-5w1s)")
    sm.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the protocol's)")
    sm.add_argument("--episodes", type=int, default=None, help="test episodes (default: the protocol's, 600)")
    sm.add_argument("--train-steps", type=int, default=None, help="training steps (default: the protocol's budget)")
    sm.add_argument("--max-train-time", type=float, default=None, metavar="SECONDS",
                    help="stop training after this many seconds even if --train-steps are not done")
    sm.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    sm.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                    help="override a hyper-parameter declared in the method's HPARAMS (repeatable)")
    sm.add_argument("--results", default=None, help="results folder (default: $BENCH_RESULTS_DIR or ./results)")
    sm.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(sm)

    vf = sub.add_parser("verify", help="re-run a sample of a record's test episodes from its checkpoints",
                        description=textwrap.dedent("""\
                            Check a result record: its checkpoints' sha256, the submission file's sha256 (for
                            submissions) and the protocol's fixed test episodes (fingerprint); then reload each
                            seed's weights, re-run a seeded random sample of test episodes and compare the
                            per-episode accuracies with the record (at most one query per episode may differ,
                            half a query on average).
                            Exit status: 0 verified, 1 not reproduced or tampered with, 2 cannot verify
                            (missing record or checkpoint, unknown protocol or version, data not prepared)."""),
                        epilog="example:\n  bench verify results/few-shot/omniglot-5w1s/simpleshot/RUN.json --sample 50",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    vf.add_argument("record", metavar="RECORD.json", help="a record under <results>/<setting>/<protocol>/<method>/")
    vf.add_argument("--sample", type=int, default=20, help="test episodes to re-run per seed (0: all; default 20)")
    vf.add_argument("--seed", type=int, default=0, help="seed choosing the sampled episodes (default 0)")
    vf.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    vf.add_argument("--source", default=None, metavar="PATH.py",
                    help="the submission file, if it is no longer where the record says")
    _add_data_dir(vf)

    cp = sub.add_parser("compare", help="paired comparison of two records on the same test episodes",
                        description="Is A better than B, by how much, and with what confidence? Compares two "
                        "records of the same protocol episode by episode: the mean difference with its 95% CI, "
                        "a paired t-test and the Wilcoxon signed-rank test the leaderboard ranks with.")
    cp.add_argument("a", help="record A (a results/.../<run>.json file)")
    cp.add_argument("b", help="record B")

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
    from .harness import run_many
    from .protocols import PROTOCOLS
    protos = [PROTOCOLS.get(p) for p in args.protocol]
    ensure_prepared(list(dict.fromkeys(d for p in protos for d in p.datasets)), args.data_dir)
    run_many(args.method, args.protocol, seeds=args.seeds, episodes=args.episodes, train_steps=args.train_steps,
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


def cmd_compare(args, ap) -> int:
    from .ranking import RANK_ALPHA, NotPairable, compare, episode_means, significantly_different
    from .results import InvalidRecord, read_record
    from .stats import mean_ci
    recs = []
    for path in (args.a, args.b):
        try:
            recs.append(read_record(path))
        except (OSError, InvalidRecord) as e:
            print(f"bench: error: {path}: {e}", file=sys.stderr)
            return 2
    a, b = recs
    try:
        test = compare(a, b)
    except NotPairable as e:
        print(f"bench: error: the records cannot be compared episode by episode: {e}", file=sys.stderr)
        return 2
    diff = mean_ci(episode_means(a) - episode_means(b))
    for tag, r in (("A", a), ("B", b)):
        s = r["summary"]
        ci = f"{100 * s['ci95']:.2f}" if s["ci95"] is not None else "n/a"
        print(f"{tag}: {r['method']['name']:<14} {r['protocol']['name']} v{r['protocol']['version']}  "
              f"{100 * s['mean']:.2f} +/- {ci}%  ({r['run_id']})")
    print(f"difference A - B: {100 * diff.mean:+.2f} +/- {100 * diff.ci95:.2f} points "
          f"(95% CI over {diff.n} paired episodes)")
    print(f"paired t-test p = {test.t_pvalue:.3g}; Wilcoxon signed-rank p = {test.wilcoxon_pvalue:.3g}")
    if significantly_different(test):
        better, worse = ("A", "B") if test.mean_diff > 0 else ("B", "A")
        print(f"{better} is significantly better than {worse} (Wilcoxon, alpha = {RANK_ALPHA}).")
    else:
        print(f"no significant difference (Wilcoxon, alpha = {RANK_ALPHA}): on the leaderboard they share a rank "
              f"when one of them leads.")
    return 0


def cmd_leaderboard(args, ap) -> int:
    from .serve import launch
    return launch(paths.results_dir(args.results), port=args.port)


def cmd_submit(args, ap) -> int:
    from .protocols import PROTOCOLS
    from .submit import submit

    def prepare(names):  # after the submission passed its checks: a broken file fails fast
        ensure_prepared(list(dict.fromkeys(d for n in names for d in PROTOCOLS.get(n).datasets)), args.data_dir)

    submit(args.spec, args.protocols, before_run=prepare, seeds=args.seeds, episodes=args.episodes, train_steps=args.train_steps,
           device=args.device, hparams=_hparams(args.hparam), data_dir=args.data_dir, results_dir=args.results,
           progress=not args.quiet, max_train_time=args.max_train_time)
    return 0


def cmd_verify(args, ap) -> int:
    from .submit import verify
    report = verify(args.record, sample=args.sample, device=args.device, seed=args.seed, data_dir=args.data_dir,
                    source=args.source, log=print)
    print(report.format())
    return 0 if report.passed else 1


COMMANDS = {"evaluate": cmd_evaluate, "data": cmd_data, "list": cmd_list, "perf": cmd_perf,
            "leaderboard": cmd_leaderboard, "submit": cmd_submit, "verify": cmd_verify, "compare": cmd_compare}

if __name__ == "__main__":
    sys.exit(main())
