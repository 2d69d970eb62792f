"""The sandbox's side: `python -m benchmark.submissions.worker`, started by sandbox.py in a scratch folder
with resource limits. It imports the submission, builds and trains it, and answers predict requests with
logits; it never receives query labels. Requests and replies are frames (frames.py) on two inherited
pipes, so whatever the submission prints cannot be mistaken for a reply.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch

from ..core.errors import BenchError
from ..core.files import sha256_bytes
from ..episodes import FixedEpisodes
from ..methods import MetaLearner, TaskInfo
from ..protocols import PROTOCOLS
from ..records import to_jsonable
from ..run import RunConfig, resolve_device
from ..settings.episodic_training import Prepared, train
from ..store import EpisodeView
from . import frames
from .loading import SubmissionError, dry_check, inspect_file


class Worker:
    def __init__(self) -> None:
        self.cls: type[MetaLearner] | None = None
        self.model: MetaLearner | None = None
        self.device = torch.device("cpu")

    # --- requests ------------------------------------------------------------------------------------
    def describe(self, h: dict, a: dict) -> tuple[dict, dict]:
        path = Path(h["file"])
        data = path.read_bytes()
        if sha256_bytes(data) != h["sha256"]:
            raise SubmissionError(f"{path} changed while it was being submitted; submit it again")
        cls, problems = inspect_file(path, data, h.get("class"))
        if not problems:
            self.cls = cls
        self.device = resolve_device(h.get("device", "cpu"))
        return {
            "problems": problems,
            "class": cls.__name__,
            "name": getattr(cls, "name", ""),
            "paper": getattr(cls, "paper", ""),
            "training_data": getattr(cls, "training_data", None),
            "shuffled_support": bool(getattr(cls, "shuffled_support", False)),
            "hparams": to_jsonable(getattr(cls, "HPARAMS", {})),
            "bounds": to_jsonable(getattr(cls, "HPARAM_BOUNDS", {})),
        }, {}

    def check(self, h: dict, a: dict) -> tuple[dict, dict]:
        """supports() and, for episodic training, training_episodes() of the submission's own class."""
        cls = self._cls()
        p = PROTOCOLS.get(h["protocol"]) if h["protocol"] in PROTOCOLS else None
        reason = cls.supports(p) if p is not None else None
        if reason is None and p is not None and cls.training_data == "episodes":
            cls.training_episodes(cls.resolve_hparams(h["hparams"]), p)
        return {"reason": reason}, {}

    def dry(self, h: dict, a: dict) -> tuple[dict, dict]:
        dry_check(self._cls(), PROTOCOLS.get(h["protocol"]), h["hparams"])
        return {}, {}

    def build(self, h: dict, a: dict) -> tuple[dict, dict]:
        pl.seed_everything(h["seed"], verbose=False)
        self.model = self._cls()(TaskInfo(**h["task"]), **h["hparams"])
        return {"hp": to_jsonable(self.model.hp)}, {}

    def train(self, h: dict, a: dict) -> tuple[dict, dict]:
        def view(prefix: str) -> EpisodeView:
            n = len(a[f"{prefix}_counts"])
            return EpisodeView(
                h[f"{prefix}_label"],
                torch.from_numpy(a[f"{prefix}_images"].copy()),
                torch.from_numpy(a[f"{prefix}_offsets"].copy()),
                torch.from_numpy(a[f"{prefix}_counts"].copy()),
                tuple(str(i) for i in range(n)),
                torch.from_numpy(a["mean"].copy()),
                torch.from_numpy(a["std"].copy()),
                "sandbox",
            ).to(self.device)

        protocol = PROTOCOLS.get(h["protocol"])
        tr = view("train")
        val = val_eps = None
        if "val_images" in a:
            val = view("val")
            classes, slots, qperm = (torch.from_numpy(a[f"val_{k}"].copy()) for k in ("classes", "slots", "qperm"))
            val_eps = FixedEpisodes(classes, slots, qperm, "sandbox")
        placeholder = FixedEpisodes(
            torch.zeros(0, 1, dtype=torch.long),
            torch.zeros(0, 1, 1, dtype=torch.long),
            torch.zeros(0, 1, dtype=torch.long),
            "none",
        )
        data = Prepared(protocol, tr, tr, placeholder, {}, val, val_eps)  # the test split never comes here
        cfg = RunConfig(
            h["method"],
            (protocol.name,),
            max_train_time=h["max_train_time"],
            progress=h["progress"],
            val_episodes=h["val_episodes"],
            val_checks=h["val_checks"],
        )
        trained = train(self._model(), data, cfg, h["steps"], h["seed"], self.device)
        return {"seconds": trained.seconds, "steps": trained.steps, "selection": to_jsonable(trained.selection)}, {}

    def state(self, h: dict, a: dict) -> tuple[dict, dict]:
        return {}, {k: v.detach().cpu().numpy() for k, v in self._model().state_dict().items()}

    def load_state(self, h: dict, a: dict) -> tuple[dict, dict]:
        self._model().load_state_dict({k: torch.from_numpy(v.copy()) for k, v in a.items()})
        return {}, {}

    def predict(self, h: dict, a: dict) -> tuple[dict, dict]:
        model = self._model().to(self.device).eval()
        sx, sy, qx = (torch.from_numpy(a[k].copy()).to(self.device) for k in ("support_x", "support_y", "query_x"))
        with torch.no_grad():
            logits = model.predict(sx, sy, qx, int(h["ways"]))
        if not isinstance(logits, torch.Tensor):
            raise SubmissionError(f"predict returned {type(logits).__name__}, not a tensor of logits")
        return {}, {"logits": logits.detach().float().cpu().numpy()}

    # --- plumbing -------------------------------------------------------------------------------------
    def _cls(self) -> type[MetaLearner]:
        if self.cls is None:
            raise BenchError("the submission was not loaded (describe first)")
        return self.cls

    def _model(self) -> MetaLearner:
        if self.model is None:
            raise BenchError("the submission's model was not built (build first)")
        return self.model


def main() -> int:
    requests = frames.Reader(int(os.environ["METABENCH_REQUEST_FD"]))
    replies = os.fdopen(int(os.environ["METABENCH_REPLY_FD"]), "wb")
    worker = Worker()
    while True:
        try:
            header, arrays = requests.recv()
        except EOFError:
            return 0
        op = header.get("op")
        if op == "exit":
            return 0
        handler = getattr(worker, str(op), None) if not str(op).startswith("_") else None
        try:
            if handler is None:
                raise BenchError(f"unknown request {op!r}")
            reply, out = handler(header, arrays)
            frames.send(replies, {"ok": True, **reply}, out)
        except BaseException as e:  # every failure of the submission goes back to the scorer as text
            if isinstance(e, KeyboardInterrupt):
                raise
            where = "".join(traceback.format_exception_only(type(e), e)).strip()
            frames.send(
                replies, {"ok": False, "error": where, "kind": type(e).__name__, "exit": isinstance(e, SystemExit)}
            )
            if isinstance(e, SystemExit):
                return 3


if __name__ == "__main__":
    sys.exit(main())
