"""SNAIL, a Simple Neural AttentIve meta-Learner (Mishra, Rohaninejad, Chen & Abbeel, ICLR 2018).

A sequence of T = N*K + 1 tokens, the N*K labelled support images then one query with the null label,
goes through causal temporal convolutions and causal soft attention; the output at the query's position
is the prediction. The paper's network for N-way K-shot (Sec. 4.1 and Appendix):
AttentionBlock(64, 32), TCBlock(T, 128), AttentionBlock(256, 128), TCBlock(T, 128), AttentionBlock(512, 256),
then a 1x1 convolution (here the equivalent linear layer) to the label slots.
- DenseBlock(dilation d, D filters): two causal convolutions of kernel 2 and dilation d, f and g; the block
  appends tanh(f) * sigmoid(g) to its input (D more channels).
- TCBlock(T, D): ceil(log2 T) dense blocks; the paper's dilations are 2^i for i = 1 .. ceil(log2 T)
  (`dilations=paper`; `from-one` uses 1, 2, .., 2^(ceil(log2 T) - 1), whose kernel-2 convolutions reach
  every earlier position, where the paper's reach only even offsets).
- AttentionBlock(K, V): single-head attention with keys and queries of size K and values of size V, each
  position attending to itself and the positions before it (softmax of q.k / sqrt(K)); appends the V-wide
  read to its input.

The paper's sequence holds one query. Here every query of an episode is such a sequence, computed without
repeating the support part: the layers are causal, so the support positions' activations are the same in
every one of them; they are computed once per episode, then each query's position from them and its own
(`SnailNet.forward`; a test checks this against whole (support, query) sequences). A query never sees
another query. Loss: cross-entropy of the query predictions (the paper's loss on the last position).

Differences from the paper: the embedding is the project's backbone (Conv-4 by default: 3x3 conv, batch
norm, ReLU, 2x2 max-pool, four times; 64 features at 28px), trained with the rest; the paper's Omniglot
embedding is the same blocks with leaky ReLU. T is fixed at construction from `max_ways` and the shots
(the most a sequence holds), since it sets the number of dense blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import HParamError, PaperResult, Recipe, register

from .sequence import SequenceLearner

Pair = tuple[torch.Tensor, torch.Tensor]  # support activations [B, S, C], query activations [B, Q, C]

_MISHRA = "Mishra et al. 2018, Sec. 4.1 and Appendix C (architecture); training settings as noted"
_NOTE = (
    "Adam at lr 1e-3 and 32 episodes per step as the task brief gives them: the paper's appendix text could not "
    "be checked here (a public re-implementation, eambutu/snail-pytorch, uses Adam at 1e-4 with 32 sequences). "
    "Each episode trains on all its queries, each a sequence of its own (the paper: one query per sequence). "
    "Conv-4 with ReLU (the paper's Omniglot embedding has leaky ReLU). The paper trained until convergence; "
    "here the protocol's step budget."
)


class DenseBlock(nn.Module):
    def __init__(self, channels: int, filters: int, dilation: int):
        super().__init__()
        self.filters, self.dilation = filters, dilation
        self.conv = nn.Conv1d(channels, 2 * filters, kernel_size=2, dilation=dilation)  # f and g together

    def _gated(self, a: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a[..., : self.filters]) * torch.sigmoid(a[..., self.filters :])

    def forward(self, x: Pair) -> Pair:
        s, q = x
        d, n = self.dilation, s.shape[1]
        fs = self.conv(F.pad(s.transpose(1, 2), (d, 0))).transpose(1, 2)  # position t sees t - d and t
        # a query sits at position n: it sees its own input and the support input at n - d (zeros before 0)
        past = s[:, n - d] if n >= d else s.new_zeros(s.shape[0], s.shape[2])
        w, b = self.conv.weight, self.conv.bias
        assert b is not None
        fq = (past @ w[:, :, 0].T).unsqueeze(1) + q @ w[:, :, 1].T + b
        return torch.cat([s, self._gated(fs)], dim=-1), torch.cat([q, self._gated(fq)], dim=-1)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, key_size: int, value_size: int):
        super().__init__()
        self.key_size, self.value_size = key_size, value_size
        self.proj = nn.Linear(channels, 2 * key_size + value_size)  # query, key, value

    def _split(self, x: torch.Tensor):
        k = self.key_size
        return x[..., :k], x[..., k : 2 * k], x[..., 2 * k :]

    def forward(self, x: Pair) -> Pair:
        s, q = x
        qs, ks, vs = self._split(self.proj(s))
        qq, kq, vq = self._split(self.proj(q))
        scale = math.sqrt(self.key_size)
        n = s.shape[1]
        future = torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1)
        att = torch.softmax((qs @ ks.transpose(1, 2) / scale).masked_fill(future, float("-inf")), dim=-1)
        # a query attends to every support position and to itself
        logits = torch.cat([qq @ ks.transpose(1, 2), (qq * kq).sum(-1, keepdim=True)], dim=-1) / scale
        p = torch.softmax(logits, dim=-1)
        read_q = p[..., :n] @ vs + p[..., n:] * vq
        return torch.cat([s, att @ vs], dim=-1), torch.cat([q, read_q], dim=-1)


def tc_dilations(length: int, kind: str) -> list[int]:
    blocks = max(1, math.ceil(math.log2(length)))
    first = 1 if kind == "paper" else 0
    return [2 ** (i + first) for i in range(blocks)]


class SnailNet(nn.Module):
    """The paper's stack on (support, queries) tokens -> logits at each query's position."""

    def __init__(self, token_dim: int, length: int, out: int, filters: int, key: int, value: int, dilations: str):
        super().__init__()
        layers: list[nn.Module] = []
        ch = token_dim
        for i, scale in enumerate((1, 4, 8)):
            layers.append(AttentionBlock(ch, key * scale, value * scale))
            ch += value * scale
            if i < 2:
                for d in tc_dilations(length, dilations):
                    layers.append(DenseBlock(ch, filters, d))
                    ch += filters
        self.layers = nn.Sequential(*layers)
        self.out = nn.Linear(ch, out)

    def forward(self, support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """[B, S, T] and [B, Q, T] -> [B, Q, out]: each query as the last position of (support, query)."""
        _, q = self.layers((support, queries))
        return self.out(q)


@register
class SNAIL(SequenceLearner):
    name = "snail"
    paper = "Mishra et al., A Simple Neural Attentive Meta-Learner, ICLR 2018"
    HPARAMS = {
        "lr": 1e-3,
        "meta_batch": 32,
        "tc_filters": 128,  # D of both TCBlocks
        "key_size": 64,  # the first AttentionBlock's; the second's and third's are 4x and 8x (256, 512)
        "value_size": 32,  # likewise (128, 256)
        "dilations": "paper",  # "paper": 2, 4, .., 2^L; "from-one": 1, 2, .., 2^(L-1)  (L = ceil(log2 T))
        "eval_batch": 50,
    }
    HPARAM_BOUNDS = {"tc_filters": (1, None), "key_size": (1, None), "value_size": (1, None)}
    RECIPES = (Recipe("omniglot", {"meta_batch": 32, "lr": 1e-3}, source=_MISHRA, note=_NOTE),)
    PAPER_RESULTS = {
        "omniglot-5w1s": PaperResult(99.07, 0.16, "Mishra et al. 2018, Table 1", "the paper's own split and episodes"),
        "omniglot-5w5s": PaperResult(99.78, 0.09, "Mishra et al. 2018, Table 1", "the paper's own split and episodes"),
        "omniglot-20w1s": PaperResult(97.64, 0.30, "Mishra et al. 2018, Table 1", "the paper's own split and episodes"),
        "omniglot-20w5s": PaperResult(99.36, 0.18, "Mishra et al. 2018, Table 1", "the paper's own split and episodes"),
        "mini-imagenet-5w1s": PaperResult(
            55.71, 0.99, "Mishra et al. 2018, Table 2", "a ResNet embedding of the paper's own, not conv4"
        ),
        "mini-imagenet-5w5s": PaperResult(
            68.88, 0.92, "Mishra et al. 2018, Table 2", "a ResNet embedding of the paper's own, not conv4"
        ),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["dilations"] not in ("paper", "from-one"):
            raise HParamError(f"snail: dilations={hp['dilations']!r} is not one of paper, from-one")
        return hp

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        h = self.hp
        length = self.max_ways * max(task.shots, h["train_shots"]) + 1  # the longest sequence: support + query
        self.net = SnailNet(
            self.token_dim, length, self.max_ways, h["tc_filters"], h["key_size"], h["value_size"], h["dilations"]
        )

    def answer(self, support, queries):
        return self.net(support, queries), None

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["lr"])
