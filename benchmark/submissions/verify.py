"""`bench verify`: re-check any record (submission or built-in) against its saved checkpoints.

It does not trust the numbers in a record: it checks each checkpoint's sha256, regenerates the
protocol's fixed test episodes (their fingerprint must match), reloads the weights and re-runs a
seeded random sample of test episodes, comparing per-episode accuracies with what was recorded.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from ..core.errors import BenchError, InvalidRecord
from ..core.files import sha256_bytes, sha256_file
from ..core.registry import UnknownName
from ..data import ensure_prepared, load_prepared
from ..methods import architecture_problem
from ..methods.ssl import InitError, recorded_init
from ..protocols import PROTOCOLS
from ..records import Record, to_jsonable
from ..records import record_path as expected_record_path
from ..run import CHECKPOINTS, resolve_device
from ..settings import SETTINGS, load_record, method_class
from .sandbox import open_submission

SHOW_ALL = 50  # per-episode lines in a report; beyond this only episodes that differ are listed


class VerifyError(BenchError):
    """A record that cannot be verified at all (missing files, unknown protocol, ...): exit 2."""


@dataclass
class SeedCheck:
    seed: int
    checkpoint: str
    indices: list[int] = field(default_factory=list)
    recorded: list[float] = field(default_factory=list)
    recomputed: list[float] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)  # sampled episode indices that disagree
    mean_abs: float = 0.0
    mean_too_far: bool = False  # each within a query, but biased on average
    problem: str | None = None  # why this seed failed before any re-run


@dataclass
class VerifyReport:
    record_path: Path
    method: str
    protocol: str
    tolerances: tuple[float, float]  # (per unit, mean absolute): the setting's
    device: str
    seeds: list[SeedCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sampling: str = ""  # which units were re-run, and how they were chosen
    seconds: float = 0.0
    unit: str = "episode"  # what is re-scored: "episode", "image"

    @property
    def tolerance(self) -> tuple[float, float]:
        """(per unit, mean absolute) tolerances, e.g. for episodes one query may flip, half a query on average."""
        return self.tolerances

    @property
    def passed(self) -> bool:
        return (
            not self.problems
            and bool(self.seeds)
            and all(s.problem is None and not s.bad and not s.mean_too_far for s in self.seeds)
        )

    def format(self) -> str:
        tol, mtol = self.tolerance
        lines = [f"verify {self.record_path}", f"  {self.method} on {self.protocol}, re-run on {self.device}"]
        if self.sampling:
            lines.append(f"  {self.sampling}")
        lines += [f"  note: {n}" for n in self.notes]
        for s in self.seeds:
            lines.append(f"  seed {s.seed}: checkpoint {s.checkpoint}")
            if s.problem:
                lines.append(f"    FAIL: {s.problem}")
                continue
            shown = [
                (i, r, c)
                for i, r, c in zip(s.indices, s.recorded, s.recomputed)
                if len(s.indices) <= SHOW_ALL or i in s.bad or abs(c - r) > 1e-6  # float32 means: ignore rounding
            ]
            if shown:
                lines.append(f"    {self.unit:>8}  {'recorded':>9}  {'recomputed':>10}  {'diff':>7}")
            for i, r, c in shown[:SHOW_ALL]:
                flag = "  <- disagrees" if i in s.bad else ""
                lines.append(f"    {i:>8}  {r:>9.4f}  {c:>10.4f}  {c - r:>+7.4f}{flag}")
            if len(shown) > SHOW_ALL:
                lines.append(f"    ... and {len(shown) - SHOW_ALL} more that differ")
            lines.append(
                f"    {len(s.indices)} {self.unit}s, mean |diff| {s.mean_abs:.4f} "
                f"(allowed: {tol:.4f} per {self.unit}, {mtol:.4f} on average)"
            )
        lines += [f"  FAIL: {p}" for p in self.problems]
        for s in self.seeds:
            if s.bad:
                lines.append(
                    f"  FAIL: seed {s.seed}: {self.unit}(s) {', '.join(map(str, s.bad))} do not reproduce "
                    f"the recorded accuracies"
                )
            elif s.mean_too_far:
                lines.append(f"  FAIL: seed {s.seed}: mean |diff| {s.mean_abs:.4f} exceeds {mtol:.4f}")
        n = sum(len(s.indices) for s in self.seeds)
        lines.append(
            f"verdict: PASS: {n} {self.unit}(s) over {len(self.seeds)} seed(s) reproduce the record "
            f"({self.seconds:.0f} s)"
            if self.passed
            else "verdict: FAIL: the record is not reproduced (see above)"
        )
        return "\n".join(lines)


def _resolve_source(file: str, root: Path) -> Path:
    p = Path(file).expanduser()
    for cand in (p, root.parent / p, root / p):
        if cand.is_file():
            return cand
    raise VerifyError(
        f"the submission file {file} named in the record is not here (looked relative to the "
        f"current folder and to {root.parent}); pass --source PATH.py"
    )


def _results_root(path: Path, record: dict) -> Path:
    """The results folder a record sits in (<root>/<setting>/<protocol>/<method>/<run>.json): its
    checkpoints are named relative to it."""
    full = path.resolve()
    if len(full.parents) > 3:
        root = full.parents[3]
        if expected_record_path(root, record).resolve().parent == full.parent:  # any file name: copies are checked too
            return root
    raise VerifyError(
        f"{path} is not where a results folder keeps it (<results>/{record['setting']}/{record['protocol']['name']}/"
        f"{record['method']['name']}/{record['run_id']}.json); its checkpoints are found relative to that folder, "
        f"so verify it in place"
    )


def verify(
    record_path: str | Path,
    sample: int = 0,
    device: str = "auto",
    seed: int | None = None,
    data_dir: str | None = None,
    source: str | None = None,
    results_root: str | Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> VerifyReport:
    """Re-run every test episode of a record from its checkpoints (or `sample` of them, chosen with `seed`,
    a fresh random one when None); see the module docstring. Raises VerifyError when it cannot verify;
    returns a report whose `passed` is the verdict. A submission's code runs in its sandbox."""
    with contextlib.ExitStack() as stack:
        return _verify(stack, record_path, sample, device, seed, data_dir, source, results_root, log)


def _verify(
    stack: contextlib.ExitStack,
    record_path: str | Path,
    sample: int,
    device: str,
    seed: int | None,
    data_dir: str | None,
    source: str | None,
    results_root: str | Path | None,
    log: Callable[[str], None],
) -> VerifyReport:
    t0 = time.perf_counter()
    path = Path(record_path)
    if not path.is_file():
        raise VerifyError(f"{path}: no such record")
    try:
        raw = load_record(path)
        record = Record.from_dict(raw)
    except (InvalidRecord, UnicodeDecodeError) as e:
        raise VerifyError(f"{path}: not a valid record: {e}") from None
    if record.kind == "external":
        raise VerifyError(
            f"{path}: an external record (predictions made by outside code, scored by benchmark.compat) has no "
            f"checkpoint or code here to re-run, so it cannot be verified; the page marks it as not re-verifiable"
        )
    root = Path(results_root) if results_root else _results_root(path, raw)
    rp, rm = record.protocol, record.method
    setting = SETTINGS.get(record.setting).for_protocol(rp.name)
    try:
        proto = PROTOCOLS.get(rp.name)
    except UnknownName as e:
        raise VerifyError(f"{path}: {e}") from None
    if proto.version != rp.version:
        raise VerifyError(
            f"{path}: the record is for {proto.name} v{rp.version} but this code has "
            f"v{proto.version}, whose test episodes differ; verify it with a checkout that has "
            f"v{rp.version}"
        )
    dev = resolve_device(device)
    unit = setting.unit.split()[-1]
    tolerances = setting.verify_tolerance(raw)
    report = VerifyReport(path, rm.name, f"{proto.name} v{proto.version}", tolerances, str(dev), unit=unit)

    # the method's code: a built-in from the registry, a submission from its file (unchanged)
    src = rm.source
    if src or record.kind == "submission":
        if not src:
            raise VerifyError(f"{path}: a submission record without method.source; it cannot be re-run")
        file = Path(source) if source else _resolve_source(src["file"], root)
        got = sha256_bytes(file.read_bytes())
        if got != src["sha256"]:
            report.problems.append(
                f"the submission file {file} changed since the record was made (sha256 "
                f"{got[:12]}..., recorded {src['sha256'][:12]}...); the record can only be "
                f"verified with the file that produced it"
            )
            return report
        sandbox, cls = open_submission(file, src.get("class"), got, device)
        stack.callback(sandbox.close)
        if cls.name != rm.name:
            report.problems.append(f"{file} defines method {cls.name!r}, the record names {rm.name!r}")
            return report
        report.notes.append(f"submission {file} (sha256 matches the record)")
    else:
        try:
            cls = method_class(rm.name)
        except UnknownName as e:
            raise VerifyError(f"{path}: {e}") from None
    # a found-cell backbone is rebuilt from its genotype file, which must still hold the architecture scored
    if problem := architecture_problem(raw["method"]):
        report.problems.append(problem)
        return report
    if arch := raw["method"].get("architecture"):
        report.notes.append(f"backbone genotype {arch['genotype']} (its fingerprint matches the record)")
    # an SSL initialisation (maml-ssl, protonet-ssl): the checkpoint the run started from, unchanged
    try:
        init, problem = recorded_init(raw["method"]["hparams"], (root, root.parent))
    except InitError as e:
        raise VerifyError(f"{path}: {e}") from None
    if problem:
        report.problems.append(problem)
        return report
    if init is not None:
        report.notes.append(f"init checkpoint {init} (its sha256 matches the record)")

    # the units: regenerate them from the protocol and compare their fingerprint with the record's
    ensure_prepared(proto.datasets, data_dir)
    prep = setting.prepare_to_verify(proto, raw, dev, data_dir)
    n = len(setting.recorded_units(raw["runs"][0]))  # what is re-scored: may be more than what is ranked
    problem = setting.scored_on_problem(raw, prep)
    if problem:
        report.problems.append(problem)
        return report
    report.notes.append(f"the {n} regenerated {setting.unit}s are the record's (fingerprints match)")
    for name, fp in prep.data_fingerprints.items():
        if record.data.get(name) not in (None, fp):
            if record.data[name] == load_prepared(name, data_dir).fingerprint:
                # records written before data fingerprints covered the decoded pixels name the prepared data
                continue
            report.notes.append(
                f"the {name} data here has fingerprint {fp[:12]}..., the record's is "
                f"{record.data[name][:12]}...; images may differ"
            )

    if sample <= 0 or sample >= n:
        indices = list(range(n))
        report.sampling = f"re-running all {n} {setting.unit}s per seed"
    else:
        # a fixed default seed would let a forger leave the known sample alone and edit the rest
        seed = secrets.randbits(32) if seed is None else seed
        indices = sorted(int(i) for i in np.random.default_rng(seed).choice(n, size=sample, replace=False))
        report.sampling = f"re-running {sample} of {n} {setting.unit}s per seed, drawn with --seed {seed}"
    tol, mtol = report.tolerance
    for run, raw_run in zip(record.runs, raw["runs"]):
        ck = run.checkpoint
        check = SeedCheck(run.seed, ck.path if ck else "-")
        report.seeds.append(check)
        if not ck:
            raise VerifyError(f"{path}: seed {run.seed} has no checkpoint in the record; it cannot be verified")
        cpath = Path(ck.path)
        cpath = cpath if cpath.is_absolute() else root / cpath
        if not cpath.is_file():
            raise VerifyError(
                f"{path}: seed {run.seed}: checkpoint {cpath} is missing; a results folder must "
                f"keep its {CHECKPOINTS}/ beside the records"
            )
        got = sha256_file(cpath)
        if got != ck.sha256:
            check.problem = (
                f"checkpoint {cpath} has sha256 {got[:12]}..., the record says "
                f"{ck.sha256[:12]}...: the weights are not the ones that were scored"
            )
            continue
        try:
            blob = torch.load(cpath, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a file that is not a checkpoint
            raise VerifyError(f"{path}: seed {run.seed}: {cpath} is not a checkpoint ({type(e).__name__})") from None
        if not isinstance(blob, dict) or "state_dict" not in blob:
            raise VerifyError(f"{path}: seed {run.seed}: {cpath} is not a metabench checkpoint")
        # a checkpoint trained once for several protocols (run.trained_with) names the first of them
        trained_for = [proto.name, *run.trained_with]
        meta = {"method": rm.name, "seed": run.seed}
        wrong = [f"{k_}={blob.get(k_)!r} (record: {v!r})" for k_, v in meta.items() if blob.get(k_) != v]
        if blob.get("protocol") not in trained_for:
            wrong.append(f"it was trained for {blob.get('protocol')!r}, not {proto.name}")
        elif blob.get("protocol") == proto.name and blob.get("protocol_version") != proto.version:
            wrong.append(f"it was trained for {proto.name} v{blob.get('protocol_version')}")
        if to_jsonable(blob.get("hparams")) != rm.hparams:
            wrong.append("hparams differ from the record's")
        if wrong:
            check.problem = f"checkpoint {cpath} does not belong to this record: {', '.join(wrong)}"
            continue
        pl.seed_everything(run.seed, verbose=False)
        hp = blob["hparams"] if init is None else {**blob["hparams"], "init": str(init)}  # found where it is now
        model = setting.build_model(cls, prep, hp)
        model.load_state_dict(blob["state_dict"])
        log(f"seed {run.seed}: re-running {len(indices)} of {n} {setting.unit}s on {dev}")
        check.indices = indices
        check.recorded = [float(a) for a in setting.recorded_units(raw_run)[indices]]
        check.recomputed = [float(a) for a in setting.rescore(model, prep, indices, dev)]
        diffs = np.abs(np.asarray(check.recomputed) - np.asarray(check.recorded))
        check.mean_abs = float(diffs.mean())
        check.bad = [i for i, d in zip(indices, diffs) if d > tol]
        check.mean_too_far = check.mean_abs > mtol
    report.seconds = time.perf_counter() - t0
    return report
