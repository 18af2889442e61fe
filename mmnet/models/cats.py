"""CATs: Cost Aggregation with Transformers (Cho et al., NeurIPS 2021), clean-room, on any registered backbone.

Written from the paper's supplement and a prose description of what the official code computes (docs/cats.md);
no code was copied. ``CATs(CatsConfig(backbone="resnet101"))`` is the official architecture, and its state dict
maps one to one onto the official checkpoints (`mmnet.convert_cats`).

Pipeline for a pair (a, b) -- ``model(a, b)`` takes its arguments in the official order, so ``model(x, y)`` here and
in the official code compute the same thing; in mmnet's words a is the *source* and b the *target*:

1. **Hyperpixel taps**: id 0 is the stem output (after max-pool for ResNets), id k >= 1 the k-th block over the
   backbone's tapped groups (ResNet-101: layer1 = 1-3, layer2 = 4-7, layer3 = 8-30, layer4 = 31-33), taken
   **before** the block's final activation. Each tap is resized to ``feature_size`` x ``feature_size`` (bilinear,
   align_corners=True). L taps = L levels, N = feature_size^2 cells, row-major.
2. **Correlation** per level: cosine of the L2-normalised taps (eps 1e-6 inside the square root), (B, L, Na, Nb).
3. **Mutual nearest-neighbour filter** (not in the paper): ``C * (C / max over a) * (C / max over b)``.
4. **Appearance**: a Linear(C_l -> proj_dim) per level on the *un-normalised* taps, (B, L, N, proj_dim).
5. **Aggregation** (`CostAggregator`): tokens of width N + proj_dim, a separable learnt position embedding added to
   the whole token, `depth` blocks of intra-level attention + MLP, inter-level attention + MLP, a Linear back to N.
   Two passes with the same weights: pass 1 over the cells of a (rows of C), pass 2 over the cells of b (columns of
   the pass-1 result); both add the filtered C back; the levels are averaged: scores R (B, Na, Nb).
6. **Soft-argmax** (`mmnet.models.softargmax.SoftArgmaxFlow`, beta 0.02, trainable grid): for each cell of a, the
   expected cell of b. Output: flow (B, 2, fs, fs) on a's grid into b, in cells (channel 0 = dx).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from timm.models import create_feature_extractor
from timm.models._features_fx import get_graph_node_names
from torch import nn

from ..errors import InputError
from ..matching.images import PreprocessConfig
from .backbones import BackboneSpec, get_backbone_spec, load_pretrained_backbone
from .softargmax import SoftArgmaxFlow

#: The official hyperpixel sets (ResNet-101 ids): SPair-71k (the code default) and PF-PASCAL / PF-WILLOW.
HYPERPIXELS: dict[str, tuple[int, ...]] = {
    "spair": (0, 8, 20, 21, 26, 28, 29, 30),
    "pfpascal": (2, 17, 21, 22, 25, 26, 28),
}
#: Default taps per backbone: the one config entry a backbone needs. Backbones without one use the stem plus every
#: block of the second-to-last scale group (`default_hyperpixels`).
DEFAULT_HYPERPIXELS: dict[str, tuple[int, ...]] = {
    "resnet101": HYPERPIXELS["spair"],
    "resnext101": HYPERPIXELS["spair"],  # same block layout as ResNet-101; untested
    "fcn_resnet101": HYPERPIXELS["spair"],  # same block layout, layer3 at stride 8; untested
    "resnet50": (0, 8, 9, 10, 11, 12, 13),  # stem + layer3 (ids 8-13), the SPair pattern; untested
    "efficientnet_lite2": (0, 7, 9, 10, 11, 12, 13, 14),  # stem, blocks.3.0, blocks.3.2 - blocks.4.3; untested
    "efficientnet_lite0": (0, 5, 6, 7, 8, 9, 10),  # stem, blocks.3.* + blocks.4.*; untested
}
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU)


def parse_hyperpixels(value: Any) -> tuple[int, ...]:
    """Ids from a name (``"spair"``), a sequence of ints, or text such as ``"[0,8,20]"`` / ``"2 17 21"``."""
    if isinstance(value, str):
        if value in HYPERPIXELS:
            return HYPERPIXELS[value]
        value = [int(v) for v in re.findall(r"-?\d+", value)]
    try:
        ids = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"hyperpixels must be ids like (0, 8, 20) or one of {sorted(HYPERPIXELS)}; got {value!r}"
        ) from exc
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise InputError(f"hyperpixel ids must be distinct and >= 0; got {ids}")
    return tuple(sorted(ids))


@dataclass(frozen=True)
class CatsConfig:
    """CATs hyperparameters; the defaults are the official ones (train.py, depth 1).

    backbone: registered backbone name. hyperpixels: tap ids (see the module docstring; default per backbone).
    feature_size: side of the grid every tap is resized to. proj_dim: appearance width. depth: aggregation blocks
    (applied in both passes). num_heads, mlp_ratio: transformer width settings. beta: soft-argmax temperature.
    trainable_grid: whether the soft-argmax grid trains (as in the official code).
    """

    backbone: str = "resnet101"
    hyperpixels: tuple[int, ...] = field(default=())
    feature_size: int = 16
    proj_dim: int = 128
    depth: int = 1
    num_heads: int = 6
    mlp_ratio: float = 4.0
    beta: float = 0.02
    trainable_grid: bool = True

    def __post_init__(self) -> None:
        ids = parse_hyperpixels(self.hyperpixels) if self.hyperpixels else default_hyperpixels(self.backbone)
        object.__setattr__(self, "hyperpixels", ids)
        if self.depth < 1 or self.feature_size < 2 or self.beta <= 0:
            raise InputError(
                f"CatsConfig needs depth >= 1, feature_size >= 2 and beta > 0; got depth {self.depth}, "
                f"feature_size {self.feature_size}, beta {self.beta}"
            )
        width = self.feature_size**2 + self.proj_dim
        if width % 2 or width % self.num_heads:
            raise InputError(
                f"token width feature_size^2 + proj_dim = {width} must be even and divisible by "
                f"num_heads = {self.num_heads}; change proj_dim or num_heads"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hyperpixels"] = list(self.hyperpixels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CatsConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown CatsConfig fields {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def default_hyperpixels(backbone: str) -> tuple[int, ...]:
    """The registered taps of `backbone`, else the stem plus every block of its second-to-last scale group (the
    stride-16 group of a standard CNN, where the official ids mostly sit)."""
    if backbone in DEFAULT_HYPERPIXELS:
        return DEFAULT_HYPERPIXELS[backbone]
    spec = get_backbone_spec(backbone)
    groups = [g for _, _, g in HyperpixelBackbone.layout(spec)]
    return (0, *[i for i, g in enumerate(groups) if g == len(spec.groups) - 2])


# -- backbone taps --------------------------------------------------------------------------------------------------


def _tap_nodes(net: nn.Module, spec: BackboneSpec) -> list[str]:
    """Graph node of every tap id: [stem, block 1, block 2, ...] (pre-activation block outputs)."""
    modules = dict(net.named_modules())
    blocks = [f"{c}.{child}" for group in spec.groups for c in group for child, _ in modules[c].named_children()]
    _, nodes = get_graph_node_names(net)
    top = spec.groups[0][0].split(".")[0]
    first = next(i for i, n in enumerate(nodes) if n.split(".")[0] == top)
    taps = [nodes[first - 1]]  # the stem: the last node before the blocks (ResNet: maxpool)
    for block in blocks:
        inside = [n for n in nodes if n.startswith(block + ".")]
        while len(inside) > 1 and isinstance(modules.get(inside[-1]), _ACTIVATIONS):
            inside.pop()  # the block output before its final activation
        taps.append(inside[-1])
    return taps


class HyperpixelBackbone(nn.Module):
    """A timm CNN returning the selected taps, each resized to ``size`` x ``size``.

    ``forward(x (B, 3, H, W)) -> list over ids of (B, C_l, size, size)``. The graph stops after the deepest tap,
    so later blocks have no parameters here (e.g. ResNet layer4 and fc); parameter names are timm's under
    ``body.`` (``body.layer3.0.conv1.weight``).
    """

    def __init__(self, spec: BackboneSpec, ids: tuple[int, ...], size: int = 16, pretrained: bool = False) -> None:
        super().__init__()
        net = self._net(spec, pretrained)
        nodes = _tap_nodes(net, spec)
        if max(ids) >= len(nodes):
            raise InputError(
                f"hyperpixel id {max(ids)} is out of range: {spec.name} has ids 0..{len(nodes) - 1} "
                "(0 = stem, k = k-th block)"
            )
        self.ids, self.size = ids, size
        self.nodes = tuple(nodes[i] for i in ids)  # e.g. ("maxpool", "layer3.0.add", ...)
        self.body = create_feature_extractor(net, {nodes[i]: f"tap{i}" for i in ids})
        with torch.no_grad():
            self.channels = tuple(int(f.shape[1]) for f in self.body.eval()(torch.zeros(1, 3, 64, 64)).values())
        self.body.train()

    @staticmethod
    def _net(spec: BackboneSpec, pretrained: bool) -> nn.Module:
        net = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_kwargs)
        if pretrained:
            load_pretrained_backbone(net, spec)
        for module in net.modules():  # an in-place activation would overwrite the pre-activation taps
            if isinstance(getattr(module, "inplace", None), bool):
                setattr(module, "inplace", False)  # noqa: B010
        return net

    @staticmethod
    def layout(spec: BackboneSpec) -> list[tuple[str, int, int]]:
        """(graph node, stride, scale group or -1 for the stem) of every tap id of `spec` (random weights, a 64x64
        probe)."""
        net = HyperpixelBackbone._net(spec, pretrained=False)
        nodes = _tap_nodes(net, spec)
        modules = dict(net.named_modules())
        groups = [-1] + [g for g, group in enumerate(spec.groups) for c in group for _ in modules[c].children()]
        with torch.no_grad():
            outs = create_feature_extractor(net, nodes).eval()(torch.zeros(1, 3, 64, 64))
        return [(n, 64 // outs[n].shape[-1], g) for n, g in zip(nodes, groups, strict=True)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = list(self.body(x).values())
        return [
            t
            if tuple(t.shape[-2:]) == (self.size, self.size)
            else F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=True)
            for t in taps
        ]


# -- correlation ----------------------------------------------------------------------------------------------------


def cosine_correlation(fa: torch.Tensor, fb: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, C, h, w) x2 -> (B, Na, Nb) cosine similarity, with `eps` added to the squared norm."""
    fa = fa.flatten(2) / (fa.flatten(2).pow(2).sum(1, keepdim=True) + eps).sqrt()
    fb = fb.flatten(2) / (fb.flatten(2).pow(2).sum(1, keepdim=True) + eps).sqrt()
    return fa.transpose(1, 2) @ fb


def mutual_nn_filter(corr: torch.Tensor) -> torch.Tensor:
    """Soft mutual nearest-neighbour filter of (..., Na, Nb): ``C * (C / max_a C) * (C / max_b C)``; a zero maximum
    counts as 1e-30."""
    max_a = corr.amax(dim=-2, keepdim=True)
    max_b = corr.amax(dim=-1, keepdim=True)
    max_a = torch.where(max_a == 0, torch.full_like(max_a, 1e-30), max_a)
    max_b = torch.where(max_b == 0, torch.full_like(max_b, 1e-30), max_b)
    return corr * (corr / max_a) * (corr / max_b)


# -- the aggregator ---------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last dim of (M, T, D); qkv channels ordered q | k | v."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, t, d = x.shape
        q, k, v = self.qkv(x).view(m, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(m, t, d))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)


class AggregationBlock(nn.Module):
    """(B, L, N, D) -> same: intra-level attention (over N) + MLP, inter-level attention (over L) + MLP, pre-norm."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.intra_norm, self.intra_attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.intra_mlp_norm, self.intra_mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden)
        self.inter_norm, self.inter_attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.inter_mlp_norm, self.inter_mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, levels, n, d = x.shape
        x = x + self.intra_attn(self.intra_norm(x).reshape(b * levels, n, d)).view(b, levels, n, d)
        if levels > 1:  # a single level has no inter-level step (the official block skips both of these modules)
            x = x + self.intra_mlp(self.intra_mlp_norm(x))
            y = self.inter_norm(x).transpose(1, 2).reshape(b * n, levels, d)
            x = x + self.inter_attn(y).view(b, n, levels, d).transpose(1, 2)
        return x + self.inter_mlp(self.inter_mlp_norm(x))


class CostAggregator(nn.Module):
    """The swapping transformer: filtered correlation (B, L, Na, Nb) + appearance -> scores (B, Na, Nb)."""

    def __init__(self, levels: int, size: int, proj_dim: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        n = size * size
        dim = n + proj_dim
        self.size = size
        self.pos_x = nn.Parameter(torch.zeros(1, levels, 1, size, dim // 2))
        self.pos_y = nn.Parameter(torch.zeros(1, levels, size, 1, dim // 2))
        self.blocks = nn.Sequential(*[AggregationBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.proj = nn.Linear(dim, n)

    def position(self) -> torch.Tensor:
        """(1, L, N, D): x-embedding in the first half of the channels, y-embedding in the second."""
        s = self.size
        pos = torch.cat([self.pos_x.expand(-1, -1, s, -1, -1), self.pos_y.expand(-1, -1, -1, s, -1)], dim=-1)
        return pos.flatten(2, 3)

    def aggregate(self, corr: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """One pass: tokens are the rows of corr (B, L, N, N) with their appearance (B, L, N, P) appended."""
        return self.proj(self.blocks(torch.cat([corr, appearance], dim=-1) + self.position()))

    def forward(self, corr: torch.Tensor, app_a: torch.Tensor, app_b: torch.Tensor) -> torch.Tensor:
        x = self.aggregate(corr, app_a) + corr  # pass 1: tokens = cells of a
        x = self.aggregate(x.transpose(-1, -2), app_b).transpose(-1, -2) + corr  # pass 2: tokens = cells of b
        return x.mean(dim=1)


# -- the model --------------------------------------------------------------------------------------------------------


class CATs(nn.Module):
    """CATs on a registered backbone.

    ``model(a, b)`` -> flow (B, 2, fs, fs) on a's grid into b, in cells of the fs x fs grid (the official output with
    the official argument order ``model(target, source)``). ``model(a, b, over="source")`` reads the same scores the
    other way: flow on b's grid into a. `scores(a, b)` gives the refined volume R (B, Na, Nb) (a first).
    Inputs are normalised images (B, 3, H, W) of any size the backbone accepts; training and the official test use
    256 x 256.
    """

    def __init__(self, config: CatsConfig | None = None, pretrained_backbone: bool = False) -> None:
        super().__init__()
        self.config = config = config or CatsConfig()
        spec = get_backbone_spec(config.backbone)
        self.backbone = HyperpixelBackbone(spec, config.hyperpixels, config.feature_size, pretrained_backbone)
        self.proj = nn.ModuleList(nn.Linear(c, config.proj_dim) for c in self.backbone.channels)
        self.aggregator = CostAggregator(
            len(config.hyperpixels),
            config.feature_size,
            config.proj_dim,
            config.depth,
            config.num_heads,
            config.mlp_ratio,
        )
        self.softargmax = SoftArgmaxFlow(config.feature_size, config.beta, config.trainable_grid)
        self.preprocess = PreprocessConfig(size=(256, 256), mean=spec.mean, std=spec.std, antialias=True)
        self.readout: dict[str, Any] = {}
        self._init_head()

    @property
    def architecture(self) -> str:
        """The registry name, ``cats_<backbone>``."""
        return f"cats_{self.config.backbone}"

    def _init_head(self) -> None:
        for module in [*self.proj, *self.aggregator.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.aggregator.pos_x, std=0.02)
        nn.init.trunc_normal_(self.aggregator.pos_y, std=0.02)

    def correlation(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images -> filtered correlation (B, L, Na, Nb) and appearance (B, L, N, proj_dim) of a and of b."""
        taps_a, taps_b = self.backbone(a), self.backbone(b)  # separately, as in the official code (BN statistics)
        corr = torch.stack([cosine_correlation(fa, fb) for fa, fb in zip(taps_a, taps_b, strict=True)], dim=1)
        app_a = torch.stack([p(f.flatten(2).transpose(1, 2)) for p, f in zip(self.proj, taps_a, strict=True)], 1)
        app_b = torch.stack([p(f.flatten(2).transpose(1, 2)) for p, f in zip(self.proj, taps_b, strict=True)], 1)
        return mutual_nn_filter(corr), app_a, app_b

    def scores(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The aggregated matching scores R (B, Na, Nb), cells row-major, a first."""
        return self.aggregator(*self.correlation(a, b))

    def forward(self, a: torch.Tensor, b: torch.Tensor, over: Literal["source", "target"] = "target") -> torch.Tensor:
        return self.softargmax(self.scores(a, b), over=over)
