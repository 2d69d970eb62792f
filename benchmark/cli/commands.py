"""What each `bench` command does; the parser is in main.py. This is the top layer: it may import
every layer below it, and it is what registers the built-in methods (`import baselines`)."""

from __future__ import annotations

import os
import sys

import numpy as np

import baselines  # noqa: F401  (registers the built-in methods)

from ..core import paths
from ..core.errors import InvalidRecord
from ..data import ensure_prepared, prepare
from ..data.folder import prepare_folder
from ..methods import ALGORITHMS
from ..page.board import compare, load, record_with_units
from ..page.tables import paper_in_ci, paper_text
from ..protocols import PROTOCOLS
from ..protocols import added as protocol_files
from ..records import Record, format_ci, mean_ci
from ..run import RunConfig, resolve_device
from ..settings import SETTINGS, evaluate, plan
from ..stats import paired_test
from ..stats.ranking import RANK_ALPHA, NotPairable, significantly_different
from ..submissions.submit import submit
from ..submissions.verify import verify
from . import indexperf, perf, serve
from .options import key_values
from .search import cmd_search
from .sweep import cmd_sweep


def _run_options(args) -> dict:
    """The RunConfig settings `bench evaluate` and `bench submit` both take from their options."""
    return {
        "seeds": args.seeds,
        "episodes": args.episodes,
        "max_classes": getattr(args, "max_classes", None),
        "train_steps": args.train_steps,
        "max_train_time": args.max_train_time,
        "device": args.device,
        "hparams": key_values(args.hparam),
        "data_dir": args.data_dir,
        "results_dir": args.results,
        "progress": not args.quiet,
        "select": args.select,
        "val_episodes": args.val_episodes,
        "val_checks": args.val_checks,
    }


def _datasets_of(protocol_names) -> list[str]:
    return list(dict.fromkeys(d for n in protocol_names for d in PROTOCOLS.get(n).datasets))


def _with_source(source: str | None):
    """--source for this command only: the same as setting $BENCH_SOURCE for it."""
    if source:
        os.environ[paths.SOURCE_ENV] = source


def cmd_evaluate(args, ap) -> int:
    protocols = protocol_files.resolve(args.protocol, args.data_dir)  # files and added names -> registered
    cfg = RunConfig(
        args.method,
        tuple(protocols),
        **_run_options(args),
        write=not args.no_write,
        devices=args.devices,
        logger=args.logger,
        log_dir=args.log_dir,
    )
    plan(cfg)  # the method, protocols and hyper-parameters are checked before any data is touched
    resolve_device(cfg.device)
    _with_source(args.source)
    ensure_prepared(_datasets_of(cfg.protocols), args.data_dir)
    evaluate(cfg)
    return 0


def cmd_data(args, ap) -> int:
    if args.data_command != "prepare":
        ap.parse_args(["data", "--help"])
        return 2
    if args.from_folder:
        prepare_folder(args.from_folder, args.name, data_dir=args.data_dir, layout=args.layout, force=args.force)
        return 0
    prepare(args.name, source=args.source, data_dir=args.data_dir, force=args.force)
    return 0


def cmd_protocol(args, ap) -> int:
    if args.protocol_command != "add":
        ap.parse_args(["protocol", "--help"])
        return 2
    protocol_files.add(args.file, args.data_dir)
    return 0


def _paper(res) -> str:
    return paper_text(res, unicode=False) or ""


def _paper_vs_here(cls, results: str | None) -> None:
    """For each protocol with a paper number: the method's newest record there, and whether the paper's
    number lies inside this project's 95% CI."""
    folder = paths.results_dir(results)
    table = load(folder).table
    mine = table[table["method"] == cls.name]
    print(f"paper vs here (the newest {cls.name} record per protocol in {folder}):")
    for name, res in sorted(cls.PAPER_RESULTS.items()):
        rows = mine[mine["protocol"] == name].sort_values(["created", "run_id"])
        if rows.empty:
            print(f"  {name:<32} paper {_paper(res)}%  here: no record")
            continue
        r = rows.iloc[-1]
        inside = paper_in_ci(r["mean"], r["ci95"], res.mean)
        verdict = (
            "no interval to compare with"
            if inside is None
            else "paper inside our 95% CI"
            if inside
            else f"paper outside our 95% CI (ours {100 * r['mean'] - res.mean:+.2f} points)"
        )
        recipe = r["recipe"] if isinstance(r["recipe"], str) else "none"  # the indexed table holds NaN for none
        print(
            f"  {name:<32} paper {_paper(res)}%  here {format_ci(r['mean'], r['ci95'])}% "
            f"({r['backbone']}, recipe {recipe}, {r['n_units']} {unit_of(r)}s, "
            f"run {r['run_id']}): {verdict}"
        )


def describe_method(name: str, results: str | None) -> int:
    """`bench list --method NAME`: hyper-parameters, paper recipes, paper numbers and this project's."""
    cls = ALGORITHMS.get(name)
    print(f"{cls.name}: {cls.paper}\ntrains on: {cls.training_data}\nhyper-parameters (defaults):")
    for k, v in sorted(cls.defaults().items()):
        print(f"  {k} = {v!r}")
    if cls.SEARCH_SPACE:
        print("search space (what `bench sweep --trials N` draws from):")
        for k, dist in sorted(cls.SEARCH_SPACE.items()):
            print(f"  {k}: {dist.describe()}")
    if cls.RECIPES:
        print("paper recipes (the defaults on matching protocols; --hparam overrides them):")
        for r in cls.RECIPES:
            steps = f", {r.train_steps} steps" if r.train_steps else ""
            print(
                f"  {cls.name}:{r.key}: {dict(r.hparams)}{steps}  [{r.source}]" + (f" note: {r.note}" if r.note else "")
            )
    if cls.PAPER_RESULTS:
        print("reported by the paper:")
        for pname, res in sorted(cls.PAPER_RESULTS.items()):
            print(f"  {pname:<32} {_paper(res)}%  [{res.source}]" + (f" note: {res.note}" if res.note else ""))
        _paper_vs_here(cls, results)
    return 0


def cmd_perf(args, ap) -> int:
    return indexperf.main(args) if args.index else perf.main(args)


def unit_of(row) -> str:
    """What a board row's protocol scores ("test episode", "test image")."""
    return SETTINGS.get(row["setting"]).for_protocol(row["protocol"]).unit


def cmd_compare(args, ap) -> int:
    recs, vecs = [], []
    for path in (args.a, args.b):
        try:
            record, vec = record_with_units(path, paths.results_dir(args.results))
        except (OSError, InvalidRecord) as e:
            print(f"bench: error: {path}: {e}", file=sys.stderr)
            return 2
        recs.append(record)
        vecs.append(vec)
    a, b = recs
    try:
        test = compare(a, b, (vecs[0], vecs[1]))
    except NotPairable as e:
        print(f"bench: error: the records cannot be compared unit by unit: {e}", file=sys.stderr)
        return 2
    diff = mean_ci(vecs[0] - vecs[1])
    unit = SETTINGS.get(a["setting"]).for_protocol(a["protocol"]["name"]).unit
    for tag, rec, vec in (("A", a, vecs[0]), ("B", b, vecs[1])):
        r = Record.from_dict(rec)
        print(
            f"{tag}: {r.method.name:<14} {r.protocol.name} v{r.protocol.version}  "
            f"{format_ci(r.summary.mean, mean_ci(vec).ci95)}%  ({r.run_id})"
        )
    print(
        f"difference A - B: {format_ci(diff.mean, diff.ci95, signed=True)} points (95% CI over {diff.n} paired {unit}s)"
    )
    print(f"paired t-test p = {test.t_pvalue:.3g}; Wilcoxon signed-rank p = {test.wilcoxon_pvalue:.3g}")
    if significantly_different(test):
        better, worse = ("A", "B") if test.mean_diff > 0 else ("B", "A")
        print(f"{better} is significantly better than {worse} (Wilcoxon, alpha = {RANK_ALPHA}).")
    else:
        print(
            f"no significant difference (Wilcoxon, alpha = {RANK_ALPHA}): on the leaderboard they share a rank "
            f"when one of them leads."
        )
    own = SETTINGS.get(a["setting"])
    for name, per_seed in own.seed_metrics(a).items():
        other = own.seed_metrics(b).get(name, {})
        seeds = sorted(set(per_seed) & set(other))
        if len(seeds) < 2:
            print(f"{name}: {len(seeds)} seed(s) in common; a paired comparison over seeds needs at least 2")
            continue
        xs, ys = [per_seed[s] for s in seeds], [other[s] for s in seeds]
        over = paired_test(xs, ys)
        d = mean_ci(np.subtract(xs, ys))
        print(
            f"{name} A - B: {format_ci(d.mean, d.ci95, signed=True)} points over {len(seeds)} seeds paired by seed "
            f"(paired t-test p = {over.t_pvalue:.3g}; Wilcoxon p = {over.wilcoxon_pvalue:.3g})"
        )
    return 0


def cmd_leaderboard(args, ap) -> int:
    return serve.launch(paths.results_dir(args.results), port=args.port)


def cmd_submit(args, ap) -> int:
    def prepare_data(names):  # after the submission passed its checks: a broken file fails fast
        ensure_prepared(_datasets_of(names), args.data_dir)

    protocols = protocol_files.resolve(args.protocols, args.data_dir)  # files and added names -> registered
    resolve_device(args.device)  # a bad --device is named before the submission or any data is loaded
    submit(args.spec, protocols, before_run=prepare_data, **_run_options(args))
    return 0


def cmd_verify(args, ap) -> int:
    protocol_files.resolve_for_record(args.record, args.data_dir)  # a file protocol: register it first
    report = verify(
        args.record,
        sample=args.sample,
        device=args.device,
        seed=args.seed,
        data_dir=args.data_dir,
        source=args.source,
        log=print,
    )
    print(report.format())
    return 0 if report.passed else 1


COMMANDS = {
    "evaluate": cmd_evaluate,
    "data": cmd_data,
    "perf": cmd_perf,
    "leaderboard": cmd_leaderboard,
    "submit": cmd_submit,
    "verify": cmd_verify,
    "compare": cmd_compare,
    "protocol": cmd_protocol,
    "sweep": cmd_sweep,
    "search": cmd_search,
}
