"""The training side of domain generalisation: per-domain views of the source, validation and target images,
a training loop over batches from every source domain with checkpoints chosen by training-domain
validation (and, apart, by the oracle), and image-by-image scoring on the target domain."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.errors import BenchError, DataError
from ..methods import DomainLearner, MetaLearner, TaskInfo
from ..protocols import Protocol, SplitSpec
from ..run.config import RunConfig
from ..run.device import place, sync
from ..run.training import fit
from ..store import EpisodeView
from .base import Scored, Trained
from .domain_rules import ORACLE_RULE, SELECTION_RULE
from .episodic_training import Checkpoints, Views

DOMAIN = "domain"  # the column that names an image's domain


@dataclass
class DomainData:
    protocol: Protocol
    train: list[EpisodeView]  # one per source domain: the training share
    val: list[EpisodeView]  # one per source domain: the held-out share that selects the model
    test: EpisodeView  # every target image: what is scored
    oracle_val: EpisodeView  # a fixed share of the target: what the oracle selects on
    oracle_test: EpisodeView  # the rest of the target: what the oracle figure is measured on
    classes: tuple[str, ...]
    source_domains: tuple[str, ...]
    target_domain: str
    images_fingerprint: str
    data_fingerprints: dict[str, str] = field(default_factory=dict)


def per_domain(split: SplitSpec) -> list[tuple[str, SplitSpec]]:
    """The split's domains, each as a split of its own (same holdout, so the same images)."""
    where = dict(split.where)
    if DOMAIN not in where:
        raise BenchError(f"split {split.label} names no `{DOMAIN}` values; a domain-generalisation split must")
    rest = tuple((c, v) for c, v in split.where if c != DOMAIN)
    return [(d, dataclasses.replace(split, where=((DOMAIN, (d,)), *rest))) for d in where[DOMAIN]]


def labels_of(view: EpisodeView) -> torch.Tensor:
    """Class ids of a view's rows (its images are grouped by class, in class order)."""
    return torch.repeat_interleave(torch.arange(view.n_classes, device=view.device), view.counts.to(view.device))


def fingerprint(view: EpisodeView) -> str:
    """Which images, in which order, with which labels: equal fingerprints mean paired-comparable scores."""
    h = hashlib.sha256(f"{view.label}|{view.data_fingerprint}|{'/'.join(view.classes)}".encode())
    h.update(view.counts.cpu().numpy().tobytes())
    h.update(view.images.cpu().numpy().tobytes())
    return h.hexdigest()


def prepare(protocol: Protocol, device: torch.device, cfg: RunConfig, built: dict | None = None) -> DomainData:
    if cfg.select != "auto":
        raise BenchError(
            f"{protocol.name} selects its model by {SELECTION_RULE} (DomainBed's rule, named in the record); "
            f"--select {cfg.select} is not offered for domain generalisation"
        )
    if cfg.episodes is not None:
        raise BenchError(f"{protocol.name} scores every target image; --episodes does not apply to it")
    view = Views(protocol, device, cfg.data_dir, built)
    fps = view.fingerprints

    assert protocol.val is not None
    sources = per_domain(protocol.train)
    train = [view(s) for _, s in sources]
    val = [view(s) for _, s in per_domain(protocol.val)]
    (target, test_split), *more = per_domain(protocol.test)
    if more:
        raise BenchError(f"{protocol.name}: the test split must be one domain, not {protocol.test.label}")
    holdout = protocol.val.holdout
    assert holdout is not None, "a domain-generalisation protocol's validation split is a holdout"
    name, fraction, _ = holdout
    test = view(test_split)
    oracle_val = view(dataclasses.replace(test_split, holdout=(name, fraction, "out")))
    oracle_test = view(dataclasses.replace(test_split, holdout=(name, fraction, "in")))
    classes = test.classes
    for v in (*train, *val, oracle_val, oracle_test):
        if v.classes != classes:
            raise DataError(
                f"{protocol.name}: split {v.label} has classes {list(v.classes)}, the target has {list(classes)}; "
                f"every domain must hold every class"
            )
    return DomainData(
        protocol,
        train,
        val,
        test,
        oracle_val,
        oracle_test,
        classes,
        tuple(d for d, _ in sources),
        target,
        fingerprint(test),
        fps,
    )


def build_model(cls: type[MetaLearner], data: DomainData, hp: dict[str, Any]) -> MetaLearner:
    p = data.protocol
    n = len(data.classes)
    return cls(TaskInfo(n, 0, 0, p.image_size, p.channels, n), **hp)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crops of the image padded by a tenth of its size (reflected), and horizontal flips: the same
    for every method, drawn from the run's generator."""
    n, c, h, w = x.shape
    pad = max(1, h // 10)
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=g, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=g, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows,
        cols,
    ]
    flip = torch.rand(n, generator=g, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def correct(
    model: DomainLearner,
    view: EpisodeView,
    device: torch.device,
    progress: bool = False,
    desc: str = "",
    rows: list[int] | None = None,
) -> np.ndarray:
    """Each image's correctness (1.0 or 0.0), in the view's order, or for the given rows only."""
    place(model, device).eval()
    labels = labels_of(view)
    order = torch.arange(len(labels)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    step = max(1, int(model.hp.get("eval_batch", 256)))
    out = []
    with torch.no_grad(), tqdm(total=len(order), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for i in range(0, len(order), step):
            idx = order[i : i + step].to(view.device)
            x = view.normalise(view.images[idx]).to(device)
            logits = model.classify(x)
            if logits.shape != (len(x), view.n_classes) or not torch.isfinite(logits).all():
                raise BenchError(
                    f"{model.name}.classify returned {tuple(logits.shape)} (non-finite or not [images, classes] = "
                    f"[{len(x)}, {view.n_classes}])"
                )
            out.append((logits.argmax(-1) == labels[idx].to(device)).cpu())
            bar.update(len(x))
    return torch.cat(out).double().numpy()


def train(model: MetaLearner, data: DomainData, cfg: RunConfig, steps: int, seed: int, device: torch.device) -> Trained:
    if getattr(model, "remote_train", None) is not None:
        raise BenchError("submissions do not run domain-generalisation protocols yet")
    bs = int(model.hp["batch_size"])
    labels = [labels_of(v) for v in data.train]

    def draw(g: torch.Generator):
        xs, ys = [], []
        for view, y in zip(data.train, labels):
            idx = torch.randint(len(y), (bs,), generator=g, device=view.device)
            xs.append(view.normalise(augment(view.images[idx], g)))
            ys.append(y[idx])
        return torch.stack(xs).to(device), torch.stack(ys).to(device)

    checked: list[tuple[int, float, float]] = []  # (step, source validation accuracy, oracle accuracy)
    best: dict[str, dict[str, Any]] = {"val": {}, "oracle": {}}
    val_seconds = [0.0]

    def keep(which: str, acc: float, step: int, module) -> None:
        if not best[which] or acc >= best[which]["acc"]:  # ties go to the later, longer-trained model
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            best[which] = {"acc": acc, "step": step, "state": state}

    def check(module, step):
        t0 = time.perf_counter()
        # DomainBed's training-domain validation: the mean of the source domains' held-out accuracies
        acc = float(np.mean([correct(module, v, device).mean() for v in data.val]))
        oracle = float(correct(module, data.oracle_val, device).mean())
        module.train()
        val_seconds[0] += time.perf_counter() - t0
        checked.append((step, acc, oracle))
        keep("val", acc, step, module)
        keep("oracle", oracle, step, module)

    every = max(1, min(300, steps // max(1, cfg.val_checks)))  # DomainBed checks every 300 steps
    every_s = cfg.max_train_time / (cfg.val_checks + 1) if cfg.max_train_time else None
    seconds, done = fit(
        model, draw, steps, seed, device, data.train[0].device, cfg.progress, cfg.max_train_time,
        [Checkpoints(every, check, every_s)],
    )  # fmt: skip
    if not checked or checked[-1][0] != done:
        check(model, done)
    model.load_state_dict(best["oracle"]["state"])
    assert isinstance(model, DomainLearner)
    oracle_acc = float(correct(model, data.oracle_test, device).mean())
    model.load_state_dict(best["val"]["state"])
    selection = {
        "rule": SELECTION_RULE,
        "split": data.protocol.val.label if data.protocol.val else "",
        "images": int(sum(len(v.images) for v in data.val)),
        "checked_steps": [s for s, _, _ in checked],
        "val_accuracies": [a for _, a, _ in checked],
        "chosen_step": best["val"]["step"],
        "val_accuracy": best["val"]["acc"],
        "val_time_s": round(val_seconds[0], 3),
        "oracle": {
            "rule": ORACLE_RULE,
            "split": data.oracle_val.label,
            "val_accuracies": [o for _, _, o in checked],
            "chosen_step": best["oracle"]["step"],
            "val_accuracy": best["oracle"]["acc"],
            "scored_on": data.oracle_test.label,
            "images": len(data.oracle_test.images),
            "accuracy": oracle_acc,
        },
    }
    return Trained(seconds, done, selection)


def score(model: MetaLearner, data: DomainData, device: torch.device, progress: bool = True) -> Scored:
    sync(device)
    t0 = time.perf_counter()
    assert isinstance(model, DomainLearner)
    units = correct(model, data.test, device, progress, desc="target images")
    sync(device)
    return Scored(units, time.perf_counter() - t0)
