"""LPMFlow (Sun et al., CVPR 2024): layout-aware representation learning and multi-scale matching integration.

A clean-room re-implementation from a description of what the official code computes (docs/lpmflow.md):

1. **ViT backbone** (timm, e.g. ``vit_base_patch16_224``) run once on the source and target batch at
   ``vit_size`` (256: a 16 x 16 token grid); its absolute position table is resized once, DINO's way, when the
   weights are loaded (`dino_resize_pos_embed`), not at every call.
2. **LARL encoder** (`LarlEncoder`): one transformer over the 2 x (1 + g^2) source and target tokens, with a shared
   absolute table, a segment embedding per image and a region-based relative position bias between patch tokens
   (four regions: source->source, source->target, target->source, target->target).
3. **Cross-scale decoders** (`CrossScaleDecoder`) and the learned x2 **feature up-sampler** (`FeatureUpsampler`):
   matching maps on g->g, g->2g, 2g->g and 2g->2g grids (cross-attention probabilities summed over heads).
4. **Flow integration**: each map becomes a 2g x 2g soft-argmax flow, up-sampled to 8g x 8g; a Swin stack with
   shrinking windows (`FlowRefiner`) adds a residual to the finest one.

Output: `LpmflowOutput.flow` (B, 2, 8g, 8g) on the source grid, channels (dx, dy), source -> target, in cells of
that grid (4 pixels of the official 512 x 512 frame). Conventions for pixels: docs/conventions.md.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError, UnknownModelError, WeightsNotFoundError
from ..matching.images import PreprocessConfig
from .softargmax import SoftArgmaxFlow

__all__ = [
    "VIT_BACKBONES",
    "ChannelAttention",
    "CrossScaleDecoder",
    "FeatureUpsampler",
    "FlowRefiner",
    "LPMFlow",
    "LarlEncoder",
    "LpmflowConfig",
    "LpmflowOutput",
    "SwinStage",
    "VitBackbone",
    "VitBackboneSpec",
    "arf",
    "dino_resize_pos_embed",
    "larl_relative_index",
    "register_vit_backbone",
    "swin_relative_index",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- ViT backbones: one registry entry each ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VitBackboneSpec:
    """A timm ViT usable as LPMFlow's backbone.

    Attributes:
        name: registry name; the architecture is ``lpmflow_<name>``.
        timm_name: the timm architecture (its native image size fixes the stored position table).
        pretrained_tag: the timm hub tag loaded by ``pretrained_backbone=True`` (self-supervised weights).
        vit_size: the side the ViT sees (LPMFlow: 256 for patch 16, a 16 x 16 grid).
        timm_kwargs: extra ``timm.create_model`` arguments.
        mean, std: input normalisation of the pretrained weights.
    """

    name: str
    timm_name: str
    pretrained_tag: str | None
    vit_size: int
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


VIT_BACKBONES: dict[str, VitBackboneSpec] = {}


def register_vit_backbone(spec: VitBackboneSpec) -> VitBackboneSpec:
    """Add a ViT backbone; ``lpmflow_<spec.name>`` becomes buildable."""
    VIT_BACKBONES[spec.name] = spec
    return spec


def get_vit_backbone(name: str) -> VitBackboneSpec:
    if name not in VIT_BACKBONES:
        raise UnknownModelError(
            f"unknown LPMFlow ViT backbone {name!r}; registered: {', '.join(sorted(VIT_BACKBONES))}"
            " (add one with mmnet.models.lpmflow.register_vit_backbone)"
        )
    return VIT_BACKBONES[name]


# The official model: iBOT ViT-B/16 (architecture = timm vit_base_patch16_224; timm has no iBOT tag, DINO is the
# same architecture and self-supervised too).
register_vit_backbone(VitBackboneSpec("vit_base_patch16", "vit_base_patch16_224", "dino", 256))
register_vit_backbone(VitBackboneSpec("vit_small_patch16", "vit_small_patch16_224", "dino", 256))
register_vit_backbone(VitBackboneSpec("vit_base_patch14_dinov2", "vit_base_patch14_dinov2", "lvd142m", 224))
# Tests only: a 4-block ViT-Tiny seeing 64 x 64 (a 4 x 4 grid); never pretrained.
register_vit_backbone(VitBackboneSpec("vit_tiny_test", "vit_tiny_patch16_224", None, 64, {"depth": 4}))


def dino_resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Resize a (1, prefix + n*n, C) ViT position table to `grid` the way DINO/iBOT do at run time.

    Bicubic (a = -0.75, align_corners False) called with scale factors ``(g + 0.1) / n``: the sampling positions
    follow that factor, so this is not the same as resizing to size g (nor as timm's resampling). Prefix rows
    ([cls]) are kept.
    """
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    n = math.isqrt(patches.shape[1])
    if n * n != patches.shape[1]:
        raise InputError(f"position table with {patches.shape[1]} patch rows is not a square grid")
    if (n, n) == tuple(grid):
        return pos_embed
    dim = patches.shape[-1]
    table = patches.reshape(1, n, n, dim).permute(0, 3, 1, 2).float()
    table = F.interpolate(
        table, scale_factor=((grid[0] + 0.1) / n, (grid[1] + 0.1) / n), mode="bicubic", align_corners=False
    )
    if tuple(table.shape[-2:]) != tuple(grid):
        raise InputError(f"DINO resize of a {n}x{n} table gave {tuple(table.shape[-2:])}, not {tuple(grid)}")
    table = table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, table], 1)


class VitBackbone(nn.Module):
    """A timm ViT at ``vit_size`` whose forward returns all tokens after the final norm, (B, 1 + g^2, C).

    The position table is stored for the g x g grid; pretrained weights (timm hub tag, or a DINO/iBOT file
    through `load_self_supervised`) are resized to it once, DINO's way.
    """

    def __init__(self, spec: VitBackboneSpec, vit_size: int, pretrained: bool | str = False) -> None:
        super().__init__()
        import timm  # lazy: building the ViT is the only place that needs it

        self.spec = spec
        body: Any = timm.create_model(
            spec.timm_name, pretrained=False, num_classes=0, img_size=vit_size, **spec.timm_kwargs
        )
        self.body = body
        if getattr(self.body, "num_prefix_tokens", 1) != 1:
            raise InputError(
                f"{spec.timm_name} has {self.body.num_prefix_tokens} prefix tokens; LPMFlow needs "
                "exactly one [cls] token and no register tokens"
            )
        self.patch = int(body.patch_embed.patch_size[0])
        self.grid = vit_size // self.patch
        self.dim = int(body.embed_dim)
        if pretrained:
            self.load_timm_pretrained(pretrained if isinstance(pretrained, str) else spec.pretrained_tag)

    def load_timm_pretrained(self, tag: str | None) -> None:
        """Load ``timm_name.tag`` from timm's hub (needs network or a filled cache) and resize its table."""
        import timm

        if tag is None:
            raise InputError(
                f"ViT backbone {self.spec.name!r} has no pretrained tag; pass one, e.g. pretrained_backbone='dino'"
            )
        name = f"{self.spec.timm_name}.{tag}"
        try:
            native = timm.create_model(name, pretrained=True, num_classes=0, **self.spec.timm_kwargs)
        except Exception as exc:  # hub, network and unknown-tag errors come in many types
            raise WeightsNotFoundError(
                f"could not load timm weights {name!r} ({type(exc).__name__}: {exc}). Run once with network access "
                "to fill the Hugging Face cache, or load a local DINO/iBOT file with "
                "model.backbone.load_self_supervised(path)"
            ) from exc
        self.load_native_state_dict(native.state_dict())

    def load_self_supervised(self, path: str | Path) -> None:
        """Load a DINO/iBOT checkpoint file (read with ``weights_only=True``): the ``teacher`` (iBOT/DINO full
        checkpoint), ``state_dict`` or top-level dict, ``module.`` and ``backbone.`` prefixes removed, projection-head
        keys ignored, the ViT's keys loaded strictly and the position table resized once."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"self-supervised checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle and zip errors come in many types
            raise CheckpointError(f"cannot read {path} as a checkpoint of plain tensors ({exc})") from exc
        for key in ("teacher", "state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})")
        state = {
            k.replace("module.", "").replace("backbone.", ""): v for k, v in obj.items() if isinstance(v, torch.Tensor)
        }
        wanted = set(self.body.state_dict())
        missing = sorted(wanted - set(state))
        if missing:
            raise CheckpointError(
                f"{path} lacks {len(missing)} ViT tensors of {self.spec.timm_name}, e.g. "
                f"{missing[:3]}: it is not a {self.spec.timm_name} checkpoint"
            )
        self.load_native_state_dict({k: state[k] for k in wanted})

    def load_native_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Strictly load timm-named ViT weights at their native size, resizing the position table once."""
        state = dict(state)
        state["pos_embed"] = dino_resize_pos_embed(state["pos_embed"], (self.grid, self.grid))
        self.body.load_state_dict(state, strict=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(images)


# -- shared pieces ---------------------------------------------------------------------------------------------------


def arf(x: torch.Tensor) -> torch.Tensor:
    """LPMFlow's gate ``max(0, (e^{2x} - 1) / (e^{2x} + e^{-4}))``, in a form that never overflows.

    For x > 0 it equals ``(1 - e^{-2x}) / (1 + e^{-2x-4})``: 0 at 0, about 1.96 x near 0, 1 for large x.
    """
    e = torch.exp(-2 * x.clamp(min=0))
    return (1 - e) / (1 + e * math.exp(-4))


class Mlp(nn.Sequential):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


# -- LARL: the joint source-target encoder ---------------------------------------------------------------------------


def larl_relative_index(grid: int) -> torch.Tensor:
    """(2 g^2, 2 g^2) int64 index of the region-based relative position bias between patch tokens.

    Rows and columns are the source patches then the target patches (row-major); for query i and key j,
    ``((r_i - r_j + g - 1) * (2g - 1) + (c_i - c_j + g - 1)) * 4 + 2 * image_i + image_j``.
    """
    cells = torch.arange(grid * grid)
    r, c = (cells // grid).repeat(2), (cells % grid).repeat(2)
    image = torch.arange(2).repeat_interleave(grid * grid)
    offset = (r[:, None] - r[None] + grid - 1) * (2 * grid - 1) + (c[:, None] - c[None] + grid - 1)
    return offset * 4 + 2 * image[:, None] + image[None]


class LarlAttention(nn.Module):
    """Multi-head self-attention over [cls_s, source patches, cls_t, target patches] with the region bias."""

    rel_index: torch.Tensor  # a buffer

    def __init__(self, dim: int, heads: int, grid: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.grid = heads, grid
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.rel_table = nn.Parameter(torch.zeros(heads, (2 * grid - 1) ** 2 * 4))
        self.register_buffer("rel_index", larl_relative_index(grid), persistent=False)

    def bias(self) -> torch.Tensor:
        """(heads, N, N) additive logits: the table on patch-patch entries, 0 on rows/columns of both [cls]."""
        n = self.grid * self.grid
        patches = self.rel_table[:, self.rel_index]  # (heads, 2n, 2n)
        bias = patches.new_zeros(self.heads, 2 * n + 2, 2 * n + 2)
        keep = torch.cat([torch.arange(1, n + 1), torch.arange(n + 2, 2 * n + 2)]).to(bias.device)
        bias[:, keep[:, None], keep[None]] = patches
        return bias

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = _heads(self.qkv(x), 3 * self.heads).split(self.heads, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.drop(self.proj(_merge(out)))


class LarlBlock(nn.Module):
    def __init__(self, dim: int, heads: int, grid: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = LarlAttention(dim, heads, grid, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.attn.bias())
        return x + self.mlp(self.norm2(x))


class LarlEncoder(nn.Module):
    """Layout-aware representation learning: one pre-norm transformer over both images' tokens.

    ``forward(src (B, 1+g^2, C), tgt (B, 1+g^2, C)) -> (src', tgt')``. One absolute table (row 0 for both [cls],
    rows 1.. for both images' patches), a segment embedding per image on the patch tokens, and the region bias.
    """

    def __init__(
        self, dim: int, heads: int, grid: int, depth: int = 6, mlp_ratio: float = 4.0, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.src_segment = nn.Parameter(torch.zeros(1, 1, dim))
        self.tgt_segment = nn.Parameter(torch.zeros(1, 1, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(LarlBlock(dim, heads, grid, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        x = torch.cat(
            [
                src[:, :1] + cls_pos,
                src[:, 1:] + patch_pos + self.src_segment,
                tgt[:, :1] + cls_pos,
                tgt[:, 1:] + patch_pos + self.tgt_segment,
            ],
            1,
        )
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x.split(src.shape[1], 1)


# -- cross-scale decoders ----------------------------------------------------------------------------------------------


class CrossScaleDecoder(nn.Module):
    """One decoder block: self-attention on each side, cross-attention source -> target, matching map.

    ``forward(S (B, Ns, C), T (B, Nt, C))`` with N = 1 + grid^2 returns ``(S', T', C)``, C (B, Ns-1, Nt-1) the
    cross-attention probabilities summed over heads without the [cls] rows and columns (values in [0, heads]).
    Position tables exist for the sides this decoder sees: ``coarse`` (1 + g^2 rows) and/or ``fine``
    (1 + (2g)^2 rows), chosen by the token count. The source side adds ``norm2(S)`` after its self-attention
    (no MLP there), as the official code does.
    """

    def __init__(
        self, dim: int, heads: int, grid: int, coarse: bool, fine: bool, mlp_ratio: float = 4.0, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.heads = heads
        self.tables = nn.ParameterDict()
        for side in ("src", "tgt"):
            if coarse:
                self.tables[f"{side}_{grid * grid + 1}"] = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
            if fine:
                self.tables[f"{side}_{4 * grid * grid + 1}"] = nn.Parameter(torch.zeros(1, 4 * grid * grid + 1, dim))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.self_qkv = nn.Linear(dim, 3 * dim)
        self.self_proj = nn.Linear(dim, dim)
        self.cross_qkv = nn.Linear(dim, 3 * dim)  # q rows applied to the source, k and v rows to the target
        self.cross_proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def _table(self, side: str, n: int) -> torch.Tensor:
        key = f"{side}_{n}"
        if key not in self.tables:
            raise InputError(f"this decoder has no {side} position table for {n} tokens (has {list(self.tables)})")
        return self.tables[key]

    def _self_attention(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = _heads(self.self_qkv(x), 3 * self.heads).split(self.heads, 1)
        return self.drop(self.self_proj(_merge(F.scaled_dot_product_attention(q, k, v))))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = src + self._table("src", src.shape[1])
        tgt = tgt + self._table("tgt", tgt.shape[1])
        src = src + arf(self._self_attention(self.norm1(src)))
        src = src + self.norm2(src)
        tgt = tgt + arf(self._self_attention(self.norm1(tgt)))
        tgt = tgt + self.mlp(self.norm2(tgt))
        # cross-attention: only the query rows of the projection on the source, only key/value rows on the target
        dim = src.shape[-1]
        w, b = self.cross_qkv.weight, self.cross_qkv.bias
        q = _heads(F.linear(self.norm1(src), w[:dim], b[:dim]), self.heads)
        k, v = _heads(F.linear(self.norm1(tgt), w[dim:], b[dim:]), 2 * self.heads).split(self.heads, 1)
        attn = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), -1)
        delta = self.drop(self.cross_proj(_merge(attn @ v)))
        src = src + arf(delta)
        src = src + self.mlp(self.norm2(src))
        return src, tgt, attn.sum(1)[:, 1:, 1:]


# -- Swin stages: the feature up-sampler and the flow refiner ---------------------------------------------------------


def swin_relative_index(window: int) -> torch.Tensor:
    """(w^2, w^2) Swin relative position index: ``(dr + w - 1) * (2w - 1) + (dc + w - 1)``, d = query - key."""
    cells = torch.arange(window * window)
    r, c = cells // window, cells % window
    return (r[:, None] - r[None] + window - 1) * (2 * window - 1) + (c[:, None] - c[None] + window - 1)


class WindowAttention(nn.Module):
    rel_index: torch.Tensor  # a buffer

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("rel_index", swin_relative_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B', w^2, C) windows -> same."""
        q, k, v = _heads(self.qkv(x), 3 * self.heads).split(self.heads, 1)
        bias = self.rel_table[self.rel_index].permute(2, 0, 1)  # (heads, w^2, w^2)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))))


class SwinStage(nn.Module):
    """One non-shifted Swin block wrapped with a residual through a final norm, then channel attention.

    On a map x (B, C, H, W): ``y = x + norm(x + WMSA(norm1 x) + MLP(...))`` per window, then
    ``y + y * sigmoid(F(avgpool y) + F(maxpool y))``.
    """

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm = nn.LayerNorm(dim)
        self.channel = ChannelAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.window
        if h % s or w % s:
            raise InputError(f"a {h}x{w} map cannot be split into {s}x{s} windows")
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        win = tokens.reshape(b, h // s, s, w // s, s, c).transpose(2, 3).reshape(-1, s * s, c)
        y = win + self.attn(self.norm1(win))
        y = y + self.mlp(self.norm2(y))
        y = win + self.norm(y)
        y = y.view(b, h // s, w // s, s, s, c).transpose(2, 3).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.channel(y)


class ChannelAttention(nn.Module):
    """``x + x * sigmoid(fc(avgpool x) + fc(maxpool x))``, fc = 1x1 conv C -> C/16 -> ReLU -> C, no biases."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 1, bias=False), nn.ReLU(), nn.Conv2d(dim // reduction, dim, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)])
        a, m = self.fc(pooled).chunk(2)
        return x + x * torch.sigmoid(a + m)


class FeatureUpsampler(nn.Module):
    """The learned x2 feature super-resolution: [cls] unchanged; patch tokens bilinearly up-sampled, two Swin stages.

    ``forward((B, 1 + g^2, C)) -> (B, 1 + 4 g^2, C)``.
    """

    def __init__(self, dim: int, heads: int, window: int = 4, stages: int = 2) -> None:
        super().__init__()
        self.stages = nn.Sequential(*(SwinStage(dim, heads, window) for _ in range(stages)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        g = math.isqrt(n - 1)
        grid = tokens[:, 1:].transpose(1, 2).reshape(b, c, g, g)
        grid = F.interpolate(grid, size=(2 * g, 2 * g), mode="bilinear", align_corners=False)
        grid = self.stages(grid)
        return torch.cat([tokens[:, :1], grid.flatten(2).transpose(1, 2)], 1)


class FlowRefiner(nn.Module):
    """Coarse-to-fine Swin refinement: windows shrink (16, 8, 4); the stage outputs are summed and a conv head
    gives a 2-channel residual flow."""

    def __init__(self, dim: int = 96, heads: int = 8, windows: tuple[int, ...] = (16, 8, 4), hidden: int = 32) -> None:
        super().__init__()
        self.stages = nn.ModuleList(SwinStage(dim, heads, w) for w in windows)
        self.head = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for stage in self.stages:
            x = stage(x)
            total = x if total is None else total + x
        return self.head(total)


# -- the model -----------------------------------------------------------------------------------------------------


@dataclass
class LpmflowConfig:
    """Everything needed to rebuild an LPMFlow (stored in a checkpoint's config.json).

    backbone: a registered ViT backbone (`VIT_BACKBONES`); vit_size: the side it sees (None: the spec's);
    heads, encoder_depth, mlp_ratio, dropout: LARL encoder and decoders; proj_dim: source features fed to the
    refiner; refine_windows: Swin windows of the refiner (coarse to fine); refine_heads; upsampler_window;
    beta: soft-argmax temperature; topk, replaced: training-only foreground tokens (K best, of which
    `replaced` are overwritten).
    """

    backbone: str = "vit_base_patch16"
    vit_size: int | None = None
    heads: int = 8
    encoder_depth: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    proj_dim: int = 88
    refine_windows: tuple[int, ...] = (16, 8, 4)
    refine_heads: int = 8
    upsampler_window: int = 4
    beta: float = 0.02
    topk: int = 64
    replaced: int = 16

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["refine_windows"] = list(self.refine_windows)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LpmflowConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"unknown LPMFlow config keys {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        data = dict(data)
        if "refine_windows" in data:
            data["refine_windows"] = tuple(data["refine_windows"])
        return cls(**data)

    @classmethod
    def tiny(cls, **overrides: Any) -> LpmflowConfig:
        """A small-input configuration for tests: 4-block ViT-Tiny on 64 x 64 (4 x 4 grid), 2 encoder blocks."""
        base = {
            "backbone": "vit_tiny_test",
            "heads": 4,
            "encoder_depth": 2,
            "proj_dim": 16,
            "refine_windows": (8, 4, 2),
            "refine_heads": 2,
            "upsampler_window": 2,
            "topk": 8,
            "replaced": 4,
        }
        return cls(**{**base, **overrides})


class LpmflowOutput(NamedTuple):
    """flow (B, 2, 8g, 8g): final source -> target flow in cells of the 8g grid; corr (B, 4g^2, 4g^2): the finest
    matching map (source rows); source_tokens (B, 1 + g^2, C): the LARL source output; replaced (B, R) indices of
    the overwritten source patches (training with foreground replacement only, else None); coarse_flow: the
    finest soft-argmax flow before refinement (B, 2, 8g, 8g)."""

    flow: torch.Tensor
    corr: torch.Tensor
    source_tokens: torch.Tensor
    replaced: torch.Tensor | None
    coarse_flow: torch.Tensor


class LPMFlow(nn.Module):
    """LPMFlow: ``forward(source, target)`` on ImageNet-normalised (B, 3, H, W) images of any size.

    Images are resized (bilinear, no antialias, as the official code) to ``vit_size``; the output flow lives on an
    8g x 8g source grid (128 x 128 for ViT-B/16 at 256).
    """

    def __init__(self, config: LpmflowConfig | None = None, pretrained_backbone: bool | str = False) -> None:
        super().__init__()
        self.config = config = config or LpmflowConfig()
        spec = get_vit_backbone(config.backbone)
        vit_size = config.vit_size or spec.vit_size
        self.backbone = VitBackbone(spec, vit_size, pretrained=pretrained_backbone)
        g, dim = self.backbone.grid, self.backbone.dim
        if dim % config.heads:
            raise InputError(f"heads={config.heads} does not divide the ViT width {dim}")
        for w in config.refine_windows:
            if (8 * g) % w:
                raise InputError(f"refine window {w} does not divide the {8 * g}x{8 * g} flow grid")
        if (2 * g) % config.upsampler_window:
            raise InputError(f"upsampler_window {config.upsampler_window} does not divide the {2 * g} grid")
        self.vit_size, self.grid = vit_size, g
        self.preprocess_mean, self.preprocess_std = spec.mean, spec.std
        self.encoder = LarlEncoder(dim, config.heads, g, config.encoder_depth, config.mlp_ratio, config.dropout)
        self.train_source_pos = nn.Parameter(torch.zeros(1, g * g + 1, dim))  # added in training only
        dec: dict[str, Any] = {
            "dim": dim,
            "heads": config.heads,
            "grid": g,
            "mlp_ratio": config.mlp_ratio,
            "dropout": config.dropout,
        }
        self.decoder1 = CrossScaleDecoder(coarse=True, fine=False, **dec)
        self.decoder2 = CrossScaleDecoder(coarse=True, fine=True, **dec)
        self.decoder3 = CrossScaleDecoder(coarse=False, fine=True, **dec)
        self.upsampler = FeatureUpsampler(dim, config.heads, config.upsampler_window)
        self.soft_argmax = SoftArgmaxFlow(2 * g, config.beta)  # trainable grid, as in the official code
        self.source_proj = nn.Sequential(nn.Conv2d(dim, config.proj_dim, 1), nn.ReLU())
        self.feature_drop = nn.Dropout2d(0.5)
        refine_dim = config.proj_dim + 8
        if refine_dim % config.refine_heads:
            raise InputError(f"refine_heads={config.refine_heads} does not divide proj_dim + 8 = {refine_dim}")
        self.refiner = FlowRefiner(refine_dim, config.refine_heads, config.refine_windows)
        # the library's default input: straight to the ViT's size, antialiased (the official: 512, see the matcher)
        self.preprocess = PreprocessConfig(size=(vit_size, vit_size), mean=spec.mean, std=spec.std, antialias=True)
        self.readout: dict[str, Any] = {}
        self._init_head()

    def reset_buffers(self) -> None:
        """Recompute the relative-position index buffers (never stored in checkpoints), e.g. after ``to_empty``."""
        for module in self.modules():
            if isinstance(module, LarlAttention):
                module.rel_index = larl_relative_index(module.grid).to(module.rel_table.device)
            elif isinstance(module, WindowAttention):
                module.rel_index = swin_relative_index(module.window).to(module.rel_table.device)

    @property
    def architecture(self) -> str:
        """The registry name, ``lpmflow_<backbone>``."""
        return f"lpmflow_{self.config.backbone}"

    def _init_head(self) -> None:
        """The official initialisation of the head (the backbone keeps timm's, or its pretrained weights):
        truncated normal 0.02 for the encoder and Swin linear layers and tables, the encoder's absolute and
        segment embeddings; zeros for the decoders' tables and the training-only source table; PyTorch defaults
        for the decoders' linear layers and the convolutions."""
        for module in [*self.encoder.modules(), *self.upsampler.modules(), *self.refiner.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (LarlAttention, WindowAttention)):
                nn.init.trunc_normal_(module.rel_table, std=0.02)
        for table in (self.encoder.pos_embed, self.encoder.src_segment, self.encoder.tgt_segment):
            nn.init.trunc_normal_(table, std=0.02)

    @property
    def flow_size(self) -> tuple[int, int]:
        return 8 * self.grid, 8 * self.grid

    # -- stages --------------------------------------------------------------------------------------------------

    def tokens(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ViT tokens of both images, one batched backbone call: (B, 1 + g^2, C) each."""
        size = (self.vit_size, self.vit_size)
        images = [
            x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for x in (source, target)
        ]
        return self.backbone(torch.cat(images)).chunk(2)

    def replace_foreground(
        self, src: torch.Tensor, tgt: torch.Tensor, generator: random.Random | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-only: overwrite `replaced` of the `topk` most [cls]-like source patches by (cls_s + cls_t).

        The ranking score of patch i is cos(s_i, s_0) + cos(s_i, t_0). Returns the new source tokens and the
        replaced patch indices (B, R), 0-based on the g x g grid.
        """
        rng = generator or random
        k, r = self.config.topk, self.config.replaced
        with torch.no_grad():
            patches = F.normalize(src[:, 1:], dim=-1, eps=1e-6)
            score = (
                patches @ F.normalize(src[:, :1], dim=-1, eps=1e-6).transpose(1, 2)
                + patches @ F.normalize(tgt[:, :1], dim=-1, eps=1e-6).transpose(1, 2)
            )[..., 0]
            top = score.topk(min(k, score.shape[1]), 1).indices.tolist()
            chosen = torch.tensor([rng.sample(row, r) for row in top], device=src.device)
        fill = (src[:, 0] + tgt[:, 0]).detach()
        rows = torch.arange(src.shape[0], device=src.device)[:, None]
        src = src.clone()
        src[rows, chosen + 1] = fill[:, None]
        return src, chosen

    def correlations(self, s0: torch.Tensor, t0: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The four matching maps (11, 12, 21, 22) and the finest source features S3 (B, 1 + 4g^2, C)."""
        up = self.upsampler
        s1, t1, c11 = self.decoder1(s0, t0)
        s1_up, t1_up = up(torch.cat([s1, t1])).chunk(2)  # one batched call for both sides
        s12, t12_up, c12 = self.decoder2(s1, t1_up)
        s21_up, t21, c21 = self.decoder2(s1_up, t1)
        s12_up, t21_up = up(torch.cat([s12, t21])).chunk(2)
        s3, _, c22 = self.decoder3(s12_up + s21_up, t12_up + t21_up)
        return [c11, c12, c21, c22], s3

    def volumes(self, corrs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each map as a source-first (B, 4g^2, 4g^2) volume on the 2g x 2g grids; coarse sides are bilinearly
        up-sampled (align_corners True), the target side first."""
        g = self.grid
        b = corrs[0].shape[0]

        def up(x: torch.Tensor) -> torch.Tensor:  # (B, M, g*g) on a g x g grid -> (B, M, 4g^2)
            x = x.reshape(b, x.shape[1], g, g)
            return F.interpolate(x, size=(2 * g, 2 * g), mode="bilinear", align_corners=True).flatten(2)

        c11, c12, c21, c22 = corrs
        return [up(up(c11).transpose(1, 2)).transpose(1, 2), up(c12.transpose(1, 2)).transpose(1, 2), up(c21), c22]

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> LpmflowOutput:
        src, tgt = self.tokens(source, target)
        replaced = None
        if self.training and self.config.replaced > 0:
            src, replaced = self.replace_foreground(src, tgt)
        if self.training:
            src = src + self.train_source_pos
        s0, t0 = self.encoder(src, tgt)
        corrs, s3 = self.correlations(s0, t0)
        size = self.flow_size
        flows = [F.interpolate(self.soft_argmax(v), size=size, mode="nearest") * 4 for v in self.volumes(corrs)]
        b, g2 = s3.shape[0], 2 * self.grid
        feat = self.source_proj(s3[:, 1:].transpose(1, 2).reshape(b, -1, g2, g2))
        feat = self.feature_drop(F.interpolate(feat, size=size, mode="bilinear", align_corners=True))
        f11, f12, f21, f22 = flows
        residual = self.refiner(torch.cat([f11, feat, f12, f21, f22], 1))
        return LpmflowOutput(f22 + residual, corrs[3], s0, replaced, f22)
