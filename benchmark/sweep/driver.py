"""`bench sweep`: expand the sweep, skip the trials whose records exist, run the rest on Ray, select a
configuration per method and protocol on validation data, and end with a summary table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import paths
from ..records import format_ci
from ..settings.runner import check_writable
from .execute import connect, execute, resources
from .select import RULE, Selection, select
from .spec import SweepSpec, Trial, expand
from .trial import Context, Outcome, finished


@dataclass
class SweepResult:
    name: str
    folder: Path
    trials: list[Trial]
    outcomes: list[Outcome]
    selections: list[Selection] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[Trial, Outcome]]:
        return [(t, o) for t, o in zip(self.trials, self.outcomes) if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def run_sweep(
    spec: SweepSpec,
    address: str | None = None,
    imports: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
    init_options: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> SweepResult:
    """Run what is missing of the sweep and select on validation data. `imports` are modules each trial imports
    first (those that register methods and backbones); `init_options` go to `ray.init` when Ray starts here."""
    trials = expand(spec, spec.data_dir)
    folder, name = spec.folder, spec.sweep_name
    results = paths.results_dir(spec.results_dir).resolve()
    known = {t.key: finished(t, folder) for t in trials}
    todo = [t for t in trials if known[t.key] is None]
    configs = len({t.config for t in trials})
    log(
        f"sweep {name}: {len(trials)} trials ({configs} configurations x seeds over {len(spec.methods)} method(s) and "
        f"{len(spec.protocols)} protocol(s)); {len(trials) - len(todo)} recorded already, {len(todo)} to run; "
        f"trials in {folder}"
    )
    outcomes: dict[str, Outcome] = {k: o for k, o in known.items() if o is not None}
    if todo and not dry_run:
        check_writable(folder)
        check_writable(results)
        warm_caches({t.protocol for t in todo}, spec.data_dir)
        started = connect(address, init_options)
        try:
            res = resources(spec.cpus_per_trial, spec.gpus_per_trial)
            log(f"on a {res.where}: {res.cpus:g} CPU and {res.gpus:g} GPU per trial, up to {res.slots} at once")
            ctx = Context(
                spec, name, str(folder), "cuda" if res.gpus > 0 else "cpu", tuple(imports), _abs(spec.data_dir)
            )
            for t, o in zip(todo, execute(todo, ctx, res, progress, _reporter(log, progress))):
                outcomes[t.key] = o
        finally:
            if started:
                import ray

                ray.shutdown()
    result = SweepResult(name, folder, trials, [outcomes.get(t.key, Outcome(t.key, "pending")) for t in trials])
    if not dry_run:
        result.selections = select(trials, folder, results, name)
    for line in summary(result, results):
        log(line)
    return result


def warm_caches(protocols: set[str], data_dir: str | None) -> None:
    """Decode each dataset once, here, at each size the trials use: otherwise every worker that starts a trial
    on a fresh data folder decodes the same images at once, to write the same cache."""
    from ..protocols import PROTOCOLS
    from ..store import load_store

    for name in sorted(protocols):
        p = PROTOCOLS.get(name)
        for dataset in p.datasets:
            load_store(dataset, p.image_size, p.channels, data_dir)


def _abs(folder: str | None) -> str:
    return str(paths.data_dir(folder).resolve())


def _reporter(log: Callable[[str], None], progress: bool) -> Callable[[Trial, Outcome], None]:
    def report(trial: Trial, o: Outcome) -> None:
        what = f"{o.status} {trial.label()}"
        detail = o.reason if o.status == "failed" else f"test {_pct(o.mean)}%, val {_pct(o.val)}%, {o.seconds:.0f} s"
        line = f"  {what}: {detail}"
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            log(line)

    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of equal keys as aligned text columns."""
    if not rows:
        return []
    cols = list(rows[0])
    cells = [[str(c) for c in cols]] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]


def _hparams(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items())) or "-"


def summary(result: SweepResult, results: Path) -> list[str]:
    """The sweep's summary: every trial (done, skipped or failed, with the reason), then each selection."""
    lines = [
        "",
        f"sweep {result.name}: {len(result.trials)} trials: {result.count('done')} done, "
        f"{result.count('skipped')} skipped (recorded before), {result.count('failed')} failed"
        + (f", {result.count('pending')} not run (dry run)" if result.count("pending") else ""),
    ]
    rows = [
        {
            "method": t.method,
            "protocol": t.protocol,
            "config": t.index,
            "seed": t.seed,
            "hyper-parameters": _hparams(t.searched),
            "status": o.status,
            "val %": _pct(o.val),
            "test %": _pct(o.mean),
            "time s": f"{o.seconds:.0f}" if o.status == "done" else "-",
            "reason": o.reason if o.status == "failed" else "",
        }
        for t, o in zip(result.trials, result.outcomes)
    ]
    lines += table(rows)
    if result.selections:
        lines += ["", f"selected on validation data ({RULE}: the best validation accuracy averaged over seeds):"]
        sel_rows = []
        for s in result.selections:
            where = s.path.relative_to(results).as_posix() if s.path else s.reason
            sel_rows.append(
                {
                    "method": s.method,
                    "protocol": s.protocol,
                    "config": "-" if s.chosen is None else f"{s.chosen} of {s.configs}",
                    "hyper-parameters": _hparams(s.searched) if s.chosen is not None else "-",
                    "val %": _pct(s.val),
                    "test % (seed CI)": "-" if s.mean is None else f"{format_ci(s.mean, s.seed_ci95)}",
                    "record": f"{where}{'' if s.written or s.path is None else ' (unchanged)'}",
                }
            )
        lines += table(sel_rows)
    return lines
