"""Experience replay with a reservoir buffer (Chaudhry et al. 2019, On Tiny Episodic Memories in Continual
Learning; Algorithm 1, reservoir variant).

Pre-trains plainly, then for each incoming batch: draw `replay_batch` distinct examples uniformly from the buffer,
take `online_steps` SGD steps at `online_lr` on the cross-entropy (over the seen classes) of the incoming batch and
the replayed examples together, then offer the incoming examples to the reservoir (`buffer_size` examples).

What differs from the paper: Chaudhry et al. size the memory per class (as little as one example of each class
seen: the "tiny" memories) and select the step size on a few held-out tasks; here a fixed reservoir of 200 (the
MER and La-MAML papers' 200-memory runs, so the three replay methods hold the same memory; 1/3 of an image per
class after the OML stream's 600 classes, every image of its first 13) and the contract's step size 0.03.
Their batches of 10 incoming and 10 replayed examples are kept (replay_batch=10; the OML stream brings 1 image per
update, Split-Omniglot 10). With online_steps > 1 the steps reuse one replay draw.
"""

from __future__ import annotations

from benchmark.methods import register

from .replay import ReplayLearner, with_replay


@register
class ER(ReplayLearner):
    name = "er"
    paper = "Chaudhry et al., On Tiny Episodic Memories in Continual Learning, arXiv:1902.10486, 2019"

    def observe(self, x, y, seen):
        bx, by = with_replay(x, y, self.replay())
        self.sgd_steps(bx, by, seen)
        self.buffer.add(x, y)
