"""`bench evaluate`: train a method once per seed and score it on every protocol given, through the
hooks of the protocols' setting; one validated record per protocol, written atomically."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ..core import paths
from ..core.errors import BenchError
from ..methods import ALGORITHMS, MetaLearner, architecture_block
from ..methods.recipes import resolve_recipe
from ..protocols import PROTOCOLS, Protocol
from ..records import format_ci, to_jsonable, write_record
from ..records.io import SCHEMA_VERSION, validate
from ..run import CHECKPOINTS, RunConfig, device_info, environment, git_info, resolve_device, save_checkpoint
from ..run.training import is_first_process, process_device
from .base import SETTINGS, Setting
from .episodic import Episodic


def setting_of(protocol: Protocol) -> Setting:
    return SETTINGS.get(protocol.setting).for_protocol(protocol.name)


def method_class(name: str) -> type[MetaLearner]:
    if name not in ALGORITHMS and len(ALGORITHMS) == 0:
        raise BenchError(
            "no methods are registered; `import baselines` registers the built-in ones "
            "(the `bench` command does this itself)"
        )
    return ALGORITHMS.get(name)


def shares_training(a: Setting, pa: Protocol, b: Setting, pb: Protocol) -> bool:
    """Whether one trained model can serve both protocols: their settings train the same way (the same
    hooks, e.g. few-shot and cross-domain) and the protocols' training set-ups are equal."""
    same_hooks = type(a).prepare is type(b).prepare and type(a).train is type(b).train
    return same_hooks and a.training_key(pa) == b.training_key(pb)


def plan(cfg: RunConfig, method_cls: type[MetaLearner] | None = None):
    """Everything that can be checked without data: protocols, their setting, the method, its recipe and
    hyper-parameters. Returns (setting, protocols, method class, resolved hparams, recipe, steps)."""
    protos = [PROTOCOLS.get(p) for p in cfg.protocols]
    setting = setting_of(protos[0])
    for p in protos[1:]:
        if not shares_training(setting, protos[0], setting_of(p), p):
            raise BenchError(
                f"protocols {protos[0].name} and {p.name} do not train the same way (training split, "
                f"image size, episode shape, budget or recipe family differ); evaluate them in "
                f"separate runs."
            )
    if cfg.max_classes is not None:
        other = [p.name for p in protos if p.continual is None or p.continual.kind != "stream"]
        if other:
            raise BenchError(
                f"--max-classes shortens continual streams; {', '.join(other)} is not a stream protocol "
                f"(omniglot-oml-stream is)"
            )
    if (cfg.devices > 1 or cfg.logger) and not isinstance(setting, Episodic):
        option = "--devices" if cfg.devices > 1 else "--logger"
        raise BenchError(f"{option} is offered for the episodic settings (few-shot, cross-domain), not {setting.name}")
    cls = method_cls or method_class(cfg.method)
    for p in protos:
        why = setting.supports(p) or cls.supports(p)
        if why:
            raise BenchError(f"method {cls.name or cfg.method} cannot run protocol {p.name}: {why}")
    recipe = resolve_recipe(cls, protos[0])
    hp = cls.resolve_hparams({**(recipe.hparams if recipe else {}), **cfg.hparams})
    for p in protos:
        setting.check_method(cls, hp, p)
    if cfg.train_steps is not None:
        steps = cfg.train_steps
    elif recipe and recipe.train_steps is not None:
        steps = recipe.train_steps
    else:
        steps = protos[0].train_steps
    return setting, protos, cls, hp, recipe, steps


def evaluate(
    cfg: RunConfig, method_cls: type[MetaLearner] | None = None, log: Callable[[str], None] = print
) -> list[tuple[dict, Path | None]]:
    """Train once per seed and score on every protocol of `cfg`; [(record, path or None)], one per protocol."""
    setting, protos, cls, hp, recipe, steps = plan(cfg, method_cls)
    log = log if is_first_process() else (lambda _m: None)  # DDP's other processes train in step, silently
    method = cls.name or cfg.method
    dev = process_device(resolve_device(cfg.device), cfg.devices)
    first = protos[0]
    seeds = cfg.seeds or first.seeds
    res_root = paths.results_dir(cfg.results_dir)
    if cfg.write:
        check_writable(res_root)  # found now, not after an hour of training
    shared: dict = {}
    datas = [setting.prepare(p, dev, cfg, shared) for p in protos]
    base_id = cfg.run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    run_ids = [base_id] if len(protos) == 1 else [f"{base_id}.{i}" for i in range(len(protos))]
    ckpt_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else res_root / CHECKPOINTS
    budget = f"{steps} training steps{f' or {cfg.max_train_time:g}s' if cfg.max_train_time else ''}"
    log(
        f"{method} on {', '.join(p.name for p in protos)}: {budget}, seeds {list(seeds)}, "
        f"device {dev}" + (f", recipe {recipe.name}" if recipe else "")
    )
    runs: list[list[dict]] = [[] for _ in protos]
    saved: list[Path] = []  # checkpoints written so far; removed if the run fails before any record is
    written: list[Path] = []
    try:
        for seed in seeds:
            pl.seed_everything(seed, verbose=False)
            model = setting.build_model(cls, datas[0], hp)
            trained = setting.train(model, datas[0], cfg, steps, seed, dev)
            if not is_first_process():  # a DDP process of the first one's: it trained in step, the first scores
                continue
            ckpt = None
            if cfg.write:
                ckpt_path = ckpt_root / f"{base_id}-seed{seed}.pt"
                saved.append(ckpt_path)
                ckpt = save_checkpoint(
                    model, model.hp, ckpt_path, method, first.name, first.version, seed, relative_to=res_root
                )
            for j, (proto, data) in enumerate(zip(protos, datas)):
                own = setting_of(proto)  # the training is shared; scoring and the record are each setting's
                scored = own.score(model, data, dev, progress=cfg.progress)
                entry = {
                    "seed": int(seed),
                    **own.run_section(scored),
                    "train_steps": trained.steps,
                    "train_budget": {"steps": int(steps), "max_time_s": cfg.max_train_time},
                    "train_time_s": round(trained.seconds, 3),
                    "eval_time_s": round(scored.seconds, 3),
                    "selection": to_jsonable(trained.selection),
                    "checkpoint": ckpt,
                    **to_jsonable(trained.extra),
                    **to_jsonable(scored.extra),
                }
                if len(protos) > 1:
                    entry["trained_with"] = [p.name for p in protos]  # one training run served all of these
                chosen = trained.selection.get("chosen_step")
                log(
                    f"  seed {seed}, {proto.name}: {format_ci(entry['mean'], entry.get('ci95'))}%  "
                    f"(train {trained.steps} steps in {trained.seconds:.1f}s"
                    f"{f', kept step {chosen} by validation' if chosen is not None else ''}; "
                    f"eval {scored.seconds:.1f}s)"
                )
                runs[j].append(entry)
        if not is_first_process():
            return []
        # every record is built and checked before the first is written
        records = [
            make_record(run_id, setting_of(proto), proto, data, method, cls, hp, recipe, proto_runs, dev, cfg)
            for run_id, proto, data, proto_runs in zip(run_ids, protos, datas, runs)
        ]
        out = []
        for proto, record in zip(protos, records):
            s = record["summary"]
            seed_part = (
                f", seed means {format_ci(s['mean'], s['seed_ci95'])}% over {s['n_seeds']} seeds"
                if s.get("seed_ci95") is not None
                else ""
            )
            log(
                f"{method} on {proto.name}: {format_ci(s['mean'], s.get('ci95'))}% (95% CI over "
                f"{len(setting_of(proto).units(record))} {setting_of(proto).unit}s){seed_part}"
            )
            path = None
            if cfg.write:
                path = write_record(res_root, record)
                written.append(path)
                log(f"wrote {path}")
            out.append((record, path))
        return out
    except BaseException:
        if not written:  # no record names them: they are orphans
            for p in saved:
                p.unlink(missing_ok=True)
        raise


def check_writable(folder: Path) -> None:
    """Fail before training when the results folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise BenchError(
            f"the results folder {folder} cannot be written ({e.strerror or e}); choose another with "
            f"--results or ${paths.RESULTS_ENV}"
        ) from None


def make_record(
    run_id: str,
    setting: Setting,
    proto: Protocol,
    data: Any,
    method: str,
    cls: type[MetaLearner],
    hp: dict,
    recipe,
    runs: list[dict],
    dev,
    cfg: RunConfig,
) -> dict:
    method_block: dict[str, Any] = {
        "name": method,
        "backbone": hp.get("backbone"),
        "hparams": to_jsonable(hp),
        "paper": cls.paper,
        "recipe": recipe.name if recipe else None,
    }
    if cfg.source:
        method_block["source"] = dict(cfg.source)
    architecture = architecture_block(hp.get("backbone"), proto.channels, proto.image_size)
    if architecture is not None:  # a found cell: its genotype's fingerprint, size and search cost
        method_block["architecture"] = architecture
    summary = {
        **setting.summary_section(runs),
        "train_time_s": round(sum(r["train_time_s"] for r in runs), 3),
        "eval_time_s": round(sum(r["eval_time_s"] for r in runs), 3),
    }
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": cfg.kind,
        "setting": setting.name,
        "protocol": setting.protocol_section(proto, data),
        "method": method_block,
        "seeds": [r["seed"] for r in runs],
        "runs": runs,
        "summary": summary,
        "device": device_info(dev),
        "environment": environment(),
        "code": git_info(),
        "data": setting.data_fingerprints(data),
    }
    if cfg.sweep:
        record["sweep"] = dict(cfg.sweep)
    validate(record)
    problem = setting.section_problem(record)
    if problem:
        raise BenchError(f"internal error: the {setting.name} record section is inconsistent: {problem}")
    return record


def run(method: str, protocol: str, **kwargs: Any) -> tuple[dict, Path | None]:
    """One protocol, keyword settings as in RunConfig: the record and where it was written (None if not)."""
    method_cls = kwargs.pop("method_cls", None)
    log = kwargs.pop("log", print)
    return evaluate(RunConfig(method, (protocol,), **kwargs), method_cls, log)[0]
