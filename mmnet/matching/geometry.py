"""Coordinate conventions and score-map readouts (see docs/conventions.md).

Points are (x, y) pixels, pixel centres at integer coordinates. A feature grid of size (h, w) over an image of
size (H, W) is read with one of two conventions:

- ``"center"`` (our default): grid cell i covers pixels [i*W/w, (i+1)*W/w) and sits at its centre,
  ``g = (x + 0.5) * w / W - 0.5``.
- ``"corner"`` (the official MMNet code): ``g = x * w / W``; a cell sits at its top-left pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Convention = Literal["center", "corner"]


def _scale(image_size: Sequence[int], grid_size: Sequence[int], device: torch.device) -> torch.Tensor:
    """(w / W, h / H) as a (2,) tensor."""
    return torch.tensor([grid_size[1] / image_size[1], grid_size[0] / image_size[0]], device=device)


def pixels_to_grid(
    points: torch.Tensor, image_size: Sequence[int], grid_size: Sequence[int], convention: Convention = "center"
) -> torch.Tensor:
    """(..., 2) pixel xy in an image of (H, W) -> (..., 2) grid xy on a (h, w) grid."""
    scale = _scale(image_size, grid_size, points.device)
    if convention == "corner":
        return points * scale
    return (points + 0.5) * scale - 0.5


def grid_to_pixels(
    points: torch.Tensor, image_size: Sequence[int], grid_size: Sequence[int], convention: Convention = "center"
) -> torch.Tensor:
    """Inverse of `pixels_to_grid`."""
    scale = _scale(image_size, grid_size, points.device)
    if convention == "corner":
        return points / scale
    return (points + 0.5) / scale - 0.5


def rescale_points(points: torch.Tensor, size_from: Sequence[int], size_to: Sequence[int]) -> torch.Tensor:
    """Map pixel xy between two resizings of one image, (H, W) -> (H', W'), pixel-centre aligned."""
    return pixels_to_grid(points, size_from, size_to, "center")


def bilinear_cells(grid_points: torch.Tensor, grid_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The four cells around each point and their bilinear weights.

    (B, N, 2) grid xy -> flat cell indices (B, N, 4) and weights (B, N, 4) summing to 1; points are clamped
    into the grid first, so border points read the border cells.
    """
    h, w = grid_size
    x = grid_points[..., 0].clamp(0, w - 1)
    y = grid_points[..., 1].clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    cells = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    return cells, weights


def blend_rows(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rows of the 4 cells around each point (B, 4N, h, w) and weights (B, N, 4) -> (B, N, h, w)."""
    b, n = weights.shape[:2]
    return torch.einsum("bnkhw,bnk->bnhw", rows.view(b, n, 4, *rows.shape[-2:]), weights.to(rows.dtype))


def argmax_readout(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard argmax. (B, N, h, w) -> grid xy (B, N, 2) and the softmax probability of the maximum (B, N)."""
    w = scores.shape[-1]
    flat = scores.flatten(2).float()
    best = flat.argmax(dim=2)
    xy = torch.stack([best % w, torch.div(best, w, rounding_mode="floor")], dim=-1).float()
    return xy, flat.softmax(dim=2).gather(2, best.unsqueeze(2)).squeeze(2)


def soft_argmax_readout(scores: torch.Tensor, window: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-cell readout: softmax-weighted mean position in a window around the argmax.

    (B, N, h, w) -> grid xy (B, N, 2) and the softmax mass of the window (B, N), a confidence in [0, 1].
    """
    h, w = scores.shape[-2:]
    flat = scores.flatten(2).float()
    best = flat.argmax(dim=2)
    r = window // 2
    offsets = torch.arange(-r, r + 1, device=scores.device)
    ys = (torch.div(best, w, rounding_mode="floor").unsqueeze(-1) + offsets).unsqueeze(-1)  # (B, N, k, 1)
    xs = (best % w).unsqueeze(-1).unsqueeze(-2) + offsets  # (B, N, 1, k)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).flatten(2)
    local = flat.gather(2, index).masked_fill(~inside.flatten(2), float("-inf"))
    weights = local.softmax(dim=2)
    pos = torch.stack([xs.expand_as(inside), ys.expand_as(inside)], dim=-1).flatten(2, 3).float()
    xy = (weights.unsqueeze(-1) * pos).sum(dim=2)
    mass = (local - flat.logsumexp(dim=2, keepdim=True)).exp().sum(dim=2)
    return xy, mass


def gaussian_kernel(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size) centred on the middle cell."""
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def inside_image(points: torch.Tensor, size: Sequence[int], convention: Convention = "center") -> torch.Tensor:
    """(N, 2) pixel xy -> (N,) bool: inside an (H, W) image, i.e. x in [-0.5, W - 0.5] and y in [-0.5, H - 0.5]
    (``"corner"``: [0, W] x [0, H])."""
    lo = 0.0 if convention == "corner" else -0.5
    h, w = size
    return (points[:, 0] >= lo) & (points[:, 0] <= w + lo) & (points[:, 1] >= lo) & (points[:, 1] <= h + lo)


def tensor_hw(image: torch.Tensor) -> tuple[int, int]:
    """(H, W) of an image or map whose last two dimensions are height and width."""
    return int(image.shape[-2]), int(image.shape[-1])


def pixel_grid(size: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """The xy of every pixel of an (H, W) image, (H, W, 2) float32."""
    ys, xs = torch.meshgrid(
        torch.arange(size[0], device=device, dtype=torch.float32),
        torch.arange(size[1], device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], -1)
