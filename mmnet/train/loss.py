"""The multi-scale MMNet training loss, computed sparsely and vectorised.

For every level and both directions, each source keypoint's correlation row (bilinear blend of the four cells
around it, with the matching complement) becomes a softmax over target cells; the target is the four cells
around the true match weighted by inverse distance and blurred by a 3x3 Gaussian (sigma = 3 / (2 * 2.354));
the term is binary cross-entropy summed over cells and keypoints, divided by the batch size, summed over
levels and directions (docs/architecture.md, "Loss").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..matching.geometry import Convention, bilinear_cells, blend_rows, gaussian_kernel, pixels_to_grid
from ..models.mmnet import MMNet

GAUSSIAN_SIGMA = 3 / (2 * 2.354)


def soft_target(grid_points: torch.Tensor, grid_size: Sequence[int]) -> torch.Tensor:
    """Smoothed target maps: (B, N, 2) grid xy -> (B, N, h, w), mass on the 4 surrounding cells ~ 1/distance."""
    b, n = grid_points.shape[:2]
    h, w = grid_size
    x, y = grid_points[..., 0].clamp(0, w - 1), grid_points[..., 1].clamp(0, h - 1)
    xs = torch.stack([x.floor(), x.floor() + 1], -1).clamp(max=w - 1)  # (B, N, 2)
    ys = torch.stack([y.floor(), y.floor() + 1], -1).clamp(max=h - 1)
    cx, cy = xs[..., None, :].expand(b, n, 2, 2), ys[..., :, None].expand(b, n, 2, 2)
    dist = torch.hypot(cx - x[..., None, None], cy - y[..., None, None]).clamp(min=1e-5)
    distinct = (xs[..., None, :] != xs[..., None, :1]) | (torch.arange(2, device=xs.device) == 0)
    distinct = distinct & ((ys[..., :, None] != ys[..., :1, None]) | (torch.arange(2, device=ys.device) == 0)[:, None])
    weight = (distinct / dist).flatten(2)  # a corner clamped onto another one counts once
    weight = weight / weight.sum(-1, keepdim=True)
    index = (cy * w + cx).flatten(2).long()
    target = torch.zeros(b * n, h * w, device=grid_points.device).scatter_add_(
        1, index.view(b * n, 4), weight.view(b * n, 4)
    )
    blurred = F.conv2d(
        target.view(b * n, 1, h, w), gaussian_kernel(3, GAUSSIAN_SIGMA, grid_points.device)[None, None], padding=1
    )
    return blurred.view(b, n, h, w)


def softmax_bce(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE between softmax(scores) over each map and a soft target, summed over cells: (B, N, h, w) x2 -> (B, N)."""
    log_p = scores.flatten(2).float().log_softmax(dim=2)
    q = target.flatten(2)
    log_not_p = torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))
    return -(q * log_p + (1 - q) * log_not_p).sum(dim=2)


def _direction_loss(
    model: MMNet,
    src_feats: list[torch.Tensor],
    tgt_feats: list[torch.Tensor],
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    src_size: Sequence[int],
    tgt_size: Sequence[int],
    convention: Convention,
) -> torch.Tensor:
    total = src_kps.new_zeros(())
    for level in range(len(src_feats)):
        src_grid, tgt_grid = src_feats[level].shape[-2:], tgt_feats[level].shape[-2:]
        cells, weights = bilinear_cells(pixels_to_grid(src_kps, src_size, src_grid, convention), src_grid)
        rows = model.correlation_rows(src_feats, tgt_feats, cells.flatten(1), level)[-1]
        target = soft_target(pixels_to_grid(tgt_kps, tgt_size, tgt_grid, convention), tgt_grid)
        total = total + (softmax_bce(blend_rows(rows, weights), target) * valid).sum() / len(src_kps)
    return total


def mmnet_loss(
    model: MMNet,
    src: torch.Tensor,
    tgt: torch.Tensor,
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    convention: Convention = "center",
    levels: int = 0,
) -> torch.Tensor:
    """Loss of a batch of pairs.

    src, tgt: normalised images (B, 3, H, W); src_kps, tgt_kps: (B, N, 2) xy pixels of those images;
    valid: (B, N) bool; levels: sum over the coarsest `levels` levels only (0: all; finer SEMs are not run).
    Returns a scalar.
    """
    src_feats, tgt_feats = model.pair_features(src, tgt, up_to=(levels or model.num_levels) - 1)
    valid = valid.to(src_kps.dtype)
    sizes = src.shape[-2:], tgt.shape[-2:]
    forward = _direction_loss(model, src_feats, tgt_feats, src_kps, tgt_kps, valid, *sizes, convention)
    backward = _direction_loss(model, tgt_feats, src_feats, tgt_kps, src_kps, valid, *sizes[::-1], convention)
    return forward + backward
