"""The continual setting: learning that must not forget, and meta-learning that does. Three kinds of protocol,
one part each (benchmark.settings.parts):

- a stream (OML's Omniglot stream, continual_stream.py): new classes one at a time, scored after given counts;
- a task sequence (Split-Omniglot, continual_matrix.ContinualTasks): the accuracy matrix, ACC, BWT and FWT;
- a meta-training sequence (continual_matrix.MetaSequence): any few-shot method meta-trained on groups of
  classes in turn, with the same matrix over every group's fixed test episodes.

The continual learners (benchmark.methods.continual) pre-train on the protocol's first stage, and the checkpoint
is the pre-trained model: every stream or task sequence is learned from it again, so `bench verify` replays
streams from the checkpoint. The meta-training sequence's checkpoint is its final model.
"""

from __future__ import annotations

from ..protocols import Protocol
from .base import Scored, Setting, register_setting
from .continual_matrix import ContinualTasks, MetaSequence
from .continual_stream import ContinualStream
from .parts import SettingParts


class Continual(SettingParts):
    name = "continual"
    title = "Continual"
    order = 40
    description = (
        "Learn new classes or tasks one after another without forgetting the old ones (a stream of Omniglot "
        "classes, Split-Omniglot alphabets), and meta-learn on a sequence of class groups."
    )
    unit = ContinualStream.unit
    rank_test = ContinualStream.rank_test
    page = ContinualStream.page

    def __init__(self) -> None:
        self.stream = ContinualStream()
        self.tasks = ContinualTasks()
        self.sequence = MetaSequence()

    def parts(self) -> tuple[Setting, ...]:
        return (self.stream, self.tasks, self.sequence)

    def by_protocol(self, protocol: Protocol) -> Setting:
        kind = protocol.continual.kind if protocol.continual is not None else "stream"
        by_kind: dict[str, Setting] = {"stream": self.stream, "tasks": self.tasks, "meta-sequence": self.sequence}
        return by_kind[kind]

    def by_record(self, record: dict) -> Setting:
        p = record.get("protocol", {})
        return self.stream if "stream_fingerprint" in p else self.sequence if "episodes_per_task" in p else self.tasks

    def by_run(self, run: dict) -> Setting:
        return (
            self.stream if "stream_accuracies" in run else self.sequence if "episode_accuracies" in run else self.tasks
        )

    def by_scored(self, scored: Scored) -> Setting:
        return (
            self.stream
            if "retention" in scored.extra
            else self.sequence
            if "episodes_per_task" in scored.extra
            else self.tasks
        )


register_setting(Continual())
