"""The trials of a sweep as plain Ray tasks: a Ray started in this process by default (nothing to set up on a
laptop), or an existing cluster by address. Each task declares its CPUs and its fraction of a GPU, so Ray packs
several small trials onto one GPU; a progress bar counts them done, running and failed, with an ETA."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from ..core.errors import BenchError
from .spec import Trial
from .trial import Context, Outcome, run_trial

GPU_SHARE = 0.25  # a trial's share of a GPU when the cluster has GPUs and the sweep does not say


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float
    slots: int  # how many trials the cluster runs at once at these sizes (at the start)
    where: str  # what the cluster is, for the log


def connect(address: str | None, init_options: dict[str, Any] | None = None) -> bool:
    """Ray in this process (address None: a new local Ray; "auto" or HOST:PORT: a running cluster). True when
    this call started it, so the caller shuts it down; a Ray already initialised here is used as it is."""
    try:
        import ray
    except ImportError:
        raise BenchError("bench sweep runs its trials on Ray, which is not installed: pip install 'ray>=2.9'") from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:  # Ray's workers run at nice 15 by default; here the trials are the work
        options["_system_config"] = {"worker_niceness": 0}
    try:
        ray.init(address=address or "local", **{**options, **(init_options or {})})
    except ConnectionError as e:
        raise BenchError(
            f"--address {address}: no Ray cluster answers there ({e}); start one with `ray start --head`"
        ) from None
    return True


def resources(cpus: float, gpus: float | None) -> Resources:
    import ray

    have = ray.cluster_resources()
    cpu, gpu = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    if gpus is None:
        gpus = GPU_SHARE if gpu > 0 else 0.0
    if cpus > cpu or gpus > gpu:
        raise BenchError(
            f"a trial asks for {cpus:g} CPU and {gpus:g} GPU, but the Ray cluster has {cpu:g} CPU and {gpu:g} GPU in "
            f"all; lower --cpus-per-trial or --gpus-per-trial"
        )
    slots = min(math.floor(cpu / cpus + 1e-9), math.floor(gpu / gpus + 1e-9) if gpus else 10**9)
    return Resources(cpus, gpus, max(1, slots), f"Ray cluster with {cpu:g} CPU and {gpu:g} GPU")


def execute(
    trials: Sequence[Trial],
    ctx: Context,
    res: Resources,
    progress: bool = True,
    on_outcome: Callable[[Trial, Outcome], None] = lambda t, o: None,
) -> list[Outcome]:
    """Run the trials as Ray tasks and return their outcomes in the trials' order. A task that dies (its worker
    killed, out of memory) counts as a failed trial, with Ray's reason."""
    import ray

    task = ray.remote(run_trial).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)
    pending = {task.remote(t, ctx): t for t in trials}
    outcomes: dict[str, Outcome] = {}
    counts = {"done": 0, "failed": 0, "skipped": 0}
    with tqdm(total=len(trials), desc="trials", unit="trial", disable=not progress, dynamic_ncols=True) as bar:
        bar.set_postfix(running=min(len(pending), res.slots), failed=0)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as e:  # the task itself died: Ray's error says how
                outcome = Outcome(trial.key, "failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
            outcomes[trial.key] = outcome
            counts[outcome.status] += 1
            on_outcome(trial, outcome)
            bar.update(1)
            bar.set_postfix(
                done=counts["done"],
                running=min(len(pending), res.slots),
                failed=counts["failed"],
                **({"skipped": counts["skipped"]} if counts["skipped"] else {}),
            )
    return [outcomes[t.key] for t in trials]
