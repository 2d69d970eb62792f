"""The protocols that ship with metabench. A changed protocol gets a new version, never an edit."""
from __future__ import annotations

from .protocol import EpisodeSpec, Protocol, SplitSpec, Stage, register_protocol as _register

ROT4 = (0, 90, 180, 270)
OMNI = "omniglot-vinyals-v1"
for ways in (5, 20):
    for shots in (1, 5):
        _register(Protocol(
            name=f"omniglot-{ways}w{shots}s", version=1, setting="few-shot",
            description=f"Omniglot, Vinyals split with rotations as extra classes (4,112 train / 1,692 test "
                        f"classes), 28x28 grey, {ways}-way {shots}-shot",
            stages=(Stage(train=SplitSpec("omniglot", OMNI, "train", rotations=ROT4),
                          val=SplitSpec("omniglot", OMNI, "val", rotations=ROT4),
                          test=(SplitSpec("omniglot", OMNI, "test", rotations=ROT4),)),),
            episode=EpisodeSpec(ways, shots, 15), image_size=28, channels=1, train_steps=5000, family="omniglot"))
        _register(Protocol(
            name=f"omniglot-lake-{ways}w{shots}s", version=1, setting="few-shot",
            description=f"Omniglot, Lake split: train on the 30 background alphabets, test on the 20 "
                        f"evaluation alphabets (no rotations), 28x28 grey, {ways}-way {shots}-shot",
            stages=(Stage(train=SplitSpec("omniglot", where=(("split", ("background",)),)),
                          test=(SplitSpec("omniglot", where=(("split", ("evaluation",)),)),)),),
            episode=EpisodeSpec(ways, shots, 15), image_size=28, channels=1, train_steps=5000,
            family="omniglot-lake"))

CAL = "caltech101-v1"
for shots in (1, 5):
    _register(Protocol(
        name=f"caltech101-5w{shots}s", version=1, setting="few-shot",
        description=f"Caltech-101, metabench seeded class split v1 (60 train / 15 val / 26 test classes), "
                    f"84x84 RGB, 5-way {shots}-shot",
        stages=(Stage(train=SplitSpec("caltech101", CAL, "train"), val=SplitSpec("caltech101", CAL, "val"),
                      test=(SplitSpec("caltech101", CAL, "test"),)),),
        episode=EpisodeSpec(5, shots, 15), image_size=84, channels=3, train_steps=3000, family="caltech101"))
    for domain in ("photo", "art_painting", "cartoon", "sketch"):
        _register(Protocol(
            name=f"caltech101-to-pacs-{domain.replace('_', '-')}-5w{shots}s", version=1, setting="cross-domain",
            description=f"meta-train on the Caltech-101 train classes (no PACS classes among them), test on "
                        f"PACS {domain} (7 classes), 84x84 RGB, 5-way {shots}-shot",
            stages=(Stage(train=SplitSpec("caltech101", CAL, "train"), val=SplitSpec("caltech101", CAL, "val"),
                          test=(SplitSpec("pacs", where=(("domain", (domain,)),)),)),),
            episode=EpisodeSpec(5, shots, 15), image_size=84, channels=3, train_steps=3000, family="caltech101"))
