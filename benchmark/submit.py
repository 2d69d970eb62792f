"""Leaderboard submissions: `bench submit` runs a user's one-file method through the harness, and
`bench verify` re-checks any record (submission or built-in) against its saved checkpoints.

A submission is a Python file defining one `MetaLearner` subclass (see benchmark/algorithms.py).
It is imported under a private module name and never registered, so it cannot shadow or clash with
a built-in method. The record it produces names the file and its sha256; `verify` refuses to
re-run a file whose bytes changed since.

`verify` does not trust the numbers in a record: it checks each checkpoint's sha256, regenerates
the protocol's fixed test episodes (their fingerprint must match), reloads the weights and re-runs
a seeded random sample of test episodes, comparing per-episode accuracies with what was recorded.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import re
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch

from . import harness
from .algorithms import ALGORITHMS, HParamError, MetaLearner, TaskInfo
from .episodes import FixedEpisodes, fixed_episodes
from .protocols import PROTOCOLS, SETTINGS, Protocol
from .registry import UnknownName
from .results import InvalidRecord, read_record, to_jsonable

REQUIRED_METHODS = ("predict", "training_step", "configure_optimizers")
PREDICT_PARAMS = ("support_x", "support_y", "query_x", "ways")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # it becomes a folder name under results/
DEFAULT_DRY_PROTOCOL = "omniglot-5w1s"


class SubmissionError(harness.BenchError):
    """A submission file that does not meet the contract; the message lists every problem."""


class VerifyError(harness.BenchError):
    """A record that cannot be verified at all (missing files, unknown protocol, ...): exit 2."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def builtin_methods() -> dict[str, type]:
    harness.method_class("protonet")  # imports baselines, which registers the built-in methods
    return dict(ALGORITHMS.items())


# ---- loading a submission ------------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[Path, str | None]:
    """`PATH.py` or `PATH.py:ClassName` (a Windows drive letter's colon is not a separator)."""
    path, cls = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        path, cls = head, tail
    p = Path(path).expanduser()
    if p.suffix != ".py":
        raise SubmissionError(f"{spec!r}: a submission is a Python file, PATH.py or PATH.py:ClassName")
    if not p.is_file():
        raise SubmissionError(f"{p}: no such file")
    return p, cls


def _import_file(path: Path, data: bytes):
    """Run the file as a fresh module with a unique name, so two submissions never collide."""
    mod_name = f"_metabench_submission_{sha256_bytes(data)[:12]}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise SubmissionError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses, pickling and typing look the module up here
    before = builtin_methods()  # imported first, so a file that imports baselines keeps them registered
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report where it failed, in their file
        sys.modules.pop(mod_name, None)
        import traceback
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path.resolve()
                  or Path(f.filename) == path]
        line = e.lineno if isinstance(e, SyntaxError) else (frames[-1].lineno if frames else None)
        where = f" (line {line})" if line else ""
        raise SubmissionError(f"{path}: importing it failed{where}: {type(e).__name__}: {e}") from e
    finally:
        # a submission must not register itself; undo it so the built-in registry stays as it was
        added = [n for n in ALGORITHMS if n not in before]
        for n in added:
            ALGORITHMS.unregister(n)
    module.__dict__["__metabench_registered__"] = added
    return module


def _defined_here(module) -> list[type]:
    return [obj for obj in vars(module).values() if isinstance(obj, type) and obj.__module__ == module.__name__]


def _find_class(module, path: Path, class_name: str | None) -> type:
    classes = _defined_here(module)
    if class_name:
        obj = getattr(module, class_name, None)
        if not isinstance(obj, type):
            names = [c.__name__ for c in classes]
            close = difflib.get_close_matches(class_name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SubmissionError(f"{path}: has no class {class_name!r}.{hint} Classes defined there: "
                                  f"{', '.join(names) or 'none'}")
        return obj
    learners = [c for c in classes if issubclass(c, MetaLearner)]
    if len(learners) == 1:
        return learners[0]
    if len(learners) > 1:
        names = ", ".join(c.__name__ for c in learners)
        raise SubmissionError(f"{path}: defines several MetaLearner subclasses ({names}); name the one to "
                              f"submit as {path}:ClassName")
    plain = [c.__name__ for c in classes if issubclass(c, pl.LightningModule)]
    if plain:
        raise SubmissionError(f"{path}: {', '.join(plain)} is a plain pytorch_lightning.LightningModule; a "
                              f"submission must subclass benchmark.algorithms.MetaLearner (see its docstring "
                              f"for the contract)")
    raise SubmissionError(f"{path}: defines no MetaLearner subclass (classes defined there: "
                          f"{', '.join(c.__name__ for c in classes) or 'none'}); a submission is one "
                          f"`class MyMethod(benchmark.algorithms.MetaLearner)` in one file")


def contract_problems(cls: type) -> list[str]:
    """Everything about `cls` that breaks the algorithm contract (empty when it meets it)."""
    problems = []
    if not issubclass(cls, MetaLearner):
        if issubclass(cls, pl.LightningModule):
            problems.append("it is a plain pytorch_lightning.LightningModule; subclass "
                            "benchmark.algorithms.MetaLearner instead")
        else:
            problems.append("it does not subclass benchmark.algorithms.MetaLearner")
    base = MetaLearner if issubclass(cls, MetaLearner) else pl.LightningModule
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        problems.append("`name` is missing or empty (a short method name, e.g. name = \"mymethod\")")
    elif not NAME_RE.match(name):
        problems.append(f"`name` {name!r} must be letters, digits and _.+- (it becomes a folder name)")
    else:
        builtin = builtin_methods()
        if name in builtin and builtin[name] is not cls:
            problems.append(f"`name` {name!r} is a built-in method ({builtin[name].paper}); choose another, "
                            f"e.g. name = \"{name}-{cls.__name__.lower()}\" or name = \"my-{name}\"")
    paper = getattr(cls, "paper", "")
    if not isinstance(paper, str) or not paper.strip():
        problems.append("`paper` is missing or empty (a one-line citation string)")
    td = getattr(cls, "training_data", None)
    if td not in ("episodes", "batches"):
        problems.append(f"`training_data` is {td!r}; it must be 'episodes' or 'batches'")
    hp = getattr(cls, "HPARAMS", None)
    if not isinstance(hp, dict):
        problems.append(f"`HPARAMS` must be a dict of hyper-parameter defaults, not {type(hp).__name__}")
    elif td == "batches" and "batch_size" not in hp:
        problems.append("training_data = 'batches' needs a `batch_size` entry in HPARAMS")
    missing = []
    for m in REQUIRED_METHODS:
        own = getattr(cls, m, None)
        if own is None or own is getattr(base, m, None) or own is getattr(pl.LightningModule, m, None):
            missing.append(m)
            problems.append(f"`{m}` is not implemented (the base class's is inherited)")
    predict = getattr(cls, "predict", None)
    if callable(predict) and "predict" not in missing:
        try:
            params = list(inspect.signature(predict).parameters.values())[1:]  # drop self
        except (TypeError, ValueError):
            params = None
        if params is not None:
            names = tuple(p.name for p in params[:4])
            extra = [p.name for p in params[4:] if p.default is inspect.Parameter.empty
                     and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if names != PREDICT_PARAMS or extra:
                got = ", ".join(p.name for p in params)
                problems.append(f"`predict` must take (support_x, support_y, query_x, ways), not ({got})")
    return problems


def dry_check(cls: type[MetaLearner], protocol: Protocol, hparams: dict | None = None) -> None:
    """Build the method for a tiny task shaped like `protocol` and check predict's output on 2 random
    5-way 1-shot episodes with 2 queries per class: catches shape bugs before any training."""
    b, n, k, q = 2, 5, 1, 2
    c, s = protocol.channels, protocol.image_size
    task = TaskInfo(n, k, q, s, c, n_train_classes=10)
    where = f"dry check of {cls.__name__} on {b} random {n}-way {k}-shot episodes ({c}x{s}x{s}, {q} queries)"
    try:
        model = cls(task, **(hparams or {}))
    except HParamError:
        raise
    except Exception as e:
        raise SubmissionError(f"{where}: building it failed: {type(e).__name__}: {e}") from e
    g = torch.Generator().manual_seed(0)
    sx = torch.randn(b, n * k, c, s, s, generator=g)
    sy = torch.arange(n).repeat_interleave(k).expand(b, -1).contiguous()
    qx = torch.randn(b, n * q, c, s, s, generator=g)
    model.eval()
    try:
        with torch.no_grad():
            logits = model.predict(sx, sy, qx, n)
    except Exception as e:
        raise SubmissionError(f"{where}: predict raised {type(e).__name__}: {e}") from e
    want = (b, n * q, n)
    if not isinstance(logits, torch.Tensor):
        raise SubmissionError(f"{where}: predict returned {type(logits).__name__}, not a tensor of logits "
                              f"[episodes, queries, ways] = {list(want)}")
    if tuple(logits.shape) != want:
        raise SubmissionError(f"{where}: predict returned logits of shape {list(logits.shape)}; the contract "
                              f"is [episodes, queries, ways] = {list(want)}")
    if not torch.isfinite(logits).all():
        raise SubmissionError(f"{where}: predict returned non-finite logits")


def load_submission(spec: str, protocols: list[str] | None = None, hparams: dict | None = None,
                    dry: bool = True) -> tuple[type[MetaLearner], dict]:
    """Import `PATH.py[:ClassName]`, check the contract (and a dry predict for each image shape among
    `protocols`, default omniglot-5w1s); (class, source info for the record)."""
    path, class_name = parse_spec(spec)
    data = path.read_bytes()
    module = _import_file(path, data)
    cls = _find_class(module, path, class_name)
    problems = contract_problems(cls)
    if module.__metabench_registered__:
        problems.append("the file registers a method with the built-in registry (@register); remove it: "
                        "submissions are loaded by `bench submit`, not registered")
    if problems:
        raise SubmissionError(f"{path}: {cls.__name__} does not meet the method contract "
                              f"(benchmark/algorithms.py):\n  - " + "\n  - ".join(problems))
    if dry:
        shapes = {}
        for name in protocols or [DEFAULT_DRY_PROTOCOL]:
            p = PROTOCOLS.get(name)
            if cls.supports(p) is None:
                shapes.setdefault((p.image_size, p.channels), p)
        for p in shapes.values():
            dry_check(cls, p, hparams)
    return cls, {"file": str(path), "class": cls.__name__, "sha256": sha256_bytes(data)}


# ---- bench submit --------------------------------------------------------------------------------

def resolve_protocols(names: list[str] | None) -> list[str]:
    """Protocol names and group names (a setting such as few-shot or cross-domain, or all), in order."""
    names = names or [DEFAULT_DRY_PROTOCOL]
    out: list[str] = []
    groups = {s for s in SETTINGS if any(p.setting == s for _, p in PROTOCOLS.items())}
    for n in names:
        if n == "all":
            picked = [name for name, _ in PROTOCOLS.items()]
        elif n in groups:
            picked = [name for name, p in PROTOCOLS.items() if p.setting == n]
        elif n in PROTOCOLS:
            picked = [n]
        else:
            close = difflib.get_close_matches(n, [*groups, "all", *PROTOCOLS], n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownName(f"unknown protocol {n!r}.{hint} Use a protocol name, a group "
                              f"({', '.join(sorted(groups))}) or all (see `bench list`).")
        out += [p for p in picked if p not in out]
    return out


def submit(spec: str, protocols: list[str] | None = None, log: Callable[[str], None] = print,
           before_run: Callable[[list[str]], None] | None = None, **run_kwargs: Any) -> list[Path]:
    """Load and check the submission, run it on every selected protocol, print a summary; written paths.
    `before_run(protocol names)` is called once the submission passed its checks (the CLI prepares data)."""
    names = resolve_protocols(protocols)
    explicit = {n for n in (protocols or [DEFAULT_DRY_PROTOCOL]) if n in PROTOCOLS}
    cls, source = load_submission(spec, names, run_kwargs.get("hparams"))
    todo = []
    for n in names:
        p = PROTOCOLS.get(n)
        why = cls.supports(p) or (None if p.is_single_stage else "multi-stage protocols are not run yet")
        if why and n in explicit:
            raise harness.BenchError(f"{cls.name} cannot run protocol {n}: {why}")
        if why:
            log(f"skipping {n}: {why}")
        else:
            todo.append(n)
    if before_run:
        before_run(todo)
    log(f"submission {cls.name} ({source['file']}:{source['class']}, sha256 {source['sha256'][:12]}) "
        f"on {len(todo)} protocol(s)")
    # protocols that train the same way (e.g. caltech101-5w1s and caltech101-to-pacs-*-5w1s) share one
    # training run per seed when the harness offers it; each still gets its own record
    key = getattr(harness, "_shared_training_key", None)
    groups: dict = {}
    for n in todo:
        groups.setdefault(key(PROTOCOLS.get(n)) if key and hasattr(harness, "run_many") else n, []).append(n)
    done = []
    for group in groups.values():
        if len(group) > 1:
            done += harness.run_many(cls.name, group, method_cls=cls, kind="submission", source=source, log=log,
                                     **run_kwargs)
        else:
            done.append(harness.run(cls.name, group[0], method_cls=cls, kind="submission", source=source,
                                    log=log, **run_kwargs))
    rows, written = [], []
    for record, path in done:
        n = record["protocol"]["name"]
        s = record["summary"]
        ci = f"+/- {100 * s['ci95']:.2f}" if s["ci95"] is not None else ""
        rows.append((n, f"{100 * s['mean']:.2f} {ci}", str(s["n_episodes"]), str(s["n_seeds"]), str(path or "-")))
        if path:
            written.append(path)
    if rows:
        head = ("protocol", "accuracy %", "episodes", "seeds", "record")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        log("\n" + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for r in rows:
            log("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if written:
            log(f"\ncheck a record with `bench verify {written[0]}`; see them with `bench leaderboard`")
    return written


# ---- bench verify --------------------------------------------------------------------------------

@dataclass
class SeedCheck:
    seed: int
    checkpoint: str
    indices: list[int] = field(default_factory=list)
    recorded: list[float] = field(default_factory=list)
    recomputed: list[float] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)          # sampled episode indices that disagree
    mean_abs: float = 0.0
    mean_too_far: bool = False                            # each within a query, but biased on average
    problem: str | None = None                            # why this seed failed before any re-run


@dataclass
class VerifyReport:
    record_path: Path
    method: str
    protocol: str
    ways_queries: int
    device: str
    seeds: list[SeedCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tolerance(self) -> tuple[float, float]:
        """(per-episode, mean absolute) tolerances: one query may flip, half a query on average."""
        return 1 / self.ways_queries + 1e-9, 0.5 / self.ways_queries

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.seeds) and all(
            s.problem is None and not s.bad and not s.mean_too_far for s in self.seeds)

    def format(self) -> str:
        tol, mtol = self.tolerance
        lines = [f"verify {self.record_path}", f"  {self.method} on {self.protocol}, re-run on {self.device}"]
        lines += [f"  note: {n}" for n in self.notes]
        for s in self.seeds:
            lines.append(f"  seed {s.seed}: checkpoint {s.checkpoint}")
            if s.problem:
                lines.append(f"    FAIL: {s.problem}")
                continue
            lines.append(f"    {'episode':>8}  {'recorded':>9}  {'recomputed':>10}  {'diff':>7}")
            for i, r, c in zip(s.indices, s.recorded, s.recomputed):
                flag = "  <- disagrees" if i in s.bad else ""
                lines.append(f"    {i:>8}  {r:>9.4f}  {c:>10.4f}  {c - r:>+7.4f}{flag}")
            lines.append(f"    {len(s.indices)} episodes, mean |diff| {s.mean_abs:.4f} "
                         f"(allowed: {tol:.4f} per episode, {mtol:.4f} on average)")
        lines += [f"  FAIL: {p}" for p in self.problems]
        for s in self.seeds:
            if s.bad:
                lines.append(f"  FAIL: seed {s.seed}: episode(s) {', '.join(map(str, s.bad))} do not reproduce "
                             f"the recorded accuracies")
            elif s.mean_too_far:
                lines.append(f"  FAIL: seed {s.seed}: mean |diff| {s.mean_abs:.4f} exceeds {mtol:.4f}")
        n = sum(len(s.indices) for s in self.seeds)
        lines.append(f"verdict: PASS: {n} sampled episode(s) over {len(self.seeds)} seed(s) reproduce the record"
                     if self.passed else "verdict: FAIL: the record is not reproduced (see above)")
        return "\n".join(lines)


def _resolve_source(file: str, root: Path) -> Path:
    p = Path(file).expanduser()
    for cand in (p, root.parent / p, root / p):
        if cand.is_file():
            return cand
    raise VerifyError(f"the submission file {file} named in the record is not here (looked relative to the "
                      f"current folder and to {root.parent}); pass --source PATH.py")


def _sample_episodes(prep: harness.Prepared, key: str, indices: list[int]) -> FixedEpisodes:
    """Episode i generated on its own (start=i, count=1), for each sampled i, stacked into one index.
    fixed_episodes is a pure function of (key, index); checking each against the full index's slice
    makes that a fact for this record rather than an assumption."""
    spec = prep.protocol.episode
    parts = [fixed_episodes(prep.test, spec, key, 1, start=i) for i in indices]
    full = prep.episodes
    for i, one in zip(indices, parts):
        if not (torch.equal(one.classes[0], full.classes[i]) and torch.equal(one.slots[0], full.slots[i])
                and torch.equal(one.qperm[0], full.qperm[i])):
            raise VerifyError(f"episode {i} generated alone differs from the batched index; this is a bug "
                              f"in benchmark/episodes.py")
    return FixedEpisodes(torch.cat([p.classes for p in parts]), torch.cat([p.slots for p in parts]),
                         torch.cat([p.qperm for p in parts]), f"sample of {full.fingerprint}")


def verify(record_path: str | Path, sample: int = 20, device: str = "auto", seed: int = 0,
           data_dir: str | None = None, source: str | None = None, results_root: str | Path | None = None,
           log: Callable[[str], None] = lambda _m: None) -> VerifyReport:
    """Re-run a seeded sample of a record's test episodes from its checkpoints; see the module docstring.
    Raises VerifyError when it cannot verify; returns a report whose `passed` is the verdict."""
    path = Path(record_path)
    if not path.is_file():
        raise VerifyError(f"{path}: no such record")
    try:
        record = read_record(path)
    except (InvalidRecord, UnicodeDecodeError) as e:
        raise VerifyError(f"{path}: not a valid record: {e}") from None
    root = Path(results_root) if results_root else path.resolve().parents[3]
    rp, rm = record["protocol"], record["method"]
    try:
        proto = PROTOCOLS.get(rp["name"])
    except UnknownName as e:
        raise VerifyError(f"{path}: {e}") from None
    if proto.version != rp["version"]:
        raise VerifyError(f"{path}: the record is for {proto.name} v{rp['version']} but this code has "
                          f"v{proto.version}, whose test episodes differ; verify it with a checkout that has "
                          f"v{rp['version']}")
    dev = harness.resolve_device(device)
    nq = proto.episode.ways * proto.episode.queries
    report = VerifyReport(path, rm["name"], f"{proto.name} v{proto.version}", nq, str(dev))

    # the method's code: a built-in from the registry, a submission from its file (unchanged)
    src = rm.get("source")
    if src or record["kind"] == "submission":
        if not src:
            raise VerifyError(f"{path}: a submission record without method.source; it cannot be re-run")
        file = Path(source) if source else _resolve_source(src["file"], root)
        got = sha256_bytes(file.read_bytes())
        if got != src["sha256"]:
            report.problems.append(f"the submission file {file} changed since the record was made (sha256 "
                                   f"{got[:12]}..., recorded {src['sha256'][:12]}...); the record can only be "
                                   f"verified with the file that produced it")
            return report
        cls, _ = load_submission(f"{file}:{src['class']}" if src.get("class") else str(file), dry=False)
        if cls.name != rm["name"]:
            report.problems.append(f"{file} defines method {cls.name!r}, the record names {rm['name']!r}")
            return report
        report.notes.append(f"submission {file} (sha256 matches the record)")
    else:
        try:
            cls = harness.method_class(rm["name"])
        except UnknownName as e:
            raise VerifyError(f"{path}: {e}") from None

    # the episodes: regenerate the whole fixed index and compare its fingerprint
    n = rp["test_episodes"]
    from .cli import ensure_prepared
    ensure_prepared(proto.datasets, data_dir)
    prep = harness.prepare_run(proto, dev, n, data_dir)
    if prep.episodes.fingerprint != rp["episodes_fingerprint"]:
        report.problems.append(f"the record's episodes_fingerprint {rp['episodes_fingerprint'][:12]}... is not "
                               f"that of {proto.name} v{proto.version}'s {n} fixed test episodes "
                               f"({prep.episodes.fingerprint[:12]}...): it was not scored on the protocol's episodes")
        return report
    report.notes.append(f"episodes_fingerprint matches the {n} regenerated test episodes")
    for name, fp in prep.data_fingerprints.items():
        if record["data"].get(name) not in (None, fp):
            report.notes.append(f"prepared {name} here has fingerprint {fp[:12]}..., the record's is "
                                f"{record['data'][name][:12]}...; images may differ")

    rng = np.random.default_rng(seed)
    k = n if sample <= 0 or sample >= n else sample
    indices = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
    key = f"{proto.name}:v{proto.version}:test"
    sub = replace(prep, episodes=_sample_episodes(prep, key, indices))
    tol, mtol = report.tolerance
    for run in record["runs"]:
        ck = run.get("checkpoint")
        check = SeedCheck(run["seed"], ck["path"] if ck else "-")
        report.seeds.append(check)
        if not ck:
            raise VerifyError(f"{path}: seed {run['seed']} has no checkpoint in the record; it cannot be verified")
        cpath = Path(ck["path"])
        cpath = cpath if cpath.is_absolute() else root / cpath
        if not cpath.is_file():
            raise VerifyError(f"{path}: seed {run['seed']}: checkpoint {cpath} is missing; a results folder must "
                              f"keep its {harness.CHECKPOINTS}/ beside the records")
        got = harness.sha256_file(cpath)
        if got != ck["sha256"]:
            check.problem = (f"checkpoint {cpath} has sha256 {got[:12]}..., the record says "
                             f"{ck['sha256'][:12]}...: the weights are not the ones that were scored")
            continue
        blob = torch.load(cpath, map_location="cpu", weights_only=True)
        # a checkpoint trained once for several protocols (run["trained_with"]) names the first of them
        trained_for = [proto.name, *run.get("trained_with", [])]
        meta = {"method": rm["name"], "seed": run["seed"]}
        wrong = [f"{k_}={blob.get(k_)!r} (record: {v!r})" for k_, v in meta.items() if blob.get(k_) != v]
        if blob.get("protocol") not in trained_for:
            wrong.append(f"it was trained for {blob.get('protocol')!r}, not {proto.name}")
        elif blob.get("protocol") == proto.name and blob.get("protocol_version") != proto.version:
            wrong.append(f"it was trained for {proto.name} v{blob.get('protocol_version')}")
        if to_jsonable(blob.get("hparams")) != rm["hparams"]:
            wrong.append("hparams differ from the record's")
        if wrong:
            check.problem = f"checkpoint {cpath} does not belong to this record: {', '.join(wrong)}"
            continue
        pl.seed_everything(run["seed"], verbose=False)
        model = harness.build_model(cls, prep, blob["hparams"])
        model.load_state_dict(blob["state_dict"])
        log(f"seed {run['seed']}: re-running {len(indices)} of {n} test episodes on {dev}")
        accs, _ = harness.evaluate_model(model, sub, dev, progress=False)
        check.indices = indices
        check.recorded = [float(run["episode_accuracies"][i]) for i in indices]
        check.recomputed = [float(a) for a in accs]
        diffs = np.abs(np.asarray(check.recomputed) - np.asarray(check.recorded))
        check.mean_abs = float(diffs.mean())
        check.bad = [i for i, d in zip(indices, diffs) if d > tol]
        check.mean_too_far = check.mean_abs > mtol
    return report
