"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

One network embeds support and query images (Conv-4); a query attends to every support image with a
softmax over cosine similarities, and the class scores are the attention mass on each class's shots:
the logits returned are log P(class | query, S) = log sum_{i: y_i = class} a(query, x_i), finite for
every class present in the support set (Eq. 1-2 of the paper).

Full context embeddings (FCE, hyper-parameter `fce`, the paper's Sec. 2.1.2 and Appendix A):
- support: g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i), a bidirectional LSTM (hidden size = embedding size)
  over the support embeddings g' in the order given, plus a skip connection;
- query: f(x, S) = attLSTM(f'(x), g(S), K), an LSTM whose input is f'(x) at every step and whose state
  is [h_{k-1}, r_{k-1}], with h_k = LSTM output + f'(x) and the read-out r_{k-1} = sum_i
  softmax(h_{k-1}^T g(x_i)) g(x_i); h_0 = f'(x), c_0 = 0. The paper gives no K; `fce_steps` = 0 takes
  as many steps as there are support images, as the FAIR implementation (Hariharan & Girshick 2017,
  low-shot-shrink-hallucinate, reused by Chen et al. 2019's CloserLookFewShot) does.
With `fce` on the method reads the support set as a SEQUENCE (the bidirectional LSTM depends on the
order), so the class sets `shuffled_support`: the harness hands every sequence reader the support in
one fixed, shuffled order per episode. With `fce` off the method is invariant to the support order.

Differences from the paper: Omniglot rows are without FCE (the paper: "Fully Conditional Embeddings
(FCE) did not seem to help much and were left out of the table", Sec. 4.1.1), so the Omniglot recipe
turns it off; the default elsewhere is on (the mini-ImageNet rows, Table 2). The paper states no
optimiser; Adam at 1e-3, constant, as in the public re-implementations (oscarknagg/few-shot).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import HParamError, LogUniform, MetaLearner, PaperResult, Recipe, make_backbone, register

_V = "Vinyals et al. 2016"
_BUDGET = (
    "The paper gives no step count; here the protocol's budget. The paper's optimiser is not stated: Adam at "
    "1e-3 as in public re-implementations (oscarknagg/few-shot)."
)
_RAVI = "Ravi & Larochelle 2017, Table 1: their run of Matching Nets (FCE) on their split"


def class_log_mass(attention_logits: torch.Tensor, support_y: torch.Tensor, ways: int) -> torch.Tensor:
    """log of the softmax attention mass on each class: [B, Q, S] scores, [B, S] labels -> [B, Q, N].

    A class with no shot gets a large negative finite score (not -inf), so the logits stay finite."""
    log_a = attention_logits.log_softmax(-1)  # [B, Q, S]
    member = F.one_hot(support_y, ways).bool()  # [B, S, N]
    filled = log_a.unsqueeze(-1).masked_fill(~member.unsqueeze(1), -1e4)  # [B, Q, S, N]
    return filled.logsumexp(dim=2)


class FullContext(nn.Module):
    """The paper's full context embeddings g(x_i, S) and f(x, S) (Appendix A.1-A.2)."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.att_input = nn.Linear(dim, 4 * dim)  # f'(x), the attLSTM's input at every step
        self.att_state = nn.Linear(2 * dim, 4 * dim, bias=False)  # the state [h_{k-1}, r_{k-1}]

    def support(self, g: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> [B, S, D]: forward and backward LSTM states plus the embedding itself."""
        out, _ = self.support_lstm(g)
        d = g.shape[-1]
        return g + out[..., :d] + out[..., d:]

    def query(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """[B, Q, D] query embeddings attending over [B, S, D] support embeddings for K steps."""
        steps = self.steps or g.shape[1]
        x_gates = self.att_input(f)
        h, c = f, torch.zeros_like(f)
        for _ in range(steps):
            read = torch.softmax(h @ g.transpose(1, 2), dim=-1) @ g  # r_{k-1}, from h_{k-1}
            i, fg, cell, o = (x_gates + self.att_state(torch.cat([h, read], -1))).chunk(4, -1)
            c = torch.sigmoid(fg) * c + torch.sigmoid(i) * torch.tanh(cell)
            h = torch.sigmoid(o) * torch.tanh(c) + f
        return h


@register
class MatchingNet(MetaLearner):
    name = "matching"
    paper = "Vinyals et al., Matching Networks for One Shot Learning, NeurIPS 2016"
    # with fce on, the bidirectional LSTM reads the support as a sequence (fce off: order-invariant)
    shuffled_support = True
    HPARAMS = {
        "lr": 1e-3,
        "fce": True,  # full context embeddings; the Omniglot recipe turns them off, as the paper's Table 1
        "fce_steps": 0,  # K processing steps of the attention LSTM; 0: as many as support images
    }
    HPARAM_BOUNDS = {"fce_steps": (0, None)}
    SEARCH_SPACE = {"lr": LogUniform(1e-4, 1e-2)}
    RECIPES = (
        Recipe(
            "omniglot",
            {"fce": False},
            source=f"{_V}, Sec. 4.1.1 and Table 1",
            note="Training episodes match the test episodes (the protocol's ways, shots and 15 queries per class). "
            'FCE off: the paper\'s Omniglot rows are without it ("did not seem to help much"); --hparam fce=true '
            "turns it on. " + _BUDGET,
        ),
        Recipe(
            "mini-imagenet",
            {"fce": True},
            source=f"{_V}, Sec. 4.1.2 and Table 2 (Matching Nets, Cosine (FCE))",
            note="Training episodes match the test episodes. The paper's mini-ImageNet split is its own; this "
            "protocol uses Ravi & Larochelle's. " + _BUDGET,
        ),
    )
    PAPER_RESULTS = {
        "omniglot-5w1s": PaperResult(98.1, None, f"{_V}, Table 1", "no fine-tuning, no FCE; no interval given"),
        "omniglot-5w5s": PaperResult(98.9, None, f"{_V}, Table 1", "no fine-tuning, no FCE; no interval given"),
        "omniglot-20w1s": PaperResult(93.8, None, f"{_V}, Table 1", "no fine-tuning, no FCE; no interval given"),
        "omniglot-20w5s": PaperResult(98.5, None, f"{_V}, Table 1", "no fine-tuning, no FCE; no interval given"),
        "mini-imagenet-5w1s": PaperResult(43.56, 0.84, _RAVI, "reported by a later paper"),
        "mini-imagenet-5w5s": PaperResult(55.31, 0.73, _RAVI, "reported by a later paper"),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if not isinstance(hp["fce"], bool):
            raise HParamError(f"matching: fce={hp['fce']!r} must be true or false")
        return hp

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)
        dim = int(self.encoder.out_dim)
        self.context = FullContext(dim, self.hp["fce_steps"]) if self.hp["fce"] else None

    def predict(self, support_x, support_y, query_x, ways):
        b, s = support_x.shape[:2]
        # one pass: in training, batch norm normalises support and query with the same statistics
        z = self.encoder(torch.cat([support_x, query_x], dim=1).flatten(0, 1)).view(b, -1, self.encoder.out_dim)
        g, f = z[:, :s], z[:, s:]
        if self.context is not None:
            g = self.context.support(g)
            f = self.context.query(f, g)
        cosine = F.normalize(f, dim=-1) @ F.normalize(g, dim=-1).transpose(1, 2)  # [B, Q, S]
        return class_log_mass(cosine, support_y, ways)

    def training_step(self, ep, batch_idx):
        logits = self.predict_episodes(ep)
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())  # = -log attention mass on the label
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["lr"])
