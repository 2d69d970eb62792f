"""One trial, where it runs (a Ray worker, or any process): an ordinary `bench evaluate` run of one
configuration and seed, whose record is named by the trial's hash, so it can be written only once."""

from __future__ import annotations

import importlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import BenchError
from ..protocols import added as protocol_files
from .spec import SweepSpec, Trial, run_config


@dataclass(frozen=True)
class Context:
    """What every trial of one sweep shares; picklable, it travels with each trial."""

    spec: SweepSpec
    name: str
    folder: str  # the sweep's results folder, absolute
    device: str  # cpu, or cuda (Ray shows a trial only the GPU it was given)
    imports: tuple[str, ...] = ()  # modules that register methods and backbones (the CLI names `baselines`)
    data_dir: str | None = None  # absolute


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # done, skipped (its record exists), failed
    reason: str = ""
    seconds: float = 0.0
    mean: float | None = None  # the trial's test score, from its record
    val: float | None = None  # its validation score (the one selection uses)


def recorded_key(path: Path) -> str | None:
    """The trial hash a record file names, or None when there is no readable record there."""
    try:
        return json.loads(path.read_text()).get("sweep", {}).get("trial")
    except (OSError, ValueError, AttributeError):
        return None


def scores(record: dict) -> tuple[float | None, float | None]:
    run = record["runs"][0]
    return record["summary"].get("mean"), run.get("selection", {}).get("val_accuracy")


def finished(trial: Trial, folder: Path) -> Outcome | None:
    """The outcome of a trial whose record exists already (a skip), else None. A file at the trial's path that
    names another configuration is a hash clash or a hand edit: an error, never overwritten."""
    path = trial.record_path(folder)
    if not path.exists():
        return None
    key = recorded_key(path)
    if key != trial.key:
        raise BenchError(f"{path} exists but is not the record of trial {trial.key[:16]} (it names {key}); move it")
    mean, val = scores(json.loads(path.read_text()))
    return Outcome(trial.key, "skipped", "its record exists", mean=mean, val=val)


def run_trial(trial: Trial, ctx: Context) -> Outcome:
    """Run one trial and write its record; every failure comes back as an Outcome, so one trial never stops
    the others."""
    t0 = time.perf_counter()
    folder = Path(ctx.folder)
    try:
        for module in ctx.imports:  # by name: the sweep does not depend on the modules that register methods
            importlib.import_module(module)
        protocol_files.resolve([trial.protocol_arg], ctx.data_dir)  # a protocol file registers itself here too
        done = finished(trial, folder)
        if done is not None:
            return done
        from ..settings import evaluate

        cfg = run_config(
            ctx.spec,
            trial.method,
            trial.protocol,
            trial.hparams,
            seeds=(trial.seed,),
            device=ctx.device,
            data_dir=ctx.data_dir,
            results_dir=str(folder),
            # each attempt its own folder: a failed attempt removes only its own, never a finished one's
            checkpoint_dir=str(folder / "checkpoints" / f"{trial.run_id}-{uuid.uuid4().hex[:6]}"),
            log_dir=ctx.spec.log_dir,  # default: logs/ beside the sweep's folder, never inside a results folder
            progress=False,
            run_id=trial.run_id,
            sweep={"name": ctx.name, "role": "trial", "trial": trial.key, "config": trial.config, "index": trial.index},
        )
        ((record, _),) = evaluate(cfg, log=lambda _m: None)
        mean, val = scores(record)
        return Outcome(trial.key, "done", seconds=time.perf_counter() - t0, mean=mean, val=val)
    except FileExistsError:  # another run of the sweep wrote it first: there is still one record
        if recorded_key(trial.record_path(folder)) == trial.key:
            return Outcome(trial.key, "skipped", "written by another run", seconds=time.perf_counter() - t0)
        return Outcome(trial.key, "failed", "its record path is taken by another file", time.perf_counter() - t0)
    except Exception as e:
        reason = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        return Outcome(trial.key, "failed", reason, seconds=time.perf_counter() - t0)
