"""Knowledge distillation (Hinton, Vinyals & Dean, arXiv:1503.02531, 2015) into a SimpleShot student, with the
temperature meta-learned: the teacher learns how to teach, its weights staying fixed.

One run, two phases within its step budget. The first `teacher_steps` steps (0: half the budget) train the
teacher, a `teacher_backbone` (ResNet-12) with its own linear head, by cross-entropy over every meta-training
class. The remaining steps train the student, the method's `backbone` (Conv-4) with SimpleShot's head and
recipe, on (1 - kd_weight) * cross-entropy + kd_weight * T^2 * KL(teacher_T || student_T) on the same kind of
batches, the teacher frozen (no optimiser step, eval-mode batch norm). The weighted average (Hinton et al.'s;
CTKD's KD runs weigh 0.1 : 0.9, the default here) rather than cross-entropy + T^2 KL: the sum roughly doubles
the loss's scale at SimpleShot's learning rate, and on Caltech-101 (Conv-4, batch 64, T = 4) every feature of
the student died within 40 steps, where cross-entropy alone and the weighted average kept about 10% alive.
Test episodes are SimpleShot's: nearest centroid of CL2N student features. Plain `simpleshot` given the
student's steps is the no-distillation reference (kd_weight=0 is the same on the same batches).

Temperature: a fixed number, or "learned": T = exp(log_t), and every student step (or every
`temperature_every`-th: the update costs about four student steps on a CPU) first updates log_t by a
meta-gradient. The batch is split in halves; a look-ahead SGD step of the student on the first half's
distillation loss at T (at the student's current learning rate, through `torch.func.functional_call` with
the graph kept), then the look-ahead student's cross-entropy on the second half; its gradient in log_t
(tested against a central finite difference) moves log_t by Adam at `temperature_lr` (Adam because the
meta-gradient's scale follows the student's learning rate, which drops by 100x), and log T is kept in
[log 0.1, log 100]. Then the real student step on the whole batch at the new T.

Related work and what differs. CTKD (Li et al., AAAI 2023) learns T adversarially, with a reversed gradient
that maximises the distillation loss under an easy-to-hard curriculum; MKD (Liu et al. 2022) meta-learns it
on a held-out validation set. Here T follows the held-out loss after a look-ahead step (MKD's idea, Ren et
al. 2018's look-ahead), with no curriculum and no separate validation set: the held-out half is the other
half of the same training batch. CTKD's CIFAR-100 gain over fixed-T KD is the anchor (PAPER_RESULTS; not a
protocol here). The teacher is trained inside the run, not loaded; so two `teacher_steps` give two teachers
of different accuracy on the same batches.

Teacher accuracy. A fixed `teacher_holdout` share of the training images (by an exact integer hash of
their pixels, so an image is in or out on every step) never trains the teacher; its accuracy on them is
counted over the student phase, where its logits are computed anyway. The record's run gets it, the final
temperature and its curve through `record_extra()` (under `method_extra`). The checkpoint holds the student
and the temperature, not the teacher: only the student answers test episodes, and a ResNet-12 is 50 MB.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from benchmark.methods import BACKBONES, HParamError, PaperResult, Recipe, make_backbone, register

from .simpleshot import SimpleShot

T_MIN, T_MAX = 0.1, 100.0  # a learned temperature is kept inside: a guard against runaway steps, not a prior
_TEACHER = ("teacher.", "teacher_head.")
_HASH_MOD = 1000
_RFS = "Tian et al. 2020 (RFS), train_supervised.py: SGD 0.05, momentum 0.9, weight decay 5e-4, x0.1 at 60% and 80%"
_CTKD = "Li et al., Curriculum Temperature for Knowledge Distillation, AAAI 2023, CIFAR-100 table"

Params = dict[str, torch.Tensor]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    y: torch.Tensor,
    temperature: torch.Tensor | float,
    kd_weight: float,
) -> torch.Tensor:
    """(1 - kd_weight) * cross-entropy + kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch
    means: Hinton et al.'s weighted average, whose scale stays that of the cross-entropy alone."""
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, -1),
        F.log_softmax(teacher_logits / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - kd_weight) * F.cross_entropy(student_logits, y) + kd_weight * temperature**2 * kl


def held_out_loss(
    forward: Callable[[Params, torch.Tensor], torch.Tensor],
    params: Params,
    log_t: torch.Tensor,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    held_out: tuple[torch.Tensor, torch.Tensor],
    lr: float,
    kd_weight: float,
) -> torch.Tensor:
    """Cross-entropy on `held_out` (x, y) after one SGD step of `lr` on the distillation loss of `train`
    (x, y, teacher logits) at T = exp(log_t), differentiable in log_t (and in `params`, which need grad)."""
    x, y, teacher = train
    loss = kd_loss(forward(params, x), teacher, y, log_t.exp(), kd_weight)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    ahead = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return F.cross_entropy(forward(ahead, held_out[0]), held_out[1])


def held_out_images(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """[B] bool: whether each image is in the teacher's held-out share, a pure function of its pixels. The key
    is integer arithmetic on the float bits (top 16 of each), exact in any order, so batching cannot move an
    image across the line; distinct pixel values give keys spread evenly over the residues."""
    bits = x.detach().float().flatten(1).contiguous().view(torch.int32).to(torch.int64) >> 16
    g = torch.Generator().manual_seed(0)
    weights = torch.randint(1, 1 << 16, (bits.shape[1],), generator=g).to(x.device)
    keys = (bits * weights).sum(1)  # |key| < 2^31 * pixels: no overflow below 2^32 pixels
    return torch.remainder(keys, _HASH_MOD) < round(fraction * _HASH_MOD)


@register
class MetaKD(SimpleShot):
    name = "meta-kd"
    paper = "Hinton et al., Distilling the Knowledge in a Neural Network, 2015; the temperature meta-learned"
    HPARAMS = {
        **SimpleShot.HPARAMS,  # the student's: SimpleShot's recipe
        "teacher_backbone": "resnet12",
        "teacher_steps": 0,  # 0: half the run's step budget
        "teacher_lr": 0.05,
        "teacher_weight_decay": 5e-4,
        "teacher_holdout": 0.05,  # share of training images the teacher never trains on (its accuracy's)
        "temperature": "learned",  # or a fixed number
        "temperature_init": 4.0,
        "temperature_lr": 0.01,
        "temperature_every": 1,  # student steps per temperature update (each costs about 4 student steps on a CPU)
        "kd_weight": 0.9,  # 0: SimpleShot's loss, the teacher unused
    }
    HPARAM_BOUNDS = {
        **SimpleShot.HPARAM_BOUNDS,
        "teacher_steps": (0, None),
        "teacher_weight_decay": (0, None),
        "teacher_holdout": (0, 0.5),
        "temperature_init": (T_MIN, T_MAX),
        "temperature_every": (1, None),
        "kd_weight": (0, 1),
    }
    RECIPES = (
        Recipe(
            "omniglot",
            {},
            source=f"student: SimpleShot's recipe (Wang et al. 2019); teacher: {_RFS}",
            note="The student's lr drops at 50% and 75% of its own steps, the teacher's at 60% and 80% of its "
            "steps; both on SimpleShot's batches of 256 (RFS used 64), no augmentation. T starts at 4, CTKD's fixed "
            "T (its scripts/run_cifar_distill.sh: --kd_T 4, its learned T kept in [1, 20]); Adam at 0.01 in log T. "
            "Cross-entropy and distillation weigh 0.1 : 0.9, as CTKD's KD runs (-r 0.1 -a 0.9).",
        ),
        Recipe(
            "caltech101",
            {},
            source=f"student: SimpleShot's recipe (Wang et al. 2019); teacher: {_RFS}",
            note="As for Omniglot; the papers' random crops and flips are not applied (the harness's batches are "
            "unaugmented, as SimpleShot's here).",
        ),
    )
    PAPER_RESULTS = {
        # not a protocol here: CTKD's anchor for what a learned temperature adds over a fixed one
        "cifar-100 (resnet56 -> resnet20)": PaperResult(
            71.19,
            None,
            f"{_CTKD} (also the official repository's README, zhengli97/CTKD)",
            "KD with CTKD's learned temperature; fixed-T KD 70.66 on the same pair (+0.53). Over its six CIFAR-100 "
            "pairs CTKD adds +0.33 to +0.54 points (mean +0.46)",
        ),
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)  # the student first: its initial weights are simpleshot's at the same seed
        self.automatic_optimization = False  # three optimisers, one of which steps per batch (see training_step)
        self.teacher = make_backbone(self.hp["teacher_backbone"], task.channels, task.image_size)
        self.teacher_head = nn.Linear(self.teacher.out_dim, task.n_train_classes)
        self.learned = self.hp["temperature"] == "learned"
        if self.learned:
            self.log_t = nn.Parameter(torch.tensor(math.log(self.hp["temperature_init"])))
        self.phase_split = self.hp["teacher_steps"]  # set from the budget when training starts
        self._counts = {"held_out": 0, "held_out_right": 0, "train": 0, "train_right": 0}
        self._curve: list[list[float]] = []
        self._teacher_seconds = 0.0
        self._t0 = 0.0

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["teacher_backbone"] not in BACKBONES:
            raise HParamError(f"meta-kd: teacher_backbone: {BACKBONES.unknown_message(str(hp['teacher_backbone']))}")
        t = hp["temperature"]
        if t != "learned":
            try:
                t = float(t)
            except (TypeError, ValueError):
                t = math.nan
            if not T_MIN <= t <= T_MAX:  # NaN fails too
                raise HParamError(
                    f"meta-kd: temperature={hp['temperature']!r} must be 'learned' or a number in "
                    f"[{T_MIN}, {T_MAX}], e.g. temperature=4"
                )
            hp["temperature"] = t
        elif hp["kd_weight"] == 0:
            raise HParamError("meta-kd: temperature='learned' needs kd_weight > 0 (at 0 the loss does not depend on T)")
        return hp

    # --- the networks ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits over the training classes."""
        return self.classifier(self.encoder(x))

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher(x))

    def student_named_parameters(self) -> Params:
        return {n: p for n, p in self.named_parameters() if n.startswith(("encoder.", "classifier."))}

    @property
    def selectable_after(self) -> int:
        """Model selection skips the teacher's steps (the harness reads this): the student is untrained then."""
        return self.phase_split

    def temperature(self) -> torch.Tensor | float:
        return self.log_t.exp() if self.learned else self.hp["temperature"]

    # --- the learned temperature ----------------------------------------------------------------------
    def look_ahead_loss(self, x, y, teacher_logits, log_t: torch.Tensor, lr: float) -> torch.Tensor:
        """The held-out objective for log T on this batch: first half to step on, second half to score."""
        half = x.shape[0] // 2
        params = {n: p.detach().requires_grad_() for n, p in self.student_named_parameters().items()}
        # batch-norm statistics move in place during a forward: the look-ahead's must not reach the student's
        buffers = {n: b.clone() for n, b in self.named_buffers() if n.startswith("encoder.")}

        def forward(p: Params, inp: torch.Tensor) -> torch.Tensor:
            return functional_call(self, {**p, **buffers}, (inp,))

        train = (x[:half], y[:half], teacher_logits[:half])
        return held_out_loss(forward, params, log_t, train, (x[half:], y[half:]), lr, self.hp["kd_weight"])

    def temperature_gradient(self, x, y, teacher_logits, lr: float) -> torch.Tensor:
        """d(held-out loss after the look-ahead step) / d(log T)."""
        (g,) = torch.autograd.grad(self.look_ahead_loss(x, y, teacher_logits, self.log_t, lr), [self.log_t])
        return g

    # --- training -------------------------------------------------------------------------------------
    def configure_optimizers(self):
        trainer = getattr(self, "_trainer", None)
        total = max(1, int(trainer.max_steps)) if trainer is not None else 2
        split = self.hp["teacher_steps"] or total // 2
        if split >= total:
            raise HParamError(
                f"meta-kd: teacher_steps={split} leaves no student steps in a budget of {total}; give the run more "
                f"steps (--train-steps) or the teacher fewer (--hparam teacher_steps=N, N < {total})"
            )
        self.phase_split, student = split, total - split
        teacher_params = [*self.teacher.parameters(), *self.teacher_head.parameters()]
        opts: list[torch.optim.Optimizer] = [
            torch.optim.SGD(
                teacher_params,
                lr=self.hp["teacher_lr"],
                momentum=self.hp["momentum"],
                weight_decay=self.hp["teacher_weight_decay"],
            ),
            torch.optim.SGD(
                self.student_named_parameters().values(),
                lr=self.hp["lr"],
                momentum=self.hp["momentum"],
                weight_decay=self.hp["weight_decay"],
            ),
        ]
        if self.learned:
            opts.append(torch.optim.Adam([self.log_t], lr=self.hp["temperature_lr"]))
        drops = [([int(0.6 * split), int(0.8 * split)]), [student // 2, (3 * student) // 4]]
        scheds = [torch.optim.lr_scheduler.MultiStepLR(o, d, gamma=0.1) for o, d in zip(opts, drops)]
        return opts, scheds

    def on_train_start(self):
        self._t0 = time.perf_counter()

    def training_step(self, batch, batch_idx):
        # Lightning counts every step of a wrapped optimiser as a global step, and the budget is in global
        # steps: so each batch steps exactly one wrapped optimiser (the teacher's or the student's), and the
        # temperature's optimiser is stepped unwrapped
        x, y = batch
        if self.global_step < self.phase_split:
            return self.teacher_step(x, y)
        return self.student_step(x, y)

    def teacher_step(self, x, y):
        opt, sched = self.optimizers()[0], self.lr_schedulers()[0]  # type: ignore[index]
        keep = ~held_out_images(x, self.hp["teacher_holdout"])
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=x.device)
        if int(keep.sum()) > 1:  # batch norm needs two images; a batch held out almost entirely skips its update
            logits = self.teacher_logits(x[keep])
            loss = F.cross_entropy(logits, y[keep])
            self.manual_backward(loss)
            if self.global_step >= (3 * self.phase_split) // 4:  # its fit to its own data, late in its training
                self._counts["train"] += int(keep.sum())
                self._counts["train_right"] += int((logits.argmax(-1) == y[keep]).sum())
        opt.step()
        sched.step()
        self.log_dict({"teacher_loss": loss.detach()}, prog_bar=True, on_step=True)
        if self.global_step == self.phase_split:
            self._teacher_seconds = time.perf_counter() - self._t0
        return loss.detach()

    def student_step(self, x, y):
        opts, scheds = self.optimizers(), self.lr_schedulers()
        opt, sched = opts[1], scheds[1]  # type: ignore[index]
        self.teacher.eval()  # fixed: eval-mode batch norm, no statistics updated
        self.teacher_head.eval()
        with torch.no_grad():
            teacher = self.teacher_logits(x)
            held = held_out_images(x, self.hp["teacher_holdout"])
            self._counts["held_out"] += int(held.sum())
            self._counts["held_out_right"] += int((teacher.argmax(-1) == y)[held].sum())
        if self.learned and (self.global_step - self.phase_split) % self.hp["temperature_every"] == 0:
            t_opt = self.optimizers(use_pl_optimizer=False)[2]  # type: ignore[index]
            g = self.temperature_gradient(x, y, teacher, opt.param_groups[0]["lr"])
            t_opt.zero_grad(set_to_none=True)
            self.log_t.grad = self.trainer.strategy.reduce(g, reduce_op="mean")  # one T on every DDP process
            t_opt.step()
            with torch.no_grad():
                self.log_t.clamp_(math.log(T_MIN), math.log(T_MAX))
        temperature = self.temperature()
        temperature = temperature.detach() if isinstance(temperature, torch.Tensor) else temperature
        z = self.encoder(x)
        logits = self.classifier(z)
        loss = kd_loss(logits, teacher, y, temperature, self.hp["kd_weight"])
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        sched.step()
        step = self.global_step - self.phase_split  # student steps done, this one included
        with torch.no_grad():
            self.train_mean.lerp_(z.mean(0), self.hp["mean_momentum"] if step > 1 else 1.0)
        student_steps = max(1, self.trainer.max_steps - self.phase_split)
        if self.learned and (step % max(1, student_steps // 20) == 0 or step == 1):
            self._curve.append([int(self.global_step), round(float(temperature), 4)])
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"loss": loss.detach(), "acc": acc, "T": float(temperature)}, prog_bar=True, on_step=True)
        return loss.detach()

    def on_train_end(self):
        if self.global_step <= self.phase_split:
            raise HParamError(
                f"meta-kd: training stopped after {self.global_step} steps, inside the teacher's {self.phase_split}: "
                f"no student was trained. Give the run more time (--max-train-time) or the teacher fewer steps "
                f"(--hparam teacher_steps=N)"
            )

    # --- the record and the checkpoint ----------------------------------------------------------------
    def record_extra(self) -> dict[str, Any]:
        """The teacher's accuracy and the temperature, for the record's run (read after model selection)."""
        c = self._counts
        t = self.temperature()
        out: dict[str, Any] = {
            "teacher_steps": int(self.phase_split),
            "teacher_time_s": round(self._teacher_seconds, 3),
            "teacher_accuracy": c["held_out_right"] / c["held_out"] if c["held_out"] else None,
            "teacher_accuracy_images": c["held_out"],  # held-out images scored (with repeats) over the student phase
            "teacher_train_accuracy": c["train_right"] / c["train"] if c["train"] else None,
            "temperature": float(t.detach()) if isinstance(t, torch.Tensor) else float(t),
            "temperature_learned": self.learned,
        }
        if self.learned:
            out["temperature_curve"] = [list(p) for p in self._curve]  # [global step, T]
        return out

    def state_dict(self, *args, **kwargs):
        """Without the teacher: it only trains the student, which alone answers test episodes."""
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith(_TEACHER)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # the teacher keeps its current weights: a checkpoint, or a model-selection snapshot, has none
        teacher = {k: v for k, v in super().state_dict().items() if k.startswith(_TEACHER)}
        return super().load_state_dict({**teacher, **state_dict}, strict=strict, assign=assign)
