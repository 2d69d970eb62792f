"""Records from predictions that outside code (a torchmeta or learn2learn script) made on a protocol's fixed test
episodes.

The record is an ordinary record of the protocol's setting, built by the run loop's `make_record` and checked
as every record is, with two differences: its `kind` is "external" and `method.external` says the predictions
came from code outside the benchmark. The benchmark scores the predictions itself, against the episodes' query
labels, exactly as the harness scores a method's logits (argmax, then the per-episode mean of correct queries).
It cannot re-run outside code, so `bench verify` refuses these records and the page marks them as not
re-verifiable.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import paths
from ..core.files import sha256_file
from ..methods import ALGORITHMS
from ..protocols import PROTOCOLS, EpisodeSpec
from ..records import record_path, validate, write_record
from ..run import RunConfig, device_info
from ..settings import Scored, check_record, setting_of
from ..settings.runner import make_record
from .episodes import ProtocolEpisodes, episode_spec, protocol_episodes
from .splits import CompatError

# per episode: predicted labels [episodes, ways*queries] or scores [episodes, ways*queries, ways]; a tensor,
# an array, or a list of per-batch ones in the episodes' order
Predictions = torch.Tensor | np.ndarray | Sequence[Any]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # the schema's method name, checked before any work
KIND = "external"


class _Outside:
    """What make_record reads from a method class, for code that has none here."""

    def __init__(self, paper: str | None):
        self.paper = paper or ""


def predicted_labels(predictions: Predictions, n: int, spec: EpisodeSpec) -> torch.Tensor:
    """Predictions as labels [n, ways*queries] (int64, CPU); an error naming the expected shape otherwise."""
    batches = isinstance(predictions, (list, tuple)) and predictions
    if batches and isinstance(predictions[0], (torch.Tensor, np.ndarray)):
        parts = [torch.as_tensor(p).detach().cpu() for p in predictions]
        if len({p.ndim for p in parts}) != 1:
            raise CompatError("the per-batch predictions mix labels and scores; give one kind for every batch")
        pred = torch.cat(parts)
    else:
        try:
            pred = torch.as_tensor(predictions).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise CompatError(f"predictions must be a tensor, an array or a list of per-batch ones ({e})") from None
    nq, ways = spec.ways * spec.queries, spec.ways
    want = f"[{n}, {nq}] predicted labels or [{n}, {nq}, {ways}] scores (episodes, queries, ways)"
    if pred.ndim not in (2, 3) or tuple(pred.shape[1:]) not in ((nq,), (nq, ways)):
        raise CompatError(f"predictions have shape {list(pred.shape)}; expected {want}")
    if pred.shape[0] != n:
        raise CompatError(
            f"predictions cover {pred.shape[0]} episodes but the episodes they are scored on number {n}; "
            f"give one prediction per query of every episode, in the order protocol_episodes yields them "
            f"(n_episodes=... names a shorter run)"
        )
    if pred.ndim == 3:
        if not torch.isfinite(pred.float()).all():
            raise CompatError("the predicted scores contain NaN or infinite values")
        return pred.argmax(-1)
    if pred.dtype.is_floating_point or pred.dtype == torch.bool or pred.is_complex():
        raise CompatError(f"predicted labels must be integers, not {pred.dtype}; give scores as [{n}, {nq}, {ways}]")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= ways):
        raise CompatError(f"predicted labels must lie in 0..{ways - 1} (got {int(pred.min())}..{int(pred.max())})")
    return pred.long()


def episode_accuracies(labels: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Per-episode accuracy, computed as the harness computes it (float32 mean, then float64)."""
    return (labels == truth).float().mean(1).double().numpy()


def _device(name: str) -> dict:
    dev = torch.device(name)
    if dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()):
        return device_info(dev)
    return {"type": dev.type}  # predicted elsewhere; this machine cannot describe that device


def external_record(
    episodes: ProtocolEpisodes | str,
    predictions: Predictions | Mapping[int, Predictions],
    *,
    method: str,
    episodes_fingerprint: str | None = None,
    folder: str | os.PathLike | None = None,
    n_episodes: int | None = None,
    seed: int = 0,
    hparams: Mapping[str, Any] | None = None,
    backbone: str | None = None,
    paper: str | None = None,
    code: str | os.PathLike | None = None,
    library: str | None = None,
    train_steps: int = 0,
    train_time_s: float = 0.0,
    eval_time_s: float = 0.0,
    device: str = "cpu",
    notes: str | None = None,
) -> dict:
    """A validated record of kind "external" from per-episode predictions (see `Predictions`; a mapping
    {seed: predictions} for several training seeds). `episodes` is the `ProtocolEpisodes` the predictions were
    made on, or a protocol name with the `episodes_fingerprint` they carried (regenerated from `folder` and
    compared). `code` is the outside script, recorded with its sha256; `library` e.g. "torchmeta"."""
    if not NAME.match(method):
        raise CompatError(f"method name {method!r}: use letters, digits and _ . + -, starting with a letter or digit")
    if method in ALGORITHMS:
        raise CompatError(
            f"{method!r} is a built-in method's name: an external record under it would be taken for that method's "
            f"records (and supersede them on the page); choose another, e.g. {method}-{library or 'external'}"
        )
    if isinstance(episodes, str):
        proto = PROTOCOLS.get(episodes)
        n = n_episodes or proto.test_episodes
        if episodes_fingerprint is None:
            raise CompatError(
                "give episodes_fingerprint=... (the .fingerprint of the protocol_episodes the predictions were made "
                "on), or pass that ProtocolEpisodes object itself"
            )
    else:
        proto, n = episodes.protocol, episodes.n_episodes
    spec = episode_spec(proto)
    per_seed = predictions if isinstance(predictions, Mapping) else {seed: predictions}
    if not per_seed:
        raise CompatError("no predictions given")
    labels = {int(s): predicted_labels(p, n, spec) for s, p in per_seed.items()}
    code_file = Path(code) if code is not None else None
    if code_file is not None and not code_file.is_file():
        raise CompatError(f"code={str(code)!r} is not a file; name the script that made the predictions, or omit it")
    eps = protocol_episodes(proto.name, folder, episodes=n) if isinstance(episodes, str) else episodes
    if episodes_fingerprint is not None and episodes_fingerprint != eps.fingerprint:
        raise CompatError(
            f"the predictions were made on episodes with fingerprint {episodes_fingerprint[:12]}..., but "
            f"{proto.name} v{proto.version}'s first {n} fixed test episodes have fingerprint "
            f"{eps.fingerprint[:12]}...: "
            f"they were made on other episodes (another protocol, version or episode count)"
        )
    setting, truth = setting_of(proto), eps.query_labels
    runs = [
        {
            "seed": s,
            **setting.run_section(Scored(episode_accuracies(pred, truth), eval_time_s)),
            "train_steps": int(train_steps),
            "train_time_s": round(float(train_time_s), 3),
            "eval_time_s": round(float(eval_time_s), 3),
            "checkpoint": None,
        }
        for s, pred in labels.items()
    ]
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    hp = {**(hparams or {}), **({"backbone": backbone} if backbone else {})}
    cfg = RunConfig(method, (proto.name,), write=False, progress=False)
    outside: Any = _Outside(paper)
    record = make_record(run_id, setting, proto, eps, method, outside, hp, None, runs, torch.device("cpu"), cfg)
    record["kind"] = KIND
    record["device"] = _device(device)
    if not paper:
        del record["method"]["paper"]
    external: dict[str, Any] = {"scored_by": "benchmark.compat.external", "reverifiable": False}
    if library:
        external["library"] = library
    if code_file is not None:
        external.update(file=str(code_file), sha256=sha256_file(code_file))
    record["method"]["external"] = external
    if notes:
        record["notes"] = notes
    validate(record)
    check_record(record)
    return record


def write_external_record(record: dict, results: str | os.PathLike | None = None) -> Path:
    """Write an external record where the page finds it (`results`, else $BENCH_RESULTS_DIR, else ./results).
    Refused where records of the same method name that are not external already stand, which it would supersede."""
    if record.get("kind") != KIND:
        raise CompatError(f"this writes external records, not kind {record.get('kind')!r}; the harness writes those")
    validate(record)
    check_record(record)
    root = paths.results_dir(results)
    folder = record_path(root, record).parent
    for other in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            kind = json.loads(other.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            continue  # the page reports unreadable records; they do not decide this
        if kind != KIND:
            raise CompatError(
                f"{other} is a {kind} record of method {record['method']['name']!r}; an external record under the "
                f"same name would supersede it on the page. Choose another method name."
            )
    return write_record(root, record)
