"""SCOT (Liu et al., CVPR 2020): training-free semantic correspondence by optimal transport, in the `Matcher` API.

Pipeline for one pair (every step vectorised, nothing loops over hyperpixels or keypoints):

1. Both images are resized so that their longer side is `long_side` (300, aspect kept) and run through a frozen
   backbone of the registry (`mmnet.backbones`).
2. **Hyperpixels**: the selected block outputs are L2-normalised along channels, bilinearly up-sampled
   (align_corners=True) to the finest selected map, concatenated and normalised again.
   **Layer ids** index the flattened list of tapped blocks, finest scale group first, in network order
   (`layer_names(backbone)` lists them). EfficientNet-Lite2: 0-2 ``blocks.1.*`` (stride 4), 3-5 ``blocks.2.*``
   (stride 8), 6-13 ``blocks.3.*``/``blocks.4.*`` (stride 16), 14-19 ``blocks.5.*``/``blocks.6.0`` (stride 32).
   ResNets: id k is the (k+1)-th bottleneck/basic block (``layer1.0`` = 0), i.e. SCOT/HPF id k+1; SCOT's id 0
   (the stem) has no counterpart and maps to 0. Our taps are post-activation block outputs (SCOT: pre-ReLU).
3. **Cost** ``C = 1 - max(cos, 0)`` between all source and target hyperpixels.
4. **Point masses** ``mu, nu``: weight 0.5 per hyperpixel, raised to 0.8/0.9/1.0 where the saliency exceeds
   0.4/0.5/0.6, normalised to sum 1. Saliency ``"cam"``: class-activation map of the two top ImageNet classes from
   the pretrained classifier head (EfficientNet-Lite: ``conv_head`` + ``bn2`` + ``classifier``; ResNet: ``fc``),
   at scale 1 only (the reference also averages scales 1.5 and 2), max-normalised; ``"norm"``: the hyperpixel
   feature norm of the last tapped block, max-normalised; ``"uniform"``: equal masses.
5. **Entropic OT** by Sinkhorn scaling, ``K = exp(-C / epsilon)``, epsilon 0.05, stopped when the L1 error of the
   row marginal is below `tol` or after `iterations` updates. ``iterations=1`` reproduces the released SCOT code
   (one pair of scaling updates from a uniform start). Standard (not log-domain) scaling; if the plan has a NaN
   or infinity, epsilon is doubled and the solve retried, as in the reference. (With this cost ``K >= e^-20``, so
   in float32 the retry only triggers for a much smaller epsilon.) The plan is rescaled by the number of source
   hyperpixels and raised to `exponent` (default 2.0, the best of 0.5/1/2/4 on CUB training pairs; the
   reference uses 0.5 for PF-PASCAL/PF-WILLOW and 1.0 for SPair).
6. **Regularised Hough matching**: every (source, target) hyperpixel match votes with its rescaled OT mass into a
   2-D offset space of about `bins` (8,192) square bins spanning (Ws + Wt) x (Hs + Ht) pixels; the vote map is
   smoothed by a 7 x 7 Gaussian; final score = OT mass x smoothed vote of the match's offset bin.
7. **Keypoint transfer** (HPF's rule): every hyperpixel owns a square box of side `box_size` (27 resized pixels,
   the best of 1-99 on CUB training pairs; HPF ties 11/19/27/35 to the receptive field) centred on it; a
   keypoint moves to the average, over the source boxes containing it, of (centre of that box's best-scoring
   target box + offset of the keypoint from the source box centre). A keypoint inside no box (only possible at
   the border for small boxes) uses the nearest box; results are clamped into the target image. Margin boxes are
   not pruned.

Dense flow applies the same rule at every source hyperpixel centre (there it is a box filter of the per-hyperpixel
displacement field) and interpolates bilinearly to every source pixel. Scores in [0, 1]: the share of a source
hyperpixel's final score held by its best target, averaged over the boxes used.

Layer sets: `select_layers` (beam search scored by PCK@0.1, as in HPF) and ``python -m mmnet.scot select-layers``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, NamedTuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, BackboneSpec, get_backbone_spec, load_pretrained_backbone
from .backbones import list_backbones as _list_backbones
from .errors import InputError, UnknownModelError, WeightsNotFoundError
from .geometry import gaussian_kernel, rescale_points
from .images import ImageLike, PreprocessConfig, load_image, prepare
from .matcher import FlowResult, MatchResult, _as_points

Saliency = Literal["cam", "norm", "uniform"]

# Default layer sets (ids in our scheme, see the module docstring).
DEFAULT_LAYERS: dict[str, tuple[int, ...]] = {
    # chosen by `select_layers` on 100 CUB training pairs (docs/benchmarks.md)
    "efficientnet_lite2": (13, 14, 16),  # blocks.4.3, blocks.5.0, blocks.5.2
    "efficientnet_lite0": (9, 13, 14),  # blocks.4.2, blocks.5.3, blocks.6.0
    # untested: Lite1 has Lite2's block layout, so Lite2's ids
    "efficientnet_lite1": (13, 14, 16),
    # untested here (random weights only): the reference's published ids translated (SCOT id k -> k - 1, stem -> 0)
    "resnet18": (1, 4, 5, 6, 7),  # no published set: a guess in the spirit of the ResNet-50 one
    "resnet50": (1, 6, 10, 11, 12),  # HPF PF-PASCAL R50 (2,7,11,12,13)
    "resnet101": (1, 21, 23, 24, 26, 27, 28),  # SCOT PF-PASCAL/PF-WILLOW R101 (2,22,24,25,27,28,29)
    "resnext101": (1, 21, 23, 24, 26, 27, 28),  # same block layout as ResNet-101
    "fcn_resnet101": (1, 3, 4, 17, 18, 19, 23, 31),  # SCOT/HPF FCN (2,4,5,18,19,20,24,32)
}
UNTESTED = {"efficientnet_lite1", "resnet18", "resnet50", "resnet101", "resnext101",
            "fcn_resnet101"}


@dataclass(frozen=True)
class ScotConfig:
    """SCOT settings (see the module docstring for each step).

    layers: layer ids (flattened tapped blocks, finest group first). long_side: resize target of the longer side.
    epsilon: entropic regularisation. iterations: maximum Sinkhorn updates (1 = the released code). tol: stop when
    the L1 row-marginal error is below it. exponent: power of the rescaled plan. saliency: point masses.
    bins: RHM offset bins. kernel, sigma: the Gaussian smoothing the vote map (bins). box_size: transfer box side in
    resized pixels (27, one of HPF's receptive-field box sizes 11/19/27/35; best of 1-99 on CUB training pairs).
    """

    layers: tuple[int, ...]
    long_side: int = 300
    epsilon: float = 0.05
    iterations: int = 100
    tol: float = 1e-3
    exponent: float = 2.0
    saliency: Saliency = "cam"
    bins: int = 8192
    kernel: int = 7
    sigma: float = 1.0
    box_size: float = 27.0


# -- building blocks -----------------------------------------------------------------------------------------------


class SinkhornResult(NamedTuple):
    plan: torch.Tensor
    iterations: int
    error: float
    epsilon: float


def sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, epsilon: float = 0.05, iterations: int = 100,
             tol: float = 1e-3, max_retries: int = 10) -> SinkhornResult:
    """Entropic OT plan for cost (..., M, N) and marginals a (..., M), b (..., N) (each summing to 1).

    Scaling updates ``u = a / K v``, ``v = b / K^T u`` from ``v = 1`` until the L1 error of the row marginal is
    <= `tol` (the column marginal is exact after each update) or `iterations` updates ran. A non-finite plan
    doubles epsilon and retries. Returns the plan, the updates run, the final row-marginal error, epsilon used.
    """
    eps = float(epsilon)
    for _ in range(max_retries + 1):
        kernel = cost.mul(-1 / eps).exp_()
        v = torch.ones_like(b)
        u = torch.ones_like(a)
        count, kv = 0, kernel @ v.unsqueeze(-1)
        while count < iterations:
            if count and float((u * kv.squeeze(-1) - a).abs().sum(-1).max()) <= tol:
                break
            u = a / kv.squeeze(-1)
            v = b / (kernel.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
            kv = kernel @ v.unsqueeze(-1)
            count += 1
        error = float((u * kv.squeeze(-1) - a).abs().sum(-1).max())
        plan = kernel.mul_(u.unsqueeze(-1)).mul_(v.unsqueeze(-2))
        if math.isfinite(error) and torch.isfinite(plan).all():
            return SinkhornResult(plan, count, error, eps)
        eps *= 2
    raise InputError(f"Sinkhorn did not produce a finite plan up to epsilon {eps / 2:g}")


def cell_centres(grid: Sequence[int], size: Sequence[int], device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (x of each column (w,), y of each row (h,)) of an (h, w) grid over an (H, W) image, in pixels."""
    h, w = grid
    height, width = size
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * width / w - 0.5
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * height / h - 0.5
    return xs, ys


def hough_votes(mass: torch.Tensor, src_grid: Sequence[int], tgt_grid: Sequence[int], src_size: Sequence[int],
                tgt_size: Sequence[int], bins: int = 8192, kernel: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """Regularised Hough matching: the smoothed offset vote of every match, (M, N) for mass (M, N).

    Hyperpixels sit at the cell centres of `src_grid` (hs, ws) over `src_size` (Hs, Ws) and of `tgt_grid` over
    `tgt_size`; M = hs ws and N = ht wt, row-major. Offsets ``target - source`` span (Ws + Wt) x (Hs + Ht) pixels,
    cut into about `bins` square bins; each match adds its mass to its offset's bin; the vote map is smoothed
    with a `kernel` x `kernel` Gaussian (`sigma` in bins) and read back at each match's bin.
    """
    (hs, ws), (ht, wt) = src_grid, tgt_grid
    (height_s, width_s), (height_t, width_t) = src_size, tgt_size
    span_x, span_y = width_s + width_t, height_s + height_t
    side = math.sqrt(span_x * span_y / bins)
    nx, ny = math.ceil(span_x / side), math.ceil(span_y / side)
    xs, ys = cell_centres(src_grid, src_size, mass.device)
    xt, yt = cell_centres(tgt_grid, tgt_size, mass.device)
    bx = ((xt[None] - xs[:, None] + width_s) / side).floor().long().clamp_(0, nx - 1)  # (ws, wt)
    by = ((yt[None] - ys[:, None] + height_s) / side).floor().long().clamp_(0, ny - 1)  # (hs, ht)
    index = (by[:, None, :, None] * nx + bx[None, :, None, :]).reshape(hs * ws, ht * wt)
    votes = torch.zeros(ny * nx, device=mass.device, dtype=mass.dtype).index_add_(0, index.flatten(),
                                                                                   mass.flatten())
    weight = gaussian_kernel(kernel, sigma).to(mass.device, mass.dtype)[None, None]
    smooth = F.conv2d(votes.view(1, 1, ny, nx), weight, padding=kernel // 2).flatten()
    return smooth[index]


def hyperpixels(features: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Selected maps (B, C_l, h_l, w_l) -> normalised hyperpixel features (B, D, h, w) on the finest selected grid."""
    maps = [F.normalize(features[i].float(), dim=1) for i in layers]
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    maps = [m if m.shape[-2:] == size else F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=True)
            for m in maps]
    return F.normalize(torch.cat(maps, dim=1), dim=1)


def saliency_masses(saliency: torch.Tensor | None, grid: Sequence[int]) -> torch.Tensor:
    """Saliency map (h', w') in [0, 1] (or None: uniform) -> point masses (h w,) on `grid`, summing to 1."""
    n = grid[0] * grid[1]
    if saliency is None:
        return torch.full((n,), 1.0 / n)
    sal = F.interpolate(saliency[None, None].float(), size=tuple(grid), mode="bilinear", align_corners=True)
    sal = sal.flatten()
    weight = torch.full_like(sal, 0.5)
    for level, value in ((0.4, 0.8), (0.5, 0.9), (0.6, 1.0)):
        weight = torch.where(sal > level, torch.full_like(sal, value), weight)
    return weight / weight.sum()


def transfer_points(points: torch.Tensor, best: torch.Tensor, confidence: torch.Tensor, src_grid: Sequence[int],
                    tgt_grid: Sequence[int], src_size: Sequence[int], tgt_size: Sequence[int],
                    box_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """HPF/SCOT box-voting transfer of (K, 2) source points (resized source pixels) -> (K, 2) resized target pixels
    and (K,) scores. `best` (M,) is each source hyperpixel's best target index, `confidence` (M,) its score."""
    xs, ys = cell_centres(src_grid, src_size, points.device)
    xt, yt = cell_centres(tgt_grid, tgt_size, points.device)
    src_c = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)  # (M, 2) row-major
    tgt_c = torch.stack(torch.meshgrid(xt, yt, indexing="xy"), -1).reshape(-1, 2)
    shift = tgt_c[best] - src_c  # (M, 2) displacement of each source box
    delta = (points[:, None] - src_c[None]).abs()  # (K, M, 2)
    inside = (delta <= box_size / 2).all(-1)
    nearest = torch.zeros_like(inside).scatter_(1, delta.pow(2).sum(-1).argmin(1, keepdim=True), True)
    use = torch.where(inside.any(1, keepdim=True), inside, nearest).float()
    count = use.sum(1, keepdim=True)
    return points + use @ shift / count, (use @ confidence[:, None]).squeeze(1) / count.squeeze(1)


# -- the matcher ---------------------------------------------------------------------------------------------------


class _CamHead(nn.Module):
    """Class-activation maps from the pretrained ImageNet head applied to the last tapped block."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        net = timm.create_model(spec.timm_name, pretrained=False, num_classes=1000, **spec.timm_kwargs)
        if spec.packaged_weights is None and spec.timm_pretrained_tag is None:
            raise WeightsNotFoundError(f"{spec.name} has no ImageNet classifier: use saliency='norm' or 'uniform'")
        try:
            load_pretrained_backbone(net, spec)
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(f"no ImageNet classifier for the CAM of {spec.name}: {exc}; use "
                                       "saliency='norm' or 'uniform'") from exc
        parts = [m for m in (getattr(net, "conv_head", None), getattr(net, "bn2", None)) if m is not None]
        self.head = nn.Sequential(*parts) if parts else nn.Identity()
        self.classifier = net.get_classifier()

    def forward(self, last: torch.Tensor) -> torch.Tensor:
        """(1, C, h, w) last block output -> (h, w) CAM of the top-2 classes, max-normalised to [0, 1]."""
        feat = self.head(last)
        top = self.classifier(feat.mean((2, 3))).topk(2, dim=1).indices[0]
        cam = torch.einsum("kc,chw->hw", self.classifier.weight[top], feat[0]).clamp(min=0)
        return cam / cam.max().clamp(min=1e-12)


class _Pair(NamedTuple):
    score: torch.Tensor  # (M, N) final SCOT scores
    src_grid: tuple[int, int]
    tgt_grid: tuple[int, int]
    src_size: tuple[int, int]  # resized (H, W)
    tgt_size: tuple[int, int]


class ScotMatcher:
    """SCOT keypoint transfer and dense flow with any registered backbone; same API as `mmnet.Matcher`.

    Args:
        backbone: a registered backbone name (``"efficientnet_lite2"``, ``"resnet101"``, ...) or a `Backbone`.
        layers: layer ids (default: `DEFAULT_LAYERS`); see the module docstring for the id scheme.
        pretrained: load ImageNet weights into the backbone (False: random weights, for tests only).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        **settings: `ScotConfig` fields (long_side, epsilon, iterations, tol, exponent, saliency, bins, ...).
            saliency defaults to ``"cam"`` with pretrained weights, else ``"uniform"``.
    """

    def __init__(self, backbone: str | Backbone = "efficientnet_lite2", layers: Sequence[int] | None = None, *,
                 pretrained: bool = True, device: str | torch.device | None = None, **settings: Any) -> None:
        unknown = set(settings) - {f.name for f in fields(ScotConfig)}
        if unknown:
            raise InputError(f"unknown SCOT settings {sorted(unknown)}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(backbone, str):
            backbone = Backbone(get_backbone_spec(backbone), pretrained=pretrained)
        self.backbone = backbone.eval().to(self.device)
        self.spec = backbone.spec
        self.layer_names = [b for g in backbone.groups for b in g.blocks]
        layers = tuple(DEFAULT_LAYERS.get(self.spec.name, (len(self.layer_names) - 1,)) if layers is None
                       else (int(i) for i in layers))
        if not layers or any(not 0 <= i < len(self.layer_names) for i in layers):
            raise InputError(f"layer ids must be in [0, {len(self.layer_names) - 1}] for {self.spec.name}; "
                             f"got {layers}")
        settings.setdefault("saliency", "cam" if pretrained else "uniform")
        self.config = ScotConfig(layers=tuple(sorted(set(layers))), **settings)
        if self.config.saliency not in ("cam", "norm", "uniform"):
            raise InputError(f"saliency must be 'cam', 'norm' or 'uniform', got {self.config.saliency!r}")
        self.cam = _CamHead(self.spec).eval().to(self.device) if self.config.saliency == "cam" else None
        self.name = f"scot_{self.spec.name}"

    @classmethod
    def from_pretrained(cls, name: str, *, device: str | torch.device | None = None, preset: str | None = None,
                        local_files_only: bool = False, **kwargs: Any) -> ScotMatcher:
        """``"scot_<backbone>"`` for every registered backbone -> a ScotMatcher with ImageNet weights.

        `preset` must be None or ``"default"``; `local_files_only` is accepted for API parity (packaged weights
        need no network; timm hub weights obey the hub's own offline setting); kwargs go to `ScotMatcher`.
        """
        kwargs.pop("revision", None)
        kwargs.pop("cache_dir", None)
        if preset not in (None, "default"):
            raise InputError(f"SCOT has no preset {preset!r}")
        backbone = str(name).removeprefix("scot_")
        if not str(name).startswith("scot_") or backbone not in _list_backbones():
            raise UnknownModelError(f"unknown SCOT model {name!r}; available: {', '.join(list_models())}")
        return cls(backbone, device=device, **kwargs)

    # -- internals ----------------------------------------------------------------------------------------------

    def _resized(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        s = self.config.long_side / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))

    def _features(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, tuple[int, int]]:
        """(3, H, W) in [0, 1] -> flat block outputs, CAM (or None) and the resized (H', W')."""
        size = self._resized((int(image.shape[1]), int(image.shape[2])))
        cfg = PreprocessConfig(size=size, mean=self.spec.mean, std=self.spec.std)
        feats = [f for group in self.backbone(prepare(image[None].to(self.device), cfg)) for f in group]
        sal = None
        if self.config.saliency == "cam":
            sal = self.cam(feats[-1])
        elif self.config.saliency == "norm":
            sal = feats[-1][0].norm(dim=0)
            sal = sal / sal.max().clamp(min=1e-12)
        return feats, sal, size

    def _pair(self, src: tuple[list[torch.Tensor], Any, tuple[int, int]],
              tgt: tuple[list[torch.Tensor], Any, tuple[int, int]]) -> _Pair:
        return scot_scores(src, tgt, self.config)

    # -- public API ---------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def match_batch(self, sources: Sequence[ImageLike], targets: Sequence[ImageLike],
                    keypoints: Sequence[Any]) -> list[MatchResult]:
        """`match` for several pairs (run one pair at a time: SCOT's images keep their own aspect ratio)."""
        if not len(sources) == len(targets) == len(keypoints):
            raise InputError(f"got {len(sources)} sources, {len(targets)} targets, {len(keypoints)} keypoint sets")
        return [self.match(s, t, k) for s, t, k in zip(sources, targets, keypoints, strict=True)]

    @torch.inference_mode()
    def match(self, source: ImageLike, target: ImageLike, keypoints: Any) -> MatchResult:
        """Transfer `keypoints` ((N, 2) xy pixels of `source`) to `target`; returns target pixels and scores."""
        points = _as_points(keypoints)
        src_img, tgt_img = load_image(source), load_image(target)
        src_size, tgt_size = tuple(src_img.shape[1:]), tuple(tgt_img.shape[1:])
        pair = self._pair(self._features(src_img), self._features(tgt_img))
        return transfer_keypoints(pair, points, src_size, tgt_size, self.config.box_size)

    @torch.inference_mode()
    def flow_batch(self, sources: Sequence[ImageLike], targets: Sequence[ImageLike]) -> list[FlowResult]:
        """`flow` for several pairs (one pair at a time)."""
        if len(sources) != len(targets):
            raise InputError(f"got {len(sources)} sources and {len(targets)} targets")
        return [self.flow(s, t) for s, t in zip(sources, targets, strict=True)]

    @torch.inference_mode()
    def flow(self, source: ImageLike, target: ImageLike) -> FlowResult:
        """Dense flow from every `source` pixel to `target`: the keypoint-transfer rule at every source
        hyperpixel centre (a box filter of the displacement field), interpolated bilinearly to each pixel."""
        src_img, tgt_img = load_image(source), load_image(target)
        src_size, tgt_size = tuple(src_img.shape[1:]), tuple(tgt_img.shape[1:])
        pair = self._pair(self._features(src_img), self._features(tgt_img))
        return dense_flow(pair, src_size, tgt_size, self.config.box_size)

    def warp(self, source: ImageLike, target: ImageLike) -> torch.Tensor:
        """The source image resampled into the target's frame (3, Ht, Wt), using ``flow(target, source)``."""
        from .matcher import warp_image

        return warp_image(load_image(source), self.flow(target, source).flow)


def scot_scores(src: tuple[list[torch.Tensor], Any, tuple[int, int]],
                tgt: tuple[list[torch.Tensor], Any, tuple[int, int]], config: ScotConfig) -> _Pair:
    """SCOT's final match scores (M, N) for one pair from (flat block outputs, saliency or None, resized size)."""
    hs_feat = hyperpixels(src[0], config.layers)[0]
    ht_feat = hyperpixels(tgt[0], config.layers)[0]
    src_grid, tgt_grid = tuple(hs_feat.shape[-2:]), tuple(ht_feat.shape[-2:])
    cost = (hs_feat.flatten(1).T @ ht_feat.flatten(1)).clamp_(min=0).neg_().add_(1)  # 1 - max(cos, 0)
    mu = saliency_masses(src[1], src_grid).to(cost.device)
    nu = saliency_masses(tgt[1], tgt_grid).to(cost.device)
    ot = sinkhorn(cost, mu, nu, config.epsilon, config.iterations, config.tol)
    del cost
    mass = ot.plan.mul_(ot.plan.shape[0]).pow_(config.exponent)
    votes = hough_votes(mass, src_grid, tgt_grid, src[2], tgt[2], config.bins, config.kernel, config.sigma)
    return _Pair(mass.mul_(votes), src_grid, tgt_grid, src[2], tgt[2])


def _best(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top, best = score.max(dim=1)
    return best, top / score.sum(dim=1).clamp(min=1e-30)


def _clamp(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamp (..., 2) pixel xy into an (H, W) image, [-0.5, W - 0.5] x [-0.5, H - 0.5]."""
    return torch.stack([points[..., 0].clamp(-0.5, size[1] - 0.5), points[..., 1].clamp(-0.5, size[0] - 0.5)], -1)


def transfer_keypoints(pair: _Pair, points: torch.Tensor, src_size: tuple[int, int], tgt_size: tuple[int, int],
                       box_size: float) -> MatchResult:
    """Source keypoints (K, 2) in original source pixels -> MatchResult in original target pixels."""
    if len(points) == 0:
        return MatchResult(torch.zeros(0, 2), torch.zeros(0))
    h, w = src_size
    inside = (points[:, 0] >= -0.5) & (points[:, 0] <= w - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] <= h - 0.5)
    best, conf = _best(pair.score)
    resized = rescale_points(points.to(pair.score.device), src_size, pair.src_size)
    out, scores = transfer_points(resized, best, conf, pair.src_grid, pair.tgt_grid, pair.src_size, pair.tgt_size,
                                  box_size)
    out = _clamp(rescale_points(out, pair.tgt_size, tgt_size), tgt_size).cpu()
    scores = scores.clamp(0, 1).cpu()
    return MatchResult(out.masked_fill(~inside[:, None], float("nan")), scores.masked_fill(~inside, 0.0))


def dense_flow(pair: _Pair, src_size: tuple[int, int], tgt_size: tuple[int, int], box_size: float) -> FlowResult:
    """FlowResult (2, Hs, Ws) at the original source size (see `ScotMatcher.flow`)."""
    (h, w), device = pair.src_grid, pair.score.device
    best, conf = _best(pair.score)
    xs, ys = cell_centres(pair.src_grid, pair.src_size, device)
    xt, yt = cell_centres(pair.tgt_grid, pair.tgt_size, device)
    src_c = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    tgt_c = torch.stack(torch.meshgrid(xt, yt, indexing="xy"), -1).reshape(-1, 2)
    fields_ = torch.cat([tgt_c[best] - src_c, conf[:, None]], 1).T.reshape(1, 3, h, w)
    ry = int(box_size / 2 // (pair.src_size[0] / h))
    rx = int(box_size / 2 // (pair.src_size[1] / w))
    pooled = F.avg_pool2d(fields_, (2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx), count_include_pad=False)
    # per-cell target position in original target pixels, and score
    target = src_c + pooled[0, :2].reshape(2, -1).T
    target = _clamp(rescale_points(target, pair.tgt_size, tgt_size), tgt_size).T.reshape(2, h, w)
    cell_map = torch.cat([target, pooled[0, 2:]], 0)
    height, width = src_size
    py, px = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    pixels = torch.stack([px, py], -1)
    g = rescale_points(pixels, src_size, (h, w))  # grid coordinates of every source pixel (centre convention)
    norm = torch.stack([g[..., 0] / max(w - 1, 1), g[..., 1] / max(h - 1, 1)], -1) * 2 - 1
    dense = F.grid_sample(cell_map[None], norm[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
    return FlowResult((dense[:2] - pixels.permute(2, 0, 1)).cpu(), dense[2].clamp(0, 1).cpu())


def list_models() -> list[str]:
    """``scot_<backbone>`` for every registered backbone."""
    return [f"scot_{b}" for b in _list_backbones()]


def layer_names(backbone: str) -> list[str]:
    """The tapped block of each layer id for a registered backbone (builds it with random weights)."""
    net = Backbone(get_backbone_spec(backbone), pretrained=False)
    return [b for g in net.groups for b in g.blocks]


# -- layer selection (HPF's beam search) ---------------------------------------------------------------------------


class LayerScorer:
    """PCK@`alpha` of SCOT layer sets on the first `n_pairs` pairs of `dataset` (backbone features computed once).

    All settings except the layers come from `matcher.config`; ``scorer(layers)`` returns the per-pair mean PCK
    in %, cached in ``scorer.scored``.
    """

    def __init__(self, matcher: ScotMatcher, dataset: Any, n_pairs: int = 50, alpha: float = 0.1,
                 threshold: str | None = None, log: Any = print) -> None:
        self.matcher, self.alpha, self.log = matcher, alpha, log
        self.threshold = threshold or dataset.default_threshold
        self.scored: dict[tuple[int, ...], float] = {}
        self.start = time.perf_counter()
        self.cache = []
        with torch.inference_mode():
            for i in range(min(n_pairs, len(dataset))):
                src, tgt, rec = dataset.load(i)
                if not rec.n_valid:
                    continue
                s_img, t_img = load_image(src), load_image(tgt)
                points = torch.as_tensor(rec.src_kps[rec.valid], dtype=torch.float32)
                self.cache.append((matcher._features(s_img), matcher._features(t_img), points,
                                   tuple(s_img.shape[1:]), tuple(t_img.shape[1:]), rec))
        log(f"features of {len(self.cache)} pairs in {time.perf_counter() - self.start:.0f} s")

    def __call__(self, layers: Sequence[int]) -> float:
        from mmnet.eval.pck import score_pair

        layers = tuple(sorted(set(layers)))
        if layers not in self.scored:
            cfg = replace(self.matcher.config, layers=layers)
            hits = []
            with torch.inference_mode():
                for s, t, points, s_size, t_size, rec in self.cache:
                    pair = scot_scores(s, t, cfg)
                    pred = transfer_keypoints(pair, points, s_size, t_size, cfg.box_size).keypoints.numpy()
                    dist, length = score_pair(pred, rec, self.threshold)
                    hits.append(float(np.mean(dist <= self.alpha * length)))
            self.scored[layers] = 100 * float(np.mean(hits))
            self.log(f"  {layers}: PCK@{self.alpha:g} {self.scored[layers]:.2f}  "
                     f"({time.perf_counter() - self.start:.0f} s)")
        return self.scored[layers]


def select_layers(matcher: ScotMatcher, dataset: Any, n_pairs: int = 50, beam: int = 4, max_depth: int = 8,
                  candidates: Sequence[int] | None = None, alpha: float = 0.1, threshold: str | None = None,
                  log: Any = print) -> tuple[tuple[int, ...], float, list[tuple[tuple[int, ...], float]]]:
    """Beam search for the layer set with the best PCK@`alpha` on the first `n_pairs` pairs of `dataset`.

    As HPF: every single candidate layer is scored; the `beam` best sets are extended by one candidate layer
    deeper than the set's base (first) layer; the `beam` best new sets form the next beam, up to `max_depth` layers;
    the search stops early when a depth brings no improvement. All other settings come from `matcher.config`.
    Returns (best set, its PCK in %, every scored set best first).
    """
    scorer = LayerScorer(matcher, dataset, n_pairs, alpha, threshold, log)
    candidates = sorted(set(range(len(matcher.layer_names)) if candidates is None else candidates))
    frontier = sorted(((c,) for c in candidates), key=scorer, reverse=True)[:beam]
    best = frontier[0]
    for depth in range(2, max_depth + 1):
        new = {tuple(sorted((*s, c))) for s in frontier for c in candidates if c > s[0] and c not in s}
        if not new:
            break
        frontier = sorted(new, key=scorer, reverse=True)[:beam]
        log(f"depth {depth}: best {frontier[0]} {scorer.scored[frontier[0]]:.2f}")
        if scorer.scored[frontier[0]] <= scorer.scored[best]:
            break
        best = frontier[0]
    return best, scorer.scored[best], sorted(scorer.scored.items(), key=lambda kv: -kv[1])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmnet.scot select-layers --backbone efficientnet_lite2 --dataset cub --root DIR --pairs CSV``."""
    parser = argparse.ArgumentParser(prog="python -m mmnet.scot")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("select-layers", help="beam search for a SCOT layer set on validation pairs")
    p.add_argument("--backbone", default="efficientnet_lite2")
    p.add_argument("--dataset", required=True, help="pf-pascal, pf-willow, spair or cub")
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--pairs", help="pair list (e.g. the CUB training pairs)")
    p.add_argument("--n-pairs", type=int, default=50)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--max-depth", type=int, default=8)
    p.add_argument("--candidates", type=int, nargs="+")
    p.add_argument("--iterations", type=int, default=ScotConfig.iterations, help="Sinkhorn updates (max)")
    p.add_argument("--long-side", type=int, default=ScotConfig.long_side)
    p.add_argument("--exponent", type=float, default=ScotConfig.exponent, help="power of the rescaled OT plan")
    p.add_argument("--box-size", type=float, default=ScotConfig.box_size, help="transfer box side, resized pixels")
    p.add_argument("--saliency", default=None, choices=["cam", "norm", "uniform"])
    p.add_argument("--score", type=str, nargs="+", metavar="IDS",
                   help="only score these comma-separated layer sets (e.g. 13,14,19 3,12) instead of searching")
    p.add_argument("--device")
    args = parser.parse_args(argv)
    from mmnet.data import load_dataset

    torch.manual_seed(0)
    dataset = load_dataset(args.dataset, args.root, split=args.split, pairs=args.pairs)
    settings: dict[str, Any] = {"iterations": args.iterations, "long_side": args.long_side,
                                "exponent": args.exponent, "box_size": args.box_size}
    if args.saliency:
        settings["saliency"] = args.saliency
    matcher = ScotMatcher(args.backbone, device=args.device, **settings)
    if args.score:
        scorer = LayerScorer(matcher, dataset, args.n_pairs)
        for text in args.score:
            scorer([int(v) for v in text.split(",")])
        return 0
    best, score, _ = select_layers(matcher, dataset, args.n_pairs, args.beam, args.max_depth, args.candidates)
    print(f"best layers {' '.join(map(str, best))}  PCK@0.1 {score:.2f}  "
          f"({', '.join(matcher.layer_names[i] for i in best)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
