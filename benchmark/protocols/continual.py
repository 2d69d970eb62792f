"""The continual protocols: OML's Omniglot stream, Split-Omniglot over alphabets (task- and class-incremental)
and a sequence of meta-training groups. Streams, task orders and groups are pure functions of (protocol,
version, index): the same for every method, on every machine."""

from __future__ import annotations

import hashlib

import numpy as np

from ..data.builders import OMNIGLOT_ALPHABETS
from .protocol import ContinualSpec, EpisodeSpec, Protocol, SplitSpec, Stage
from .protocol import register_protocol as _register

# Omniglot's 20 drawers per character: 15 learned, 5 held out (Javed & White 2019; Beaulieu et al. 2020)
HELD_OUT = ("continual-omniglot-v1", 0.25)
BACKGROUND = SplitSpec("omniglot", where=(("split", ("background",)),))


def _ordered(names, key: str) -> list[str]:
    """A fixed, versioned shuffle of names: ranked by a hash of (key, name)."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{key}|{n}".encode()).digest())


def stream_order(protocol: Protocol, index: int, classes: tuple[str, ...]) -> np.ndarray:
    """Stream `index` of a stream protocol: the positions in `classes` (sorted names) of the classes it learns,
    in order. A pure function of (protocol name, version, index) and the class names."""
    digest = hashlib.sha256(f"{protocol.name}|v{protocol.version}|stream{index}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return rng.permutation(len(classes))


def _held(split: SplitSpec, part: str) -> SplitSpec:
    return SplitSpec(split.dataset, where=split.where, holdout=(*HELD_OUT, part))


EVALUATION = SplitSpec("omniglot", where=(("split", ("evaluation",)),))
STREAM_CHECKPOINTS = (10, 50, 100, 200, 600)
_register(
    Protocol(
        name="omniglot-oml-stream",
        version=1,
        setting="continual",
        description="OML/ANML's continual Omniglot: pre-train or meta-train on the 964 background characters, then "
        "learn evaluation characters one class at a time (15 images each, one pass, one image per update) and be "
        "scored after 10, 50, 100, 200 and 600 classes on each seen class's 5 held-out images (test accuracy) "
        "and on the images learned (retention); 10 fixed streams, 28x28 grey",
        stages=(
            Stage(train=BACKGROUND, test=()),
            Stage(train=_held(EVALUATION, "in"), test=(_held(EVALUATION, "in"), _held(EVALUATION, "out"))),
        ),
        episode=None,
        image_size=28,
        channels=1,
        test_episodes=10,  # streams
        train_steps=20000,  # pre-training / meta-training steps (OML's and ANML's 20,000 outer steps)
        family="omniglot-oml",
        continual=ContinualSpec("stream", checkpoints=STREAM_CHECKPOINTS, streams=10, batch=1),
    )
)

SPLIT_ALPHABETS = tuple(_ordered(OMNIGLOT_ALPHABETS["evaluation"], "split-omniglot-alphabets-v1"))
for incremental in ("task", "class"):
    _register(
        Protocol(
            name=f"split-omniglot-alphabets-{incremental[0]}il",
            version=1,
            setting="continual",
            description="Split-Omniglot: pre-train on the background alphabets, then the 20 evaluation alphabets "
            "as 20 tasks in a fixed order, each learned in one pass (batches of 10 of its characters' 15 images) "
            "and every task scored after each on its characters' 5 held-out images, "
            + (
                "within the task's own characters (task-incremental: the task is known at test time; learning is the "
                "same as class-incremental, over every character seen so far)"
                if incremental == "task"
                else "among every character seen so far (class-incremental)"
            )
            + "; the accuracy matrix and GEM's ACC, BWT and FWT, 28x28 grey",
            stages=(
                Stage(train=BACKGROUND, test=()),
                *(
                    Stage(
                        train=_held(SplitSpec("omniglot", where=(("alphabet", (a,)),)), "in"),
                        test=(_held(SplitSpec("omniglot", where=(("alphabet", (a,)),)), "out"),),
                    )
                    for a in SPLIT_ALPHABETS
                ),
            ),
            episode=None,
            image_size=28,
            channels=1,
            test_episodes=len(SPLIT_ALPHABETS),  # tasks
            train_steps=20000,
            family="split-omniglot",
            continual=ContinualSpec("tasks", incremental=incremental, batch=10),
        )
    )

# Meta-learning that forgets: the background alphabets in 5 fixed groups of 6, meta-trained on in turn; a fifth of
# each group's characters are held out whole, and every group's fixed 5-way 1-shot episodes on them are scored
# after each stage
GROUP_ALPHABETS = _ordered(OMNIGLOT_ALPHABETS["background"], "omniglot-meta-sequence-v1")
GROUPS = tuple(tuple(sorted(GROUP_ALPHABETS[i : i + 6])) for i in range(0, 30, 6))
CLASS_HOLDOUT = "omniglot-meta-sequence-v1"


def _group(alphabets: tuple[str, ...], part: str) -> SplitSpec:
    return SplitSpec("omniglot", where=(("alphabet", alphabets),), class_holdout=(CLASS_HOLDOUT, 0.2, part))


_register(
    Protocol(
        name="omniglot-meta-sequence-5w1s",
        version=1,
        setting="continual",
        description="Meta-learning that forgets: the 30 background alphabets in 5 fixed groups of 6, meta-trained "
        "on one group after another (4/5 of each group's characters); after each stage, 100 fixed 5-way 1-shot "
        "episodes on the held-out fifth of every group's characters are scored: the accuracy matrix, ACC and BWT, "
        "28x28 grey",
        stages=tuple(Stage(train=_group(g, "in"), test=tuple(_group(h, "out") for h in GROUPS)) for g in GROUPS),
        episode=EpisodeSpec(5, 1, 15),
        image_size=28,
        channels=1,
        test_episodes=100,  # per group
        train_steps=1000,  # per stage
        family="omniglot-meta-sequence",
        continual=ContinualSpec("meta-sequence"),
    )
)
