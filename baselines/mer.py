"""Meta-Experience Replay, MER (Riemer et al., Learning to Learn without Forgetting by Maximizing Transfer and
Minimizing Interference, ICLR 2019; Algorithm 1).

Pre-trains plainly, then learns each incoming image on its own (a batch is taken one example at a time, in order):
`batches_per_example` (s) times, draw `replay_batch` (k) examples from the reservoir, put the current example
first, and take one SGD step at `online_lr` on each example of that batch in turn; after each batch a within-batch
Reptile step moves the weights back towards where the batch began, theta_b + beta * (theta - theta_b), and after
the s batches an across-batch Reptile step does the same from where the example began, with gamma. Reptile over
single-example steps rewards gradients that agree between examples (transfer) and penalises those that conflict
(interference). The example is then offered to the reservoir (`buffer_size`).

Defaults: the paper's 200-memory MNIST Permutations run (step size 0.03, beta 0.03, gamma 1.0, k = 10, s = 10;
the reference code's mer_examples.sh); the other rows tune them per benchmark. What differs: the reference
draws replay examples with replacement and keeps the n-th example with probability memories/(n+1); here distinct
draws and Vitter's exact size/n, as the other replay methods. The cost is s * (k + 1) single-image SGD steps per
incoming image (110 by default): on a long stream MER is by far the slowest of the replay learners.
"""

from __future__ import annotations

import torch

from benchmark.methods import register

from .replay import ReplayLearner, sgd_step, with_replay


@register
class MER(ReplayLearner):
    name = "mer"
    paper = (
        "Riemer et al., Learning to Learn without Forgetting by Maximizing Transfer and Minimizing Interference, "
        "ICLR 2019"
    )
    HPARAMS = {**ReplayLearner.HPARAMS, "beta": 0.03, "gamma": 1.0, "batches_per_example": 10}
    HPARAM_BOUNDS = {
        **ReplayLearner.HPARAM_BOUNDS,
        "beta": (0, 1),
        "gamma": (0, 1),
        "batches_per_example": (1, None),
    }

    @classmethod
    def defaults(cls):
        # batches_per_example says how many updates an example gets
        return {k: v for k, v in super().defaults().items() if k != "online_steps"}

    def observe(self, x, y, seen):
        params = self.online_parameters()
        lr, beta, gamma = self.hp["online_lr"], self.hp["beta"], self.hp["gamma"]
        for i in range(len(x)):
            xi, yi = x[i : i + 1], y[i : i + 1]
            example_start = [p.detach().clone() for p in params]
            for _ in range(int(self.hp["batches_per_example"])):
                batch_start = [p.detach().clone() for p in params]
                bx, by = with_replay(xi, yi, self.replay())
                for j in range(len(bx)):
                    sgd_step(self, params, bx[j : j + 1], by[j : j + 1], seen, lr)
                reptile(params, batch_start, beta)
            reptile(params, example_start, gamma)
            self.buffer.add(xi, yi)


def reptile(params: list[torch.nn.Parameter], start: list[torch.Tensor], rate: float) -> None:
    """theta <- start + rate * (theta - start), in place."""
    if rate == 1:
        return
    with torch.no_grad():
        for p, p0 in zip(params, start):
            p.copy_(torch.lerp(p0, p, rate))
