"""`bench perf`: speed numbers measured against a reference in the same run.

1. Meta-training throughput (tasks/s) of each gradient-based method (MAML, first-order MAML, ANIL,
   Meta-SGD, Reptile, the LSTM meta-learner): its `torch.func` batched step (vmap over tasks) against
   the same objective computed with a plain per-task loop, same model, data and device, after checking
   that the two give the same loss.
2. ProtoNet evaluation throughput (episodes/s) including episode sampling on the device, and on the
   protocol's fixed test episodes.
3. Evaluation throughput of every few-shot method (episodes/s on the fixed test episodes, gathering
   included, at the method's own `eval_batch`), so a reader sees what each method costs to score.
Each figure is the median over `--repeats` timed calls after warm-up, with the device synchronised.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from ..core.errors import BenchError
from ..core.files import atomic_write_text
from ..episodes import EpisodeSampler
from ..protocols import PROTOCOLS
from ..run import device_info, environment, resolve_device
from ..settings import method_class, prepare_run, setting_of


def _time(fn, repeats: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _omniglot(device, data_dir, protocol="omniglot-5w1s", episodes=1):
    return prepare_run(PROTOCOLS.get(protocol), device, episodes, data_dir)


def _build(name: str, prep, hparams: dict):
    cls = method_class(name)
    return setting_of(prep.protocol).build_model(cls, prep, cls.resolve_hparams(hparams))


# The gradient-based meta-learners `bench perf` times: each batched path against its own per-task loop.
GRADIENT_METHODS = ("maml", "fomaml", "anil", "meta-sgd", "reptile", "meta-lstm")


def meta_speed(name: str, device, data_dir, tasks=32, inner_steps=5, repeats=5, loop_repeats=None, log=print) -> dict:
    """Meta-training throughput of `name`: the torch.func batched step (vmap over tasks), the path training
    takes on this device, and `loop_meta_loss` (the same objective task by task with torch.autograd)."""
    prep = _omniglot(device, data_dir)
    cls = method_class(name)
    hp = {"meta_batch": tasks, "inner_steps": inner_steps}
    model = _build(name, prep, {k: v for k, v in hp.items() if k in cls.defaults()}).to(device)
    model.log_dict = lambda *a, **k: None  # outside a Trainer there is nothing to log to
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = EpisodeSampler(prep.train, prep.protocol.episode_spec)
    g = torch.Generator(device=device).manual_seed(0)
    batch = sampler.sample(tasks, g)

    def step(vmap: bool | None):
        def run():
            opt.zero_grad(set_to_none=True)
            ep = sampler.sample(tasks, g)
            if vmap is None:
                loss = model.loop_meta_loss(ep)
            else:
                model.force_vmap = vmap
                loss = model.training_step(ep, 0)
            loss.backward()
            opt.step()

        return run

    # the objectives agree before we time them (same batch, weights and random draws)
    model.force_vmap = True
    torch.manual_seed(0)
    vm = model.training_step(batch, 0).item()
    torch.manual_seed(0)
    lp = model.loop_meta_loss(batch).item()
    t_vmap = _time(step(True), repeats, device)
    t_default = t_vmap if device.type == "cuda" else _time(step(False), repeats, device)
    t_loop = _time(step(None), loop_repeats or max(1, repeats // 2), device, warmup=1)
    out = {
        "tasks_per_batch": tasks,
        "inner_steps": model.hp["inner_steps"],
        "episode": str(prep.protocol.episode_spec),
        "loss_vmap": vm,
        "loss_loop": lp,
        "vmap_tasks_per_s": tasks / t_vmap,
        "loop_tasks_per_s": tasks / t_loop,
        "speedup": t_loop / t_vmap,
        "training_path_tasks_per_s": tasks / t_default,
        "training_path": "vmap" if device.type == "cuda" else "task by task (torch.func)",
        "training_path_vs_loop": t_loop / t_default,
    }
    log(
        f"  {name:<10} vmap {out['vmap_tasks_per_s']:8.1f} tasks/s, loop {out['loop_tasks_per_s']:8.1f} tasks/s, "
        f"ratio {out['speedup']:5.1f}x; training path ({out['training_path']}) "
        f"{out['training_path_tasks_per_s']:.1f} tasks/s = {out['training_path_vs_loop']:.2f}x the loop "
        f"(objectives {vm:.5f} vs {lp:.5f})"
    )
    return out


def protonet_speed(device, data_dir, episodes=2000, eval_batch=500, repeats=5, log=print) -> dict:
    prep = _omniglot(device, data_dir, episodes=min(episodes, 600))
    model = _build("protonet", prep, {}).to(device).eval()
    sampler = EpisodeSampler(prep.test, prep.protocol.episode_spec)
    g = torch.Generator(device=device).manual_seed(0)
    n_batches = max(1, episodes // eval_batch)

    def eval_sampled():
        with torch.no_grad():
            for _ in range(n_batches):
                ep = sampler.sample(eval_batch, g)
                (model.predict_episodes(ep).argmax(-1) == ep.query_y).float().mean(1)

    fixed_n = len(prep.episodes)

    def eval_fixed():
        with torch.no_grad():
            for i in range(0, fixed_n, eval_batch):
                ep = sampler.episodes(prep.episodes, i, min(i + eval_batch, fixed_n))
                (model.predict_episodes(ep).argmax(-1) == ep.query_y).float().mean(1)

    t_s = _time(eval_sampled, repeats, device, warmup=1)
    t_f = _time(eval_fixed, repeats, device, warmup=1)
    out = {
        "episode": str(prep.protocol.episode_spec),
        "eval_batch": eval_batch,
        "sampled_episodes_per_s": n_batches * eval_batch / t_s,
        "fixed_episodes_per_s": fixed_n / t_f,
        "fixed_episodes": fixed_n,
    }
    log(
        f"ProtoNet evaluation (Omniglot 5-way 1-shot, 15 queries, Conv-4/64, {eval_batch} episodes/pass): "
        f"{out['sampled_episodes_per_s']:.0f} episodes/s with on-device sampling, "
        f"{out['fixed_episodes_per_s']:.0f} episodes/s on the {fixed_n} fixed test episodes"
    )
    return out


def eval_speed(name: str, device, data_dir, episodes: int, log=print) -> dict:
    """Scoring throughput of `name` (untrained weights: the cost does not depend on them) on the first `episodes`
    fixed test episodes of omniglot-5w1s, in the method's own batches, after one warm-up batch."""
    prep = _omniglot(device, data_dir, episodes=episodes)
    model = _build(name, prep, {}).to(device).eval()
    sampler = EpisodeSampler(prep.test, prep.protocol.episode_spec, model.shuffled_support)
    step = max(1, int(model.hp["eval_batch"]))
    n = len(prep.episodes)

    def score(stop):
        with torch.no_grad():
            for i in range(0, stop, step):
                ep = sampler.episodes(prep.episodes, i, min(i + step, stop))
                (model.predict_episodes(ep).argmax(-1) == ep.query_y).float().mean(1)

    score(min(step, n))  # warm-up
    t = _time(lambda: score(n), 1, device, warmup=0)
    out = {"episodes": n, "eval_batch": step, "episodes_per_s": n / t}
    log(f"  {name:<16} {out['episodes_per_s']:10.1f} episodes/s ({n} episodes, {step} per pass)")
    return out


def eval_methods() -> list[str]:
    """Every registered method that runs omniglot-5w1s (the built-ins are registered by the CLI)."""
    from ..methods import ALGORITHMS

    protocol = PROTOCOLS.get("omniglot-5w1s")
    return [n for n in sorted(ALGORITHMS) if ALGORITHMS.get(n).supports(protocol) is None]


# Sized to the device: the GPU figures are the ones the targets are about; on a 2-core CPU the same
# measurements at this size finish in about a minute (the GPU sizes took over six there).
DEFAULTS = {
    "cuda": {"tasks": 32, "repeats": 5, "eval_episodes": 5000, "eval_batch": 500, "method_episodes": 600},
    "cpu": {"tasks": 4, "repeats": 2, "eval_episodes": 50, "eval_batch": 50, "method_episodes": 10},
}


def main(args) -> int:
    dev = resolve_device(args.device)
    size = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS[dev.type].items()}
    print(
        f"bench perf on {dev}: {size['tasks']} tasks x {size['repeats']} repeats per method, ProtoNet "
        f"{size['eval_episodes']} episodes in batches of {size['eval_batch']}"
    )
    names = args.methods or GRADIENT_METHODS
    scored = args.eval_methods or eval_methods()
    for n in scored:
        method_class(n)  # an unknown name fails here, before anything is timed
    for n in names:  # named before anything is timed
        if not hasattr(method_class(n), "loop_meta_loss"):
            raise BenchError(
                f"bench perf: {n} has no per-task reference loop to time against; choose among "
                f"{', '.join(GRADIENT_METHODS)}"
            )
    print(
        f"meta-training throughput, Omniglot 5-way 1-shot, Conv-4/64, {size['tasks']} tasks per batch, "
        f"{args.inner_steps} inner steps, second order where the method is: batched (vmap) against the same "
        "objective task by task ...",
        flush=True,
    )
    methods = {n: meta_speed(n, dev, args.data_dir, size["tasks"], args.inner_steps, size["repeats"]) for n in names}
    print("measuring ProtoNet evaluation ...", flush=True)
    protonet = protonet_speed(dev, args.data_dir, size["eval_episodes"], size["eval_batch"], size["repeats"])
    print(
        f"evaluation throughput per method, omniglot-5w1s fixed test episodes, Conv-4/64, untrained weights, "
        f"{size['method_episodes']} episodes ...",
        flush=True,
    )
    evaluation = {n: eval_speed(n, dev, args.data_dir, size["method_episodes"]) for n in scored}
    result = {
        "device": device_info(dev),
        "environment": environment(),
        "size": size,
        "methods": methods,
        "protonet": protonet,
        "evaluation": evaluation,
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0
