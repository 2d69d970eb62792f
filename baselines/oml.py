"""OML, Online-aware Meta-Learning (Javed & White, "Meta-Learning Representations for Continual Learning",
NeurIPS 2019).

A representation network (RLN, the backbone) is meta-learned so that online SGD on a prediction network
(PLN) on top of it learns new classes without forgetting old ones. Meta-training (metacontinual.py): the
PLN's output rows of the trajectory's class are re-initialised, the PLN takes one SGD step per inner image
at `inner_lr` with the RLN fixed, and the outer loss on the inner images and a remember batch over all
background classes, at the adapted weights, updates the RLN and the PLN's initial weights with Adam,
second order. At test the RLN is frozen: each image is one SGD step at `online_lr` on the PLN.

The PLN is the paper's two fully connected layers: a hidden layer of `pln_hidden` ReLU units (the paper:
1024) and an output layer; `pln_hidden=0` gives the linear PLN of the authors' 2020 code. The hidden
layer's meta-learned weights are kept at test; the output layer is over the 964 background classes in
meta-training and over the continual classes at test, which start from the reset (as the reference's
evaluation resets only the output layer).

What differs from the paper and its code, and why:
- RLN: Conv-4 (64 filters, batch norm, a 64-d feature at 28x28) instead of six 3x3 convolutions of 256
  channels at 84x84 (a 2304-d feature): the paper's network, run second order through 20 inner steps,
  is too heavy for the 2-core CPU this project is developed on. Batch norm uses batch statistics in
  meta-training and the pre-training statistics at test (the RLN is frozen there).
- Second order: the 2019 public code took no second-order terms (`torch.autograd.grad` without
  `create_graph`, fixed in July 2020); here the meta-gradient is exact (`first_order=true`: the 2019 code's).
- Trajectories: 1 class x 20 inner images and a remember batch of 64 (ANML's; OML's 2019 code: about 20
  inner images, 10 random images and 5 more of the class); the outer images include the inner ones.
- At test the code swept Adam's step size per number of classes on the training images; here plain SGD
  at `online_lr`, by default the inner step size the representation was meta-learned for.
- New output units start at zero (`reset=zero`, no preference among the seen classes); `reset=kaiming` is
  the reference's He-normal re-initialisation.

The paper's stream numbers (re-runs of the official code, test accuracy on held-out images of the learned
classes) are in `STREAM_CURVE`; the 600-class point is the paper result for omniglot-oml-stream.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from benchmark.methods import PaperResult, Recipe, register

from .metacontinual import MetaContinualLearner, as_percent

# classes learned -> test accuracy (fraction), re-runs of the official code
STREAM_CURVE = {10: 0.91, 50: 0.82, 100: 0.76, 200: 0.69, 600: 0.55}
_SOURCE = "Javed & White 2019, a re-run of the official code (test accuracy after 600 classes)"
_NOTE = (
    "six 256-channel convolutions at 84x84 against Conv-4 at 28x28 here; Adam at a swept step size at test; "
    "after 10/50/100/200 classes: 91/82/76/69%"
)


@register
class OML(MetaContinualLearner):
    name = "oml"
    paper = "Javed & White, Meta-Learning Representations for Continual Learning, NeurIPS 2019"
    PLN_BODY = ("hidden",)
    HPARAMS = {
        **MetaContinualLearner.HPARAMS,
        "lr": 1e-4,  # meta-learning rate (the code's meta_lr)
        "inner_lr": 0.03,  # the README's update_lr
        "online_lr": 0.03,
        "pln_hidden": 1024,  # hidden units of the PLN; 0: a linear PLN
    }
    HPARAM_BOUNDS = {**MetaContinualLearner.HPARAM_BOUNDS, "pln_hidden": (0, None)}
    RECIPES = (
        Recipe(
            "omniglot-oml",
            {},
            source="Javed & White 2019, Sec. 4 and the official code (README command)",
            note="Conv-4 at 28x28 for the paper's 6-layer 256-channel RLN at 84x84 (CPU budget); second order; "
            "SGD at the inner step size online (the code swept Adam's step size); a remember batch of 64",
        ),
    )
    PAPER_RESULTS = {
        "omniglot-oml-stream": PaperResult(100 * STREAM_CURVE[600], None, _SOURCE, _NOTE, as_percent(STREAM_CURVE))
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        width = int(self.hp["pln_hidden"])
        self.hidden: nn.Module = nn.Linear(self.features.out_dim, width) if width else nn.Identity()
        if width:
            self.head = nn.Linear(width, task.ways)
            self.pretrain_head = nn.Linear(width, task.n_train_classes)

    def embed(self, x):
        return (self.features(x),)

    def pln_logits(self, fast, h, continual):
        z = h[0] if self.hp["pln_hidden"] == 0 else F.relu(self.run("hidden", fast, h[0]))
        return self.run(self.output_name(continual), fast, z)
