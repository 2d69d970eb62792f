"""Submitted code runs in a process of its own: scratch working folder, memory and time limits, and a
narrow channel (frames.py) to the scoring process, which samples the episodes, sends support images,
support labels and query images (query labels never leave it) and computes the accuracies itself.

`Sandbox` manages the process; `remote_class` builds, from what the sandbox reports about the submitted
class, a MetaLearner subclass in the scoring process whose instances forward building, training,
weights and predict to the sandbox. The harness runs it like any method.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import BenchError
from ..methods import MetaLearner
from ..protocols import EpisodeSpec, Protocol
from ..settings.base import Trained
from . import frames
from .loading import SubmissionError, contract_error

IMPORT_TIMEOUT_S = 300.0  # importing and checking a submission (torch imports take a while)
PREDICT_TIMEOUT_S = 600.0  # one batch of test episodes
DEFAULT_MEMORY_GIB = 16.0


def _limits(memory_bytes: int | None):
    def apply() -> None:
        os.setsid()  # its own process group: the scorer can end it and all it started
        if memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


class Sandbox:
    def __init__(self, device: str = "cpu", memory_gib: float | None = DEFAULT_MEMORY_GIB):
        self.scratch = Path(tempfile.mkdtemp(prefix="metabench-sandbox-"))
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}  # no paths to our data
        env.update(
            METABENCH_REQUEST_FD=str(req_r),
            METABENCH_REPLY_FD=str(rep_w),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p
            ),
        )
        # address-space limits break CUDA's large virtual reservations, so a GPU sandbox is limited by time only
        memory = int(memory_gib * 2**30) if memory_gib and not device.startswith("cuda") else None
        self.log = open(self.scratch / "output.log", "wb")  # noqa: SIM115  (lives as long as the sandbox)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmark.submissions.worker"],
            cwd=self.scratch,
            env=env,
            pass_fds=(req_r, rep_w),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_limits(memory),
        )
        os.close(req_r)
        os.close(rep_w)
        self.requests = os.fdopen(req_w, "wb")
        self.replies = frames.Reader(rep_r)
        self.device = device

    def call(
        self,
        op: str,
        header: dict | None = None,
        arrays: dict[str, np.ndarray] | None = None,
        timeout_s: float | None = PREDICT_TIMEOUT_S,
    ) -> tuple[dict, dict[str, np.ndarray]]:
        try:
            frames.send(self.requests, {"op": op, **(header or {})}, arrays)
            reply, out = self.replies.recv(timeout_s)
        except TimeoutError:
            self.close()
            raise BenchError(
                f"the submission did not answer {op} within {timeout_s:.0f} s; it was stopped "
                f"(a hang, or far too slow for this protocol)"
            ) from None
        except (EOFError, BrokenPipeError):
            status = self.proc.wait()
            tail = self.output_tail()
            self.close()
            raise BenchError(
                f"the submission's process ended (status {status}) during {op}"
                + (f"; its last output:\n{tail}" if tail else "")
            ) from None
        if not reply.get("ok"):
            error = str(reply.get("error", "unknown error"))
            if reply.get("exit"):
                self.close()
                raise SubmissionError(
                    f"the submission called sys.exit during {op} ({error}); a method must not exit the process"
                )
            if reply.get("kind") == "SubmissionError":
                raise SubmissionError(error)
            raise BenchError(f"the submission failed during {op}: {error}")
        return reply, out

    def output_tail(self, lines: int = 15) -> str:
        self.log.flush()
        text = (self.scratch / "output.log").read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                frames.send(self.requests, {"op": "exit"})
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        for f in (self.requests, self.log):
            with contextlib.suppress(OSError):
                f.close()


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def remote_class(sandbox: Sandbox, meta: dict[str, Any]) -> type[MetaLearner]:
    """A MetaLearner subclass standing in for the submitted one: metadata from the sandbox, behaviour in it."""

    class Remote(MetaLearner):
        name = meta["name"]
        paper = meta["paper"]
        training_data = meta["training_data"]
        shuffled_support = bool(meta.get("shuffled_support", False))
        HPARAMS = dict(meta["hparams"])
        HPARAM_BOUNDS = {k: tuple(v) for k, v in meta["bounds"].items()}

        @classmethod
        def supports(cls, protocol: Protocol) -> str | None:
            reply, _ = sandbox.call("check", {"protocol": protocol.name, "hparams": {}}, timeout_s=IMPORT_TIMEOUT_S)
            return reply.get("reason")

        @classmethod
        def training_episodes(cls, hp: dict[str, Any], protocol: Protocol) -> EpisodeSpec:
            sandbox.call("check", {"protocol": protocol.name, "hparams": hp}, timeout_s=IMPORT_TIMEOUT_S)
            return super().training_episodes(hp, protocol)

        def __init__(self, task, **hp):
            super().__init__(task, **hp)
            seed = torch.initial_seed() % 2**31  # the harness seeded this process for the run's seed
            reply, _ = sandbox.call(
                "build", {"task": task.__dict__, "hparams": self.hp, "seed": seed}, timeout_s=IMPORT_TIMEOUT_S
            )

        def remote_train(self, data, cfg, steps: int, seed: int, device) -> Trained:
            arrays = {
                "train_images": _array(data.train.images),
                "train_offsets": _array(data.train.offsets),
                "train_counts": _array(data.train.counts),
                "mean": _array(data.train.mean),
                "std": _array(data.train.std),
            }
            header = {
                "protocol": data.protocol.name,
                "method": self.name,
                "steps": steps,
                "seed": seed,
                "max_train_time": cfg.max_train_time,
                "progress": cfg.progress,
                "val_episodes": cfg.val_episodes,
                "val_checks": cfg.val_checks,
                "train_label": data.train.label,
            }
            if data.val is not None and data.val_episodes is not None:
                arrays.update(
                    val_images=_array(data.val.images),
                    val_offsets=_array(data.val.offsets),
                    val_counts=_array(data.val.counts),
                    val_classes=_array(data.val_episodes.classes),
                    val_slots=_array(data.val_episodes.slots),
                    val_qperm=_array(data.val_episodes.qperm),
                )
                header["val_label"] = data.val.label
            budget = None if not cfg.max_train_time else cfg.max_train_time * 2 + IMPORT_TIMEOUT_S
            reply, _ = sandbox.call("train", header, arrays, timeout_s=budget)
            return Trained(float(reply["seconds"]), int(reply["steps"]), dict(reply["selection"]))

        def state_dict(self, *args, **kwargs):  # the weights live in the sandbox
            _, arrays = sandbox.call("state", timeout_s=IMPORT_TIMEOUT_S)
            return {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}

        def load_state_dict(self, state, strict: bool = True, assign: bool = False):
            sandbox.call("load_state", {}, {k: _array(v) for k, v in state.items()}, timeout_s=IMPORT_TIMEOUT_S)

        def predict(self, support_x, support_y, query_x, ways):
            _, out = sandbox.call(
                "predict",
                {"ways": int(ways)},
                {
                    "support_x": _array(support_x).astype(np.float32),
                    "support_y": _array(support_y),
                    "query_x": _array(query_x).astype(np.float32),
                },
                timeout_s=PREDICT_TIMEOUT_S,
            )
            logits = out.get("logits")
            if logits is None:
                raise BenchError("the submission's predict returned no logits")
            return torch.from_numpy(logits.astype(np.float32)).to(support_x.device)

        def training_step(self, batch, batch_idx):  # pragma: no cover - training happens in the sandbox
            raise BenchError("a sandboxed method trains in its sandbox")

        def configure_optimizers(self):  # pragma: no cover
            raise BenchError("a sandboxed method trains in its sandbox")

    Remote.__name__ = Remote.__qualname__ = str(meta["class"])
    return Remote


def open_submission(
    path: Path, class_name: str | None, sha256: str, device: str, memory_gib: float | None = DEFAULT_MEMORY_GIB
) -> tuple[Sandbox, type[MetaLearner]]:
    """Start a sandbox, import and check the file there (it must still have `sha256`); the sandbox and the
    class that stands in for the submitted one."""
    sandbox = Sandbox(device, memory_gib)
    try:
        header = {"file": str(path.resolve()), "class": class_name, "device": device, "sha256": sha256}
        meta, _ = sandbox.call("describe", header, timeout_s=IMPORT_TIMEOUT_S)
        if meta["problems"]:
            raise contract_error(path, meta["class"], meta["problems"])
        return sandbox, remote_class(sandbox, meta)
    except BaseException:
        sandbox.close()
        raise
