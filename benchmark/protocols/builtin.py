"""The protocols that ship with metabench. A changed protocol gets a new version, never an edit."""

from __future__ import annotations

from .protocol import EpisodeSpec, Protocol, SplitSpec, Stage
from .protocol import register_protocol as _register

ROT4 = (0, 90, 180, 270)
OMNI = "omniglot-vinyals-v1"
for ways in (5, 20):
    for shots in (1, 5):
        _register(
            Protocol(
                name=f"omniglot-{ways}w{shots}s",
                version=1,
                setting="few-shot",
                description=f"Omniglot, Vinyals split with rotations as extra classes (4,112 train / 1,692 test "
                f"classes), 28x28 grey, {ways}-way {shots}-shot",
                stages=(
                    Stage(
                        train=SplitSpec("omniglot", OMNI, "train", rotations=ROT4),
                        val=SplitSpec("omniglot", OMNI, "val", rotations=ROT4),
                        test=(SplitSpec("omniglot", OMNI, "test", rotations=ROT4),),
                    ),
                ),
                episode=EpisodeSpec(ways, shots, 15),
                image_size=28,
                channels=1,
                train_steps=5000,
                family="omniglot",
            )
        )
        _register(
            Protocol(
                name=f"omniglot-lake-{ways}w{shots}s",
                version=1,
                setting="few-shot",
                description=f"Omniglot, Lake split: train on the 30 background alphabets, test on the 20 "
                f"evaluation alphabets (no rotations), 28x28 grey, {ways}-way {shots}-shot",
                stages=(
                    Stage(
                        train=SplitSpec("omniglot", where=(("split", ("background",)),)),
                        test=(SplitSpec("omniglot", where=(("split", ("evaluation",)),)),),
                    ),
                ),
                episode=EpisodeSpec(ways, shots, 15),
                image_size=28,
                channels=1,
                train_steps=5000,
                family="omniglot-lake",
            )
        )

CAL = "caltech101-v1"
for shots in (1, 5):
    _register(
        Protocol(
            name=f"caltech101-5w{shots}s",
            version=1,
            setting="few-shot",
            description=f"Caltech-101, metabench seeded class split v1 (60 train / 15 val / 26 test classes), "
            f"84x84 RGB, 5-way {shots}-shot",
            stages=(
                Stage(
                    train=SplitSpec("caltech101", CAL, "train"),
                    val=SplitSpec("caltech101", CAL, "val"),
                    test=(SplitSpec("caltech101", CAL, "test"),),
                ),
            ),
            episode=EpisodeSpec(5, shots, 15),
            image_size=84,
            channels=3,
            train_steps=3000,
            family="caltech101",
        )
    )
    for domain in ("photo", "art_painting", "cartoon", "sketch"):
        _register(
            Protocol(
                name=f"caltech101-to-pacs-{domain.replace('_', '-')}-5w{shots}s",
                version=1,
                setting="cross-domain",
                description=f"meta-train on the Caltech-101 train classes (no PACS classes among them), test on "
                f"PACS {domain} (7 classes), 84x84 RGB, 5-way {shots}-shot",
                stages=(
                    Stage(
                        train=SplitSpec("caltech101", CAL, "train"),
                        val=SplitSpec("caltech101", CAL, "val"),
                        test=(SplitSpec("pacs", where=(("domain", (domain,)),)),),
                    ),
                ),
                episode=EpisodeSpec(5, shots, 15),
                image_size=84,
                channels=3,
                train_steps=3000,
                family="caltech101",
            )
        )


# --- the field's standard benchmarks: datasets prepared with a `split` column from the usual split files ---


def by_split(dataset: str, part: str) -> SplitSpec:
    """The images of `dataset` whose standard split file puts their class in `part` (train/val/test)."""
    return SplitSpec(dataset, where=(("split", (part,)),))


# The default budget of every protocol below: 20,000 training steps (one episode each at the default
# meta-batch of one), a third to a half of the 40,000-60,000 episodes Chen et al. 2019 gave meta-learners;
# a method's recipe may set its paper's budget instead. One value for all, so that the cross-domain
# protocols train exactly as mini-imagenet-5wKs does.
STANDARD_STEPS = 20000
STANDARD = {  # dataset: (its name in descriptions, its split and class counts, image size)
    "mini-imagenet": ("mini-ImageNet", "Ravi & Larochelle split, 64/16/20 train/val/test classes of 600 images", 84),
    "cifar-fs": ("CIFAR-FS", "Bertinetto et al. split of CIFAR-100, 64/16/20 train/val/test classes", 32),
    "fc100": (
        "FC100",
        ("Oreshkin et al. split of CIFAR-100 by superclass, 12/4/4 superclasses = 60/20/20 train/val/test classes"),
        32,
    ),
    "cub": ("CUB-200-2011", "Chen et al. 2019 split, 100/50/50 train/val/test classes", 84),
}
for dataset, (title, split_text, size) in STANDARD.items():
    for shots in (1, 5):
        _register(
            Protocol(
                name=f"{dataset}-5w{shots}s",
                version=1,
                setting="few-shot",
                description=f"{title}, {split_text}, {size}x{size} RGB, 5-way {shots}-shot",
                stages=(
                    Stage(
                        train=by_split(dataset, "train"),
                        val=by_split(dataset, "val"),
                        test=(by_split(dataset, "test"),),
                    ),
                ),
                episode=EpisodeSpec(5, shots, 15),
                image_size=size,
                channels=3,
                train_steps=STANDARD_STEPS,
                family=dataset,
            )
        )

# Cross-domain from mini-ImageNet. Training and validation splits, image size, episode shape, budget and
# family are those of mini-imagenet-5wKs, so all of them have one training key: one training run serves
# the five cross-domain protocols of a shot count, and mini-imagenet-5wKs trains the same way (a run
# holds protocols of one setting only, so the few-shot and the cross-domain ones are two runs today).
MINI_TRAIN, MINI_VAL = by_split("mini-imagenet", "train"), by_split("mini-imagenet", "val")
CHEN = (
    "This is the mini-ImageNet -> CUB set-up of Chen et al. 2019 (A Closer Look at Few-shot Classification) "
    "with one difference: they meta-trained on all 100 mini-ImageNet classes and chose the model on CUB's 50 "
    "validation classes; here training uses the 64 train classes and the model is chosen on mini-ImageNet's "
    "16 validation classes, so no CUB image is seen before testing and training is that of "
    "mini-imagenet-5wKs. "
)
DOGS = "mini-ImageNet's train classes include nine dog breeds, so PACS's dog class is not wholly new. "
CROSS_TESTS = {
    "cub": ("CUB-200-2011's 50 test (novel) classes of the Chen et al. 2019 split", by_split("cub", "test"), CHEN)
}
for domain in ("photo", "art_painting", "cartoon", "sketch"):
    CROSS_TESTS[f"pacs-{domain.replace('_', '-')}"] = (
        f"PACS {domain} (7 classes)",
        SplitSpec("pacs", where=(("domain", (domain,)),)),
        DOGS,
    )
for target, (what, test, note) in CROSS_TESTS.items():
    for shots in (1, 5):
        _register(
            Protocol(
                name=f"mini-imagenet-to-{target}-5w{shots}s",
                version=1,
                setting="cross-domain",
                description=f"meta-train on mini-ImageNet's 64 train classes (Ravi & Larochelle split), validate on "
                f"its 16 val classes, test on {what}. {note}84x84 RGB, 5-way {shots}-shot",
                stages=(Stage(train=MINI_TRAIN, val=MINI_VAL, test=(test,)),),
                episode=EpisodeSpec(5, shots, 15),
                image_size=84,
                channels=3,
                train_steps=STANDARD_STEPS,
                family="mini-imagenet",
            )
        )


# --- domain generalisation: train on some domains, test on one never seen ------------------------------------

PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_HOLDOUT = "pacs-dg-v1"  # the versioned 80/20 split inside every domain (per class)
for target in PACS_DOMAINS:
    sources = tuple(d for d in PACS_DOMAINS if d != target)
    _register(
        Protocol(
            name=f"pacs-dg-{target.replace('_', '-')}",
            version=1,
            setting="domain-generalisation",
            description=f"PACS leave-one-domain-out: 7-way classification, trained on {', '.join(sources)} "
            f"(80% of each; the other 20% is the validation data that selects the model), tested on every "
            f"{target} image. From scratch (no pretrained weights), 84x84 RGB",
            stages=(
                Stage(
                    train=SplitSpec("pacs", where=(("domain", sources),), holdout=(PACS_HOLDOUT, 0.2, "in")),
                    val=SplitSpec("pacs", where=(("domain", sources),), holdout=(PACS_HOLDOUT, 0.2, "out")),
                    test=(SplitSpec("pacs", where=(("domain", (target,)),)),),
                ),
            ),
            episode=None,
            image_size=84,
            channels=3,
            train_steps=5000,  # DomainBed's 5,000 steps, a batch of 32 images per source domain
            family="pacs-dg",
        )
    )

# Few-shot under domain shift: the domains are rotations of Omniglot. Meta-training and model selection see the
# Vinyals train and val characters at five rotations; the test characters are scored at a sixth rotation never
# seen in training (the target, ranked: Protocol.test is the last test split) and on the same fixed episodes
# unrotated (the in-domain reference, reported beside it). Non-multiples of 90 are interpolated (bilinear,
# benchmark.store.views.rotate), so every domain but 0 degrees also carries some blur.
DG_ROTATIONS = (0, 15, 30, 45, 60)
DG_TARGET = 75
for ways in (5, 20):
    _register(
        Protocol(
            name=f"rotated-omniglot-dg-{ways}w1s",
            version=1,
            setting="domain-generalisation",
            description=f"Omniglot under domain shift: meta-train on the Vinyals train characters at rotations "
            f"{', '.join(map(str, DG_ROTATIONS))} degrees (select on the val characters at the same rotations), "
            f"test on the test characters at {DG_TARGET} degrees (unseen), with the same episodes at 0 degrees as "
            f"the in-domain reference; 28x28 grey, {ways}-way 1-shot",
            stages=(
                Stage(
                    train=SplitSpec("omniglot", OMNI, "train", rotations=DG_ROTATIONS),
                    val=SplitSpec("omniglot", OMNI, "val", rotations=DG_ROTATIONS),
                    test=(
                        SplitSpec("omniglot", OMNI, "test"),  # the reference: the test characters, unrotated
                        SplitSpec("omniglot", OMNI, "test", rotations=(DG_TARGET,)),  # the target
                    ),
                ),
            ),
            episode=EpisodeSpec(ways, 1, 15),
            image_size=28,
            channels=1,
            train_steps=5000,
            family="rotated-omniglot-dg",
        )
    )
