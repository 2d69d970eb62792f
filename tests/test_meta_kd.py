"""meta-kd: the temperature's meta-gradient against central finite differences (float64, tiny linear networks),
the two training phases (the student waits for the teacher, the teacher stays fixed while the student learns, a
fixed temperature is not trained), and a real Omniglot run through the runner whose record carries the teacher's
accuracy and the temperature, verified from a checkpoint that holds no teacher."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from episodekit import SmallConv, TinyBackbone
from torch import nn

import baselines  # noqa: F401  (registers the built-in methods)
from baselines.meta_kd import MetaKD, held_out_images, held_out_loss, kd_loss
from benchmark import settings as harness
from benchmark.algorithms import HParamError, TaskInfo
from benchmark.backbones import BACKBONES
from benchmark.run.training import fit
from benchmark.settings.base import load_record
from benchmark.submissions.verify import verify


class Linear(nn.Module):
    """A linear feature map: the meta-objective through it is smooth, so finite differences are exact to O(h^2)."""

    def __init__(self, in_channels: int, image_size: int, running_stats: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 6))
        self.out_dim = 6

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module", autouse=True)
def backbones():
    added = {
        n: c for n, c in {"linear": Linear, "tiny": TinyBackbone, "small": SmallConv}.items() if n not in BACKBONES
    }
    for n, c in added.items():
        BACKBONES.register(n, c)
    yield
    for n in added:
        BACKBONES.unregister(n)


TASK = TaskInfo(ways=5, shots=1, queries=1, image_size=8, channels=1, n_train_classes=4)


def central_difference(f, x: float, h: float = 1e-5) -> float:
    return (f(x + h) - f(x - h)) / (2 * h)


# ---- the meta-gradient -------------------------------------------------------------------------------


def test_meta_gradient_of_a_linear_student_matches_a_central_difference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 5, generator=g, dtype=torch.float64)
    y = torch.randint(3, (10,), generator=g)
    teacher = 3 * torch.randn(10, 3, generator=g, dtype=torch.float64)  # a tiny linear teacher's logits
    params = {
        "w": torch.randn(3, 5, generator=g, dtype=torch.float64).requires_grad_(),
        "b": torch.zeros(3, dtype=torch.float64).requires_grad_(),
    }

    def forward(p, inp):
        return inp @ p["w"].T + p["b"]

    def objective(log_t):
        return held_out_loss(forward, params, log_t, (x[:5], y[:5], teacher[:5]), (x[5:], y[5:]), 0.5, 0.9)

    log_t = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(objective(log_t), [log_t])
    fd = central_difference(lambda v: objective(torch.tensor(v, dtype=torch.float64)).item(), math.log(3.0))
    assert abs(fd) > 1e-4  # the look-ahead step makes the held-out loss depend on T
    assert grad.item() == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_the_models_temperature_gradient_matches_a_central_difference_and_leaves_the_student_alone():
    torch.manual_seed(0)
    model = MetaKD(TASK, backbone="linear", teacher_backbone="linear").double()
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(4, (12,))
    with torch.no_grad():
        model.teacher_head.weight.mul_(20)  # a confident teacher, so T matters
        teacher = model.teacher_logits(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grad = model.temperature_gradient(x, y, teacher, lr=0.5)

    def objective(v: float) -> float:
        return model.look_ahead_loss(x, y, teacher, torch.tensor(v, dtype=torch.float64), 0.5).item()

    fd = central_difference(objective, math.log(4.0))
    assert model.log_t.item() == pytest.approx(math.log(4.0))
    assert abs(fd) > 1e-5
    assert grad.item() == pytest.approx(fd, rel=1e-6, abs=1e-10)
    # the look-ahead ran on detached copies: no gradient reached the real weights and none moved
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kd_loss_is_the_weighted_average_of_cross_entropy_and_the_scaled_kl():
    g = torch.Generator().manual_seed(1)
    s, t, y = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.tensor([0, 1, 2, 0])
    p, log_q = F.softmax(t / 2, -1), F.log_softmax(s / 2, -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    assert kd_loss(s, t, y, 2.0, 0.3).item() == pytest.approx(0.7 * F.cross_entropy(s, y).item() + 0.3 * 4 * kl.item())
    assert kd_loss(s, t, y, 2.0, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item())  # SimpleShot's loss


# ---- the two phases -----------------------------------------------------------------------------------


def snapshots(model: MetaKD, steps: int, seed: int = 0) -> list[dict[str, dict[str, torch.Tensor]]]:
    """Train `steps` steps on random images through the harness's `fit`; the weights before and after each step,
    grouped into teacher, student and temperature."""

    def groups():
        # nn.Module's own state_dict: the model's leaves the teacher out (it is not saved in checkpoints)
        state = {k: v.detach().clone() for k, v in nn.Module.state_dict(model).items()}
        teacher = {k: v for k, v in state.items() if k.startswith(("teacher.", "teacher_head."))}
        temperature = {k: v for k, v in state.items() if k == "log_t"}
        student = {k: v for k, v in state.items() if k not in teacher and k not in temperature}
        return {"teacher": teacher, "student": student, "temperature": temperature}

    out = [groups()]

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            out.append(groups())

    def draw(g: torch.Generator):
        return torch.randn(16, 1, 8, 8, generator=g), torch.randint(4, (16,), generator=g)

    cpu = torch.device("cpu")
    seconds, done = fit(model, draw, steps, seed, cpu, cpu, progress=False, callbacks=[Record()])
    assert done == steps  # one global step per batch, whichever optimisers stepped
    return out


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("temperature", ["learned", "4"])
def test_the_student_waits_for_the_teacher_which_then_stays_fixed(temperature):
    torch.manual_seed(0)
    model = MetaKD(TASK, backbone="tiny", teacher_backbone="tiny", teacher_steps=3, temperature=temperature)
    snaps = snapshots(model, 6)
    for step in range(6):
        before, after = snaps[step], snaps[step + 1]
        teacher_phase = step < 3
        assert changed(before["teacher"], after["teacher"]) == teacher_phase, step
        # the student's weights and its running statistics (batch norm, the CL2N mean) wait for the teacher
        assert changed(before["student"], after["student"]) == (not teacher_phase), step
        if temperature == "learned":
            assert changed(before["temperature"], after["temperature"]) == (not teacher_phase), step
    extra = model.record_extra()
    assert extra["teacher_steps"] == 3 and extra["temperature_learned"] == (temperature == "learned")
    if temperature == "learned":
        assert [s for s, _ in extra["temperature_curve"]] == [4, 5, 6]
        assert extra["temperature"] == pytest.approx(model.log_t.exp().item())
    else:
        assert extra["temperature"] == 4.0


def test_the_temperature_can_be_updated_every_few_student_steps():
    torch.manual_seed(0)
    model = MetaKD(TASK, backbone="tiny", teacher_backbone="tiny", teacher_steps=2, temperature_every=2)
    snaps = snapshots(model, 7)
    moved = [changed(snaps[i]["temperature"], snaps[i + 1]["temperature"]) for i in range(7)]
    assert moved == [False, False, True, False, True, False, True]  # student steps 0, 2 and 4


def test_a_fixed_temperature_is_not_a_weight():
    model = MetaKD(TASK, backbone="tiny", teacher_backbone="tiny", temperature="10")
    assert model.hp["temperature"] == 10.0 and model.temperature() == 10.0
    assert not hasattr(model, "log_t")
    assert all("log_t" not in name for name, _ in model.named_parameters())
    learned = MetaKD(TASK, backbone="tiny", teacher_backbone="tiny")
    assert [n for n, _ in learned.named_parameters() if n == "log_t"] == ["log_t"]
    assert learned.temperature().item() == pytest.approx(4.0)


def test_the_teacher_needs_fewer_steps_than_the_budget():
    model = MetaKD(TASK, backbone="tiny", teacher_backbone="tiny", teacher_steps=4)
    with pytest.raises(HParamError, match="teacher_steps=4 leaves no student steps"):
        snapshots(model, 4)


@pytest.mark.parametrize(
    "hp,needle",
    [
        ({"temperature": "hot"}, "temperature='hot' must be 'learned' or a number"),
        ({"temperature": "0"}, "must be 'learned' or a number in"),
        ({"teacher_backbone": "resnet99"}, "resnet99"),
        ({"teacher_holdout": 0.9}, "teacher_holdout=0.9"),
        ({"temperature_lr": 0}, "temperature_lr=0"),
        ({"kd_weight": 0}, "needs kd_weight > 0"),
        ({"kd_weight": 1.5}, "kd_weight=1.5"),
    ],
)
def test_bad_hyper_parameters_are_named(hp, needle):
    with pytest.raises(HParamError, match=needle):
        MetaKD.resolve_hparams(hp)


def test_the_teachers_held_out_images_are_a_function_of_the_pixels_alone():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4000, 1, 28, 28, generator=g) > 0.8).float() * 2 - 1  # two pixel values, as Omniglot has
    held = held_out_images(x, 0.05)
    perm = torch.randperm(4000, generator=g)
    assert torch.equal(held_out_images(x[perm], 0.05), held[perm])  # not the batch or the position
    assert torch.equal(torch.cat([held_out_images(x[i : i + 7], 0.05) for i in range(0, 4000, 7)]), held)
    assert 0.04 < held.float().mean().item() < 0.06  # binomial sd 0.0034 at n = 4000
    assert not held_out_images(x, 0.0).any()


# ---- end to end on real Omniglot ----------------------------------------------------------------------


@pytest.mark.integration
def test_meta_kd_trains_on_omniglot_and_records_the_teacher_and_temperature(data_dir, tmp_path):
    results = tmp_path / "results"
    hp = {
        "backbone": "small",
        "teacher_backbone": "small",
        "batch_size": 32,
        "teacher_steps": 4,
        "teacher_holdout": 0.25,  # enough held-out images in four student batches to score the teacher on
    }
    record, path = harness.run(
        "meta-kd",
        "omniglot-5w1s",
        episodes=10,
        train_steps=8,
        val_episodes=5,
        val_checks=4,  # at steps 2, 4, 6 and 8: the first two are the teacher's, and model selection skips them
        hparams=hp,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(results),
        progress=False,
        log=lambda _m: None,
    )
    assert load_record(path) == record  # valid: the envelope and the few-shot section, method_extra included
    run = record["runs"][0]
    extra = run["method_extra"]
    assert run["train_steps"] == 8 and extra["teacher_steps"] == 4
    assert run["selection"]["rule"] == "best-val" and run["selection"]["checked_steps"] == [6, 8]
    assert extra["teacher_accuracy_images"] > 0 and 0 <= extra["teacher_accuracy"] <= 1
    assert extra["teacher_train_accuracy"] is not None and extra["temperature_learned"] is True
    assert [s for s, _ in extra["temperature_curve"]] == [5, 6, 7, 8]
    assert extra["temperature"] != pytest.approx(4.0, abs=1e-6)  # the meta-gradient moved it
    chosen = dict(map(tuple, extra["temperature_curve"]))[run["selection"]["chosen_step"]]
    assert extra["temperature"] == pytest.approx(chosen, abs=1e-4)  # the T of the model kept and scored
    state = torch.load(results / run["checkpoint"]["path"], weights_only=False)["state_dict"]
    assert not any(k.startswith("teacher") for k in state)  # the checkpoint holds the student and T only
    assert math.exp(state["log_t"].item()) == pytest.approx(extra["temperature"])
    report = verify(path, data_dir=str(data_dir))  # the teacherless checkpoint answers the same episodes
    assert report.passed, report.problems
