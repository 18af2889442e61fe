"""Regularised Hough matching over hyperpixel offsets, and HPF's box-voting keypoint transfer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...matching.geometry import gaussian_kernel


def cell_centres(grid: Sequence[int], size: Sequence[int], device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (x of each column (w,), y of each row (h,)) of an (h, w) grid over an (H, W) image, in pixels."""
    h, w = grid
    height, width = size
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * width / w - 0.5
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * height / h - 0.5
    return xs, ys


def hough_votes(
    mass: torch.Tensor,
    src_grid: Sequence[int],
    tgt_grid: Sequence[int],
    src_size: Sequence[int],
    tgt_size: Sequence[int],
    bins: int = 8192,
    kernel: int = 7,
    sigma: float = 1.0,
) -> torch.Tensor:
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
    votes = torch.zeros(ny * nx, device=mass.device, dtype=mass.dtype).index_add_(0, index.flatten(), mass.flatten())
    weight = gaussian_kernel(kernel, sigma).to(mass.device, mass.dtype)[None, None]
    smooth = F.conv2d(votes.view(1, 1, ny, nx), weight, padding=kernel // 2).flatten()
    return smooth[index]


def transfer_points(
    points: torch.Tensor,
    best: torch.Tensor,
    confidence: torch.Tensor,
    src_grid: Sequence[int],
    tgt_grid: Sequence[int],
    src_size: Sequence[int],
    tgt_size: Sequence[int],
    box_size: float,
) -> tuple[torch.Tensor, torch.Tensor]:
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
