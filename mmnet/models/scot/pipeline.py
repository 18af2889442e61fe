"""SCOT's scores for one pair: hyperpixels, cost, OT plan, Hough votes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .config import ScotConfig
from .hough import hough_votes
from .ot import saliency_masses, sinkhorn


class ScotScores(NamedTuple):
    """Final SCOT scores of one pair and the grids and resized image sizes they live on."""

    score: torch.Tensor  # (M, N) final SCOT scores
    src_grid: tuple[int, int]
    tgt_grid: tuple[int, int]
    src_size: tuple[int, int]  # resized (H, W)
    tgt_size: tuple[int, int]


def hyperpixels(features: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Selected maps (B, C_l, h_l, w_l) -> normalised hyperpixel features (B, D, h, w) on the finest selected grid."""
    maps = [F.normalize(features[i].float(), dim=1) for i in layers]
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    maps = [
        m if m.shape[-2:] == size else F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=True)
        for m in maps
    ]
    return F.normalize(torch.cat(maps, dim=1), dim=1)


def scot_scores(
    src: tuple[list[torch.Tensor], Any, tuple[int, int]],
    tgt: tuple[list[torch.Tensor], Any, tuple[int, int]],
    config: ScotConfig,
) -> ScotScores:
    """SCOT's final match scores (M, N) for one pair from (flat block outputs, saliency or None, resized size)."""
    hs_feat = hyperpixels(src[0], config.layers)[0]
    ht_feat = hyperpixels(tgt[0], config.layers)[0]
    src_grid = (int(hs_feat.shape[-2]), int(hs_feat.shape[-1]))
    tgt_grid = (int(ht_feat.shape[-2]), int(ht_feat.shape[-1]))
    cost = (hs_feat.flatten(1).T @ ht_feat.flatten(1)).clamp_(min=0).neg_().add_(1)  # 1 - max(cos, 0)
    mu = saliency_masses(src[1], src_grid).to(cost.device)
    nu = saliency_masses(tgt[1], tgt_grid).to(cost.device)
    ot = sinkhorn(cost, mu, nu, config.epsilon, config.iterations, config.tol)
    del cost
    mass = ot.plan.mul_(ot.plan.shape[0]).pow_(config.exponent)
    votes = hough_votes(mass, src_grid, tgt_grid, src[2], tgt[2], config.bins, config.kernel, config.sigma)
    return ScotScores(mass.mul_(votes), src_grid, tgt_grid, src[2], tgt[2])
