"""MAML and ProtoNet from a self-supervised initialisation: `maml-ssl` and `protonet-ssl`.

The backbone starts from an SSL checkpoint (`bench pretrain`: rotation prediction, Gidaris et al. 2018, on the
protocol's training images without labels) instead of a random draw; everything after is the method's own
recipe and code (MAML's head is still drawn at random). The checkpoint is the hyper-parameter `init` (a path);
`init_sha256` is filled in from the file, or, if given, must match it, so a record names its init by path and
sha256 and `bench verify` re-checks the chain.

The anchor is Su, Maji & Hariharan, When Does Self-supervision Improve Few-shot Learning?, ECCV 2020: jigsaw or
rotation as an *auxiliary loss* beside ProtoNet's (ResNet-18, 224 px) adds about 1 to 3 points on small,
fine-grained sets (5-way 5-shot: Birds 87.3 -> 89.8, Dogs 83.0 -> 85.7, Flowers 89.2 -> 92.2 with jigsaw;
mini-ImageNet 75.2 -> 76.0 with rotation) and MAML gains too (83.8 against 82.6, averaged over the five sets).
What differs here: self-supervision is a separate stage before meta-training, not a loss trained beside it,
because the issue asks whether a self-supervised *initialisation* helps MAML and ProtoNet; Su et al. report
that this variant (SSL pre-training, then meta-learning from it) did not beat a random initialisation in
their set-up, so the +1 to +3 points are the auxiliary loss's, a reference rather than a target. Conv-4 at 28
or 84 px, not ResNet-18 at 224.

Named variants, not only `--hparam init=` on `maml` and `protonet`: the page keeps one entry per method name and
backbone, so an SSL-initialised `maml` record would supersede the random-initialised one instead of standing
beside it, and a name that promises an SSL init can refuse a run without one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from benchmark.methods import PaperResult, register
from benchmark.methods.ssl import (
    InitCheckpoint,
    InitError,
    input_problem,
    load_backbone,
    read_init,
    split_problem,
)

from .maml import MAML
from .protonet import ProtoNet

INIT_HPARAMS = {"init": "", "init_sha256": ""}
_SU = "Su et al. 2020 (ECCV), Table 3: ProtoNet + rotation, ResNet-18 at 224 px"


def _roots() -> tuple:
    from benchmark.core import paths

    results = paths.results_dir()
    return (results, results.parent)


class FromSSLInit:
    """Mixin for a MetaLearner whose backbone (`init_target`) starts from the SSL checkpoint in `init`."""

    name: ClassVar[str]
    hp: dict[str, Any]

    def init_target(self) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def read_checked(cls, hp: dict[str, Any], roots: tuple = ()) -> InitCheckpoint:
        """The checkpoint `init` names, whose sha256 is `init_sha256` when that is given, for this backbone."""
        ck = read_init(hp["init"], roots or _roots())
        if hp["init_sha256"] and hp["init_sha256"] != ck.sha256:
            raise InitError(
                f"{cls.name}: init={hp['init']}: {ck.path} has sha256 {ck.sha256[:12]}..., not init_sha256="
                f"{hp['init_sha256'][:12]}...: the file changed; pass the checkpoint that was meant, or drop "
                f"init_sha256 to take this one"
            )
        if problem := input_problem(ck.meta, hp["backbone"], None, None):
            raise InitError(f"{cls.name}: init={hp['init']}: {problem}")
        return ck

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)  # type: ignore[misc]
        if hp["init"]:
            hp["init_sha256"] = cls.read_checked(hp).sha256
        elif hp["init_sha256"]:
            raise InitError(f"{cls.name}: init_sha256 is given without init (the checkpoint's path)")
        return hp

    @classmethod
    def training_episodes(cls, hp, protocol):
        if not hp["init"]:
            raise InitError(
                f"{cls.name} starts from a self-supervised checkpoint: run `bench pretrain --ssl rotation "
                f"--protocol {protocol.name}` and pass the path it prints as --hparam init=PATH"
            )
        ck = cls.read_checked(hp)
        problem = input_problem(ck.meta, hp["backbone"], protocol.channels, protocol.image_size)
        if problem := problem or split_problem(ck.meta, protocol.train.label):
            raise InitError(f"{cls.name}: init={hp['init']} cannot start {protocol.name}: {problem}")
        return super().training_episodes(hp, protocol)  # type: ignore[misc]

    def load_init(self) -> None:
        """Copy the checkpoint into the backbone (construction, before any training). A model built without
        `init` keeps its random backbone: a run refuses that earlier (`training_episodes`); timing needs none."""
        if not self.hp["init"]:
            return
        ck = self.read_checked(self.hp)
        task = self.task  # type: ignore[attr-defined]
        if problem := input_problem(ck.meta, self.hp["backbone"], task.channels, task.image_size):
            raise InitError(f"{self.name}: init={self.hp['init']}: {problem}")
        load_backbone(self.init_target(), ck)


@register
class MAMLFromSSL(FromSSLInit, MAML):
    """MAML whose network's feature extractor starts from an SSL checkpoint (its head from a random draw)."""

    name = "maml-ssl"
    paper = "Finn et al. 2017 (MAML) from a rotation-prediction init (Gidaris et al. 2018; Su et al. 2020)"
    HPARAMS = {**MAML.HPARAMS, **INIT_HPARAMS}
    # Su et al. give MAML + SSL only as an average over five fine-grained sets (Table 2): no protocol here
    PAPER_RESULTS = {}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.load_init()

    def init_target(self) -> nn.Module:
        return self.net.features


@register
class ProtoNetFromSSL(FromSSLInit, ProtoNet):
    """ProtoNet whose embedding starts from an SSL checkpoint, batch-norm running statistics included."""

    name = "protonet-ssl"
    paper = "Snell et al. 2017 (ProtoNet) from a rotation-prediction init (Gidaris et al. 2018; Su et al. 2020)"
    HPARAMS = {**ProtoNet.HPARAMS, **INIT_HPARAMS}
    PAPER_RESULTS = {
        "mini-imagenet-5w5s": PaperResult(
            76.0,
            None,
            _SU,
            "rotation as an auxiliary loss during meta-training, not an initialisation; ProtoNet alone 75.2 there",
        ),
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.load_init()

    def init_target(self) -> nn.Module:
        return self.encoder
