"""Differentiable image augmentations whose magnitudes and probabilities are parameters: what a meta-learned
augmentation policy (baselines/meta_augment.py) learns.

An operation's strength on one image is `magnitude x RANGES[op] x amount`, with the magnitude in [0, 1] the
policy's and the amount a random draw in [-1, 1]. It is applied with the policy's probability p through a gate
from standard logistic noise L: the hard gate [logit(p) + L > 0] is exactly Bernoulli(p); the relaxed gate
sigmoid((logit(p) + L) / temperature), the binary Concrete / relaxed Bernoulli of Maddison et al. 2017 and Jang
et al. 2017, carries a gradient to p (and tends to the hard gate as the temperature falls).

Geometric operations (rotate, shear, translate, scale: zooming in is a crop) each give an affine matrix per
image, blended with the identity by the gate; their product resamples the image once (`affine_grid` and
`grid_sample`: bilinear, border padding, so a gradient reaches the magnitudes through the sampling grid).
Photometric operations (brightness, contrast, cutout with a soft-edged square mask) blend an image with its
transformed self by the gate. Brightness and contrast act on each image's intensities, so they act on grey
images too; there is no hue or saturation operation (those would do nothing to Omniglot's grey strokes).
Images are in the store's normalised units: 0 is the dataset's mean colour (what cutout fills with) and
brightness moves in units of its standard deviation.

Every random number comes from `draw` (on the CPU, float64, so the same generator seed gives the same numbers
on any device): with the draws fixed, an augmentation is a deterministic, differentiable function of the
images and the policy's parameters.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

OPS = ("rotate", "shear", "translate", "scale", "brightness", "contrast", "cutout")
GEOMETRIC = ("rotate", "shear", "translate", "scale")
# strength at magnitude 1, and its unit; the hand-set policy (magnitude 0.5) is half of each
RANGES = {
    "rotate": 30.0,
    "shear": 0.3,
    "translate": 0.2,
    "scale": 0.4,
    "brightness": 0.8,
    "contrast": 0.8,
    "cutout": 0.6,
}
UNITS = {
    "rotate": "degrees, either way",
    "shear": "horizontal shear factor, either way",
    "translate": "fraction of the side, each axis, either way",
    "scale": "zoom factor 1 +/- this",
    "brightness": "dataset standard deviations added, either way",
    "contrast": "contrast factor 1 +/- this",
    "cutout": "side of the erased square, fraction of the image side",
}


@dataclass(frozen=True)
class Draws:
    """The random numbers of n augmented images, for every operation in OPS (whichever a policy uses)."""

    amount: torch.Tensor  # [n, len(OPS), 2] uniform in [-1, 1]: the amount (translate, cutout: x and y)
    noise: torch.Tensor  # [n, len(OPS)] standard logistic: the gate's noise

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Draws:
        return Draws(self.amount.to(device, dtype), self.noise.to(device, dtype))

    @staticmethod
    def cat(parts: Sequence[Draws]) -> Draws:
        return Draws(torch.cat([p.amount for p in parts]), torch.cat([p.noise for p in parts]))


def draw(n: int, generator: torch.Generator | None = None) -> Draws:
    """Random numbers for n images, from `generator` (a CPU generator; None: torch's global one)."""
    amount = torch.rand(n, len(OPS), 2, generator=generator, dtype=torch.float64) * 2 - 1
    u = torch.rand(n, len(OPS), generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return Draws(amount, torch.log(u) - torch.log1p(-u))


def parse_ops(text: str) -> tuple[str, ...]:
    """ "rotate,cutout" -> ("rotate", "cutout"), in OPS order; ValueError naming the unknown or repeated ones."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(OPS))
    if unknown or not names or len(set(names)) != len(names):
        why = f"unknown {', '.join(unknown)}" if unknown else "empty or repeated names"
        raise ValueError(f"ops={text!r}: {why}; give a comma-separated subset of {','.join(OPS)}")
    return tuple(op for op in OPS if op in names)


class AugmentPolicy(nn.Module):
    """Operations `ops` (in OPS order), each with a magnitude and a probability: parameters (as logits) when
    `learned`, else fixed buffers (no parameters at all)."""

    def __init__(
        self,
        ops: Sequence[str] = OPS,
        magnitude: float = 0.5,
        probability: float = 0.5,
        learned: bool = True,
        temperature: float = 0.1,
    ):
        super().__init__()
        self.ops = parse_ops(",".join(ops))
        self.learned, self.temperature = learned, float(temperature)
        for key, v in (("magnitude", magnitude), ("probability", probability)):
            if not (0 < v < 1 if learned else 0 <= v <= 1):  # a learned value is a finite logit
                raise ValueError(
                    f"{key}={v} must be in {'(0, 1), exclusive, for a learned policy' if learned else '[0, 1]'}"
                )
        m = torch.full((len(self.ops),), float(magnitude))
        p = torch.full((len(self.ops),), float(probability))
        self.magnitude_logit: torch.Tensor
        self.probability_logit: torch.Tensor
        if learned:
            self.magnitude_logit = nn.Parameter(torch.logit(m))
            self.probability_logit = nn.Parameter(torch.logit(p))
        else:
            self.register_buffer("magnitude_logit", torch.logit(m))
            self.register_buffer("probability_logit", torch.logit(p))
        self.ranges: torch.Tensor
        self.register_buffer("ranges", torch.tensor([RANGES[op] for op in self.ops]), persistent=False)
        self.columns = [OPS.index(op) for op in self.ops]

    def magnitudes(self) -> torch.Tensor:
        return torch.sigmoid(self.magnitude_logit)

    def probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.probability_logit)

    def gates(self, noise: torch.Tensor, hard: bool) -> torch.Tensor:
        """[n, len(ops)] gates from the draws' noise (already restricted to this policy's columns)."""
        z = self.probability_logit.to(noise.dtype) + noise
        return (z > 0).to(noise.dtype) if hard else torch.sigmoid(z / self.temperature)

    def forward(self, x: torch.Tensor, draws: Draws, hard: bool = False) -> torch.Tensor:
        """Augment images x [n, C, H, W] with draws of n images; hard: Bernoulli gates (no gradient to p)."""
        if draws.noise.shape[0] != x.shape[0]:
            raise ValueError(f"{draws.noise.shape[0]} draws for {x.shape[0]} images")
        d = draws.to(x.device, x.dtype)
        amount, gate = d.amount[:, self.columns], self.gates(d.noise[:, self.columns], hard)
        strength = (self.magnitudes().to(x.dtype) * self.ranges.to(x.dtype)).unsqueeze(0) * amount[..., 0]  # [n, k]
        n = x.shape[0]
        eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(n, 3, 3)
        theta, moved = eye, False
        for j, op in enumerate(self.ops):
            if op in GEOMETRIC:
                second = self.magnitudes()[j].to(x.dtype) * RANGES[op] * amount[:, j, 1]
                a = _affine(op, strength[:, j], second, eye)
                theta = theta @ (eye + gate[:, j, None, None] * (a - eye))
                moved = True
        if moved:
            grid = F.affine_grid(theta[:, :2], list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        for j, op in enumerate(self.ops):
            g = gate[:, j].view(n, 1, 1, 1)
            if op == "brightness":
                x = x + g * strength[:, j].view(n, 1, 1, 1)
            elif op == "contrast":
                mean = x.mean(dim=(1, 2, 3), keepdim=True)
                x = mean + (x - mean) * (1 + g * strength[:, j].view(n, 1, 1, 1))
            elif op == "cutout":
                side = self.magnitudes()[j].to(x.dtype) * RANGES[op]  # the half-side in [-1, 1] coordinates
                x = x * (1 - g * _square(side, amount[:, j], x.shape[-2], x.shape[-1]).unsqueeze(1))
        return x

    def values(self) -> dict[str, dict[str, float | str]]:
        """Each operation's magnitude, probability and what the magnitude means (strength and unit)."""
        return _described(self.ops, self.magnitude_logit, self.probability_logit)


def _described(ops: Sequence[str], magnitude_logit: torch.Tensor, probability_logit: torch.Tensor) -> dict:
    mags = torch.sigmoid(magnitude_logit.detach().cpu().double())
    probs = torch.sigmoid(probability_logit.detach().cpu().double())
    return {
        op: {
            "magnitude": round(float(m), 6),
            "probability": round(float(p), 6),
            "strength": round(float(m) * RANGES[op], 6),
            "unit": UNITS[op],
        }
        for op, m, p in zip(ops, mags, probs)
    }


def policy_in_checkpoint(path: str, prefix: str = "policy.") -> dict:
    """The policy a checkpoint holds (`bench evaluate` writes one per seed, named in the record's
    `runs[].checkpoint`): a model whose `policy` is an AugmentPolicy built from its hyper-parameter `ops`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state, hp = ckpt.get("state_dict", {}), ckpt.get("hparams", {})
    keys = (prefix + "magnitude_logit", prefix + "probability_logit")
    if not all(k in state for k in keys) or "ops" not in hp:
        raise ValueError(f"{path}: no augmentation policy in this checkpoint (method {ckpt.get('method')!r})")
    return {
        "checkpoint": str(path),
        "method": ckpt.get("method"),
        "seed": ckpt.get("seed"),
        "policy": hp.get("policy"),
        "copies": hp.get("copies"),
        "ops": _described(parse_ops(hp["ops"]), state[keys[0]], state[keys[1]]),
    }


def _affine(op: str, value: torch.Tensor, second: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """[n, 3, 3] matrices mapping output coordinates in [-1, 1] to the input coordinates sampled."""
    a = eye.clone()
    if op == "rotate":
        r = value * (math.pi / 180)
        c, s = torch.cos(r), torch.sin(r)
        a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = c, -s, s, c
    elif op == "shear":
        a[:, 0, 1] = value
    elif op == "translate":  # coordinates span 2 per side: a fraction f of the side is 2f
        a[:, 0, 2], a[:, 1, 2] = 2 * value, 2 * second
    elif op == "scale":  # below 1 samples a smaller window: zooms in (a crop); above 1 zooms out
        a[:, 0, 0] = a[:, 1, 1] = 1 + value
    return a


def _square(side: torch.Tensor, centre: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[n, h, w] soft mask of a square of half-side `side` (in [-1, 1] coordinates) at `centre` [n, 2] (x, y),
    with an edge about one pixel wide so that its size has a gradient."""
    ys = (torch.arange(h, dtype=centre.dtype, device=centre.device) + 0.5) * (2 / h) - 1
    xs = (torch.arange(w, dtype=centre.dtype, device=centre.device) + 0.5) * (2 / w) - 1
    mx = torch.sigmoid((side - (xs.unsqueeze(0) - centre[:, :1]).abs()) * w)
    my = torch.sigmoid((side - (ys.unsqueeze(0) - centre[:, 1:]).abs()) * h)
    return my.unsqueeze(2) * mx.unsqueeze(1)


if __name__ == "__main__":  # python -m benchmark.methods.augment CHECKPOINT...
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m benchmark.methods.augment CHECKPOINT... (a record's runs[].checkpoint)")
    try:
        print(json.dumps([policy_in_checkpoint(p) for p in sys.argv[1:]], indent=2))
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
