"""The architecture search space: a DARTS-style cell (Liu et al. 2019) stacked into a small few-shot backbone.

A cell takes one input (the stem's output or the previous cell's), projects it to `channels` with a 1x1
convolution, and computes `nodes` intermediate nodes; node j (1-based) sums operations applied to earlier
nodes (node 0 is the projected input). The cell's output is the concatenation of its intermediate nodes,
followed by a fixed 2x2 max-pool: the reduction is Conv-4's, not searched (DARTS also searches a reduction
cell; at 28 px four reductions already reach 1x1). Features are flattened, as Conv-4's are.

The same `CellNet` is the supernet of a search (every candidate operation on every edge, mixed by
architecture weights, or one sampled choice per node with the weights shared: ENAS) and the network a
genotype describes (only its chosen operations). The space is data (`SearchSpace`), and so is a genotype
(benchmark.methods.genotype).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import BenchError
from .backbones import Backbone, BatchStatNorm2d

# per node, the (operation, input node) pairs it sums; input 0 is the cell's projected input, j the j-th node
CellChoice = tuple[tuple[tuple[str, int], ...], ...]


class FixedStatNorm2d(BatchStatNorm2d):
    """Batch-statistics normalisation without a learned scale and shift: DARTS's affine=False in the search,
    where a learned scale would compete with the architecture weights."""

    def __init__(self, ch: int):
        super().__init__(ch)
        del self.weight, self.bias
        self.register_buffer("weight", torch.ones(ch), persistent=False)
        self.register_buffer("bias", torch.zeros(ch), persistent=False)


def norm(ch: int, running_stats: bool, affine: bool = True) -> nn.Module:
    if running_stats:
        return nn.BatchNorm2d(ch, affine=affine)
    return BatchStatNorm2d(ch) if affine else FixedStatNorm2d(ch)


Norm = Callable[[int], nn.Module]


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def _sep_conv(c: int, k: int, bn: Norm) -> nn.Module:
    def half():
        return [
            nn.ReLU(),
            nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            bn(c),
        ]

    return nn.Sequential(*half(), *half())


def _dil_conv(c: int, k: int, bn: Norm) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c, c, k, padding=2 * (k // 2), dilation=2, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        bn(c),
    )


def _pool(pool: nn.Module, c: int, bn: Norm, searching: bool) -> nn.Module:
    # in the search a pooling output is normalised like the convolutions' (DARTS), so that the architecture
    # weights compare operations and not their output scales
    return nn.Sequential(pool, bn(c)) if searching else pool


# name -> (channels, norm, searching) -> module; every operation keeps the shape of its input
OPS: dict[str, Callable[[int, Norm, bool], nn.Module]] = {
    "none": lambda c, bn, s: Zero(),
    "skip_connect": lambda c, bn, s: nn.Identity(),
    "max_pool_3x3": lambda c, bn, s: _pool(nn.MaxPool2d(3, 1, 1), c, bn, s),
    "avg_pool_3x3": lambda c, bn, s: _pool(nn.AvgPool2d(3, 1, 1, count_include_pad=False), c, bn, s),
    "sep_conv_3x3": lambda c, bn, s: _sep_conv(c, 3, bn),
    "sep_conv_5x5": lambda c, bn, s: _sep_conv(c, 5, bn),
    "dil_conv_3x3": lambda c, bn, s: _dil_conv(c, 3, bn),
    "dil_conv_5x5": lambda c, bn, s: _dil_conv(c, 5, bn),
}


@dataclass(frozen=True)
class SearchSpace:
    """What a search chooses among (`ops`, `nodes`, `inputs` per node) and the supernet's size while
    searching (`cells`, `channels`, `stem`). A changed space gets a new name (the version is in it)."""

    name: str
    ops: tuple[str, ...]
    nodes: int = 3
    inputs: int = 2  # incoming edges a node keeps (DARTS: 2); node 1 has only one candidate
    cells: int = 4
    channels: int = 16
    stem: bool = True  # a 3x3 convolution before the first cell

    def __post_init__(self):
        unknown = [o for o in self.ops if o not in OPS]
        if unknown:
            raise BenchError(f"search space {self.name}: unknown operation(s) {unknown}; known: {', '.join(OPS)}")
        if not [o for o in self.ops if o != "none"]:
            raise BenchError(f"search space {self.name}: needs an operation other than 'none'")
        if self.nodes < 1 or self.inputs < 1 or self.cells < 1 or self.channels < 1:
            raise BenchError(f"search space {self.name}: nodes, inputs, cells and channels must be at least 1")

    @property
    def edges(self) -> list[tuple[int, int]]:
        """(node, input) for every candidate edge, in the order of the architecture weights' rows."""
        return edges_of(self.nodes)

    @property
    def choosable(self) -> tuple[str, ...]:
        """The operations a genotype may keep ('none' only weighs an edge down in the search)."""
        return tuple(o for o in self.ops if o != "none")

    def kept(self, node: int) -> int:
        """How many incoming edges node `node` (1-based) keeps."""
        return min(self.inputs, node)


def edges_of(nodes: int) -> list[tuple[int, int]]:
    return [(j, i) for j in range(1, nodes + 1) for i in range(j)]


DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# MetaNAS (Elsken et al. 2020) searched 4 cells of 28 channels on Omniglot; here 16 while searching, and the
# found cell is widened to a reference's parameter count afterwards (genotype.match_channels)
SPACES: dict[str, SearchSpace] = {"darts-fewshot-v1": SearchSpace("darts-fewshot-v1", DARTS_OPS)}


def space_named(name: str) -> SearchSpace:
    if name not in SPACES:
        raise BenchError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name]


class _Cell(nn.Module):
    def __init__(self, pre: nn.Module, edges: nn.ModuleDict):
        super().__init__()
        self.pre, self.edges = pre, edges


class CellNet(Backbone):
    """Stem, `cells` cells of the same architecture, each followed by a 2x2 max-pool; flattened features.

    `candidates` maps each edge (node, input) to the operations it holds. `forward(x)` runs `choice` (a
    genotype's cell, the default), `forward(x, weights=w)` mixes every candidate with w [edges, len(ops)]
    (DARTS; `ops` orders w's columns, 'none' adds nothing), `forward(x, choice=c)` runs another choice whose
    operations the candidates hold (ENAS's shared weights).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        *,
        nodes: int,
        cells: int,
        channels: int,
        candidates: Mapping[tuple[int, int], Sequence[str]],
        ops: Sequence[str] = (),
        choice: CellChoice | None = None,
        stem: bool = True,
        running_stats: bool = True,
        searching: bool = False,
    ):
        super().__init__()
        side = image_size
        for _ in range(cells):
            side //= 2
        if side < 1:
            raise BenchError(f"{cells} cells (each halves the image) do not fit {image_size} px images")
        affine = not searching

        def bn(c: int) -> nn.Module:
            return norm(c, running_stats, affine)

        self.nodes, self.ops, self.choice = nodes, tuple(ops), choice
        self.edge_list = edges_of(nodes)
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), bn(c)) if stem else None
        cin = c if stem else in_channels
        self.cells = nn.ModuleList()
        for k in range(cells):
            # the first cell reads the stem's normalised convolution or the image: no ReLU before its projection
            pre = nn.Sequential(*([nn.ReLU()] if k else []), nn.Conv2d(cin, c, 1, bias=False), bn(c))
            edges = {
                f"{j}_{i}": nn.ModuleDict({o: OPS[o](c, bn, searching) for o in names if o != "none"})
                for (j, i), names in candidates.items()
            }
            self.cells.append(_Cell(pre, nn.ModuleDict(edges)))
            cin = nodes * c
        self.pool = nn.MaxPool2d(2)
        self.out_dim = nodes * c * side * side

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None, choice: CellChoice | None = None):
        if self.stem is not None:
            x = self.stem(x)
        for cell in self.cells:
            assert isinstance(cell, _Cell)
            h = [cell.pre(x)]
            for j in range(1, self.nodes + 1):
                h.append(self._node(cell.edges, h, j, weights, choice))
            x = self.pool(torch.cat(h[1:], dim=1))
        return x.flatten(1)

    def _node(self, edges: nn.ModuleDict, h: list[torch.Tensor], j: int, weights, choice) -> torch.Tensor:
        def op(i: int, name: str) -> nn.Module:
            held = edges[f"{j}_{i}"]
            assert isinstance(held, nn.ModuleDict)
            return held[name]

        out = torch.zeros_like(h[0])
        if weights is not None:  # 'none' adds nothing: its weight only scales the others down
            for i in range(j):
                row = weights[self.edge_list.index((j, i))]
                for o, name in enumerate(self.ops):
                    if name != "none":
                        out = out + row[o] * op(i, name)(h[i])
            return out
        for name, i in (choice or self.choice or ())[j - 1]:
            out = out + op(i, name)(h[i])
        return out


def supernet(space: SearchSpace, in_channels: int, image_size: int) -> CellNet:
    """Every candidate operation on every edge, normalised without running statistics (exact under torch.func)."""
    return CellNet(
        in_channels,
        image_size,
        nodes=space.nodes,
        cells=space.cells,
        channels=space.channels,
        candidates={e: space.ops for e in space.edges},
        ops=space.ops,
        stem=space.stem,
        running_stats=False,
        searching=True,
    )


def choice_net(
    choice: CellChoice,
    in_channels: int,
    image_size: int,
    *,
    cells: int,
    channels: int,
    stem: bool = True,
    running_stats: bool = True,
) -> CellNet:
    """The network of one cell architecture: only its chosen operations."""
    candidates: dict[tuple[int, int], list[str]] = {}
    for j, pairs in enumerate(choice, start=1):
        for op, i in pairs:
            candidates.setdefault((j, i), []).append(op)
    return CellNet(
        in_channels,
        image_size,
        nodes=len(choice),
        cells=cells,
        channels=channels,
        candidates=candidates,
        choice=choice,
        stem=stem,
        running_stats=running_stats,
    )


def count_params(build: Callable[[], nn.Module]) -> int:
    """Weights of the module `build()` makes, built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def derive_darts(space: SearchSpace, weights: torch.Tensor) -> CellChoice:
    """DARTS's discrete cell: per node the `inputs` strongest incoming edges, an edge's strength being its
    largest weight other than 'none', each with that operation. weights: [edges, ops], softmaxed per row."""
    choice = []
    w = weights.detach().cpu()
    names = list(space.ops)
    for j in range(1, space.nodes + 1):
        best = []
        for i in range(j):
            row = w[space.edges.index((j, i))]
            o = max((k for k, n in enumerate(names) if n != "none"), key=lambda k: float(row[k]))
            best.append((float(row[o]), names[o], i))
        best.sort(key=lambda t: -t[0])
        choice.append(tuple((op, i) for _, op, i in sorted(best[: space.kept(j)], key=lambda t: t[2])))
    return tuple(choice)


def random_choice(space: SearchSpace, generator: torch.Generator) -> CellChoice:
    """Random search's cell: per node, `inputs` distinct inputs and one operation each, uniformly."""
    ops = space.choosable
    choice = []
    for j in range(1, space.nodes + 1):
        inputs = sorted(torch.randperm(j, generator=generator)[: space.kept(j)].tolist())
        picks = torch.randint(len(ops), (len(inputs),), generator=generator).tolist()
        choice.append(tuple((ops[o], i) for o, i in zip(picks, inputs)))
    return tuple(choice)
