"""Sequential fine-tuning: the lower bound of continual learning.

Pre-trains plainly (cross-entropy over the background classes, Adam), then learns the stream with plain SGD on each
incoming batch alone (`online_steps` steps at `online_lr`, the whole network and the continual head), with nothing
to hold on to earlier classes: what every continual method must beat. It is the "Pretraining" / "Pretrain &
Transfer" baseline of Javed & White (2019) and Beaulieu et al. (2020), without their search over step sizes: here
the contract's 0.03 serves every protocol and every method alike.
"""

from __future__ import annotations

from benchmark.methods import register
from benchmark.methods.continual import ContinualLearner


@register
class SeqFinetune(ContinualLearner):
    name = "seq-finetune"
    paper = "Sequential fine-tuning of a pre-trained network (the lower bound; as in Javed & White, NeurIPS 2019)"

    def observe(self, x, y, seen):
        self.sgd_steps(x, y, seen)
