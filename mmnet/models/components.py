"""The MMNet building blocks, each usable on its own with any backbone.

Shapes use B batch, C channels, (h, w) a feature grid; correlation volumes are (B, hs, ws, ht, wt), source
grid first. See docs/architecture.md for where each block follows the paper or the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def nearest_indices(size_out: int, size_in: int, device: torch.device | None = None) -> torch.Tensor:
    """Coarse index of each fine index for an integer stride ratio: ``min(i // ratio, size_in - 1)``.

    Equal to ``F.interpolate(mode="nearest")`` when `size_out` is a multiple of `size_in`; for odd sizes it
    follows the stride geometry (fine cell i lies in coarse cell i // ratio).
    """
    ratio = max(1, round(size_out / size_in))
    return (torch.arange(size_out, device=device) // ratio).clamp_(max=size_in - 1)


def fit_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop or replicate-pad the last two dims of `x` (..., h, w) to `size` (used after x2 up-sampling)."""
    h, w = x.shape[-2:]
    x = x[..., : size[0], : size[1]]
    pad_h, pad_w = max(0, size[0] - h), max(0, size[1] - w)
    if pad_h or pad_w:
        lead = x.shape[:-2]
        x = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (0, pad_w, 0, pad_h), mode="replicate")
        x = x.reshape(*lead, *x.shape[-2:])
    return x


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest up-sampling of the last two dims (..., h, w) -> (..., *size) by integer ratios.

    Output cell j reads input cell ``min(j // ratio, h - 1)``, the same rule as `nearest_indices`.
    """
    h, w = x.shape[-2:]
    ry, rx = max(1, round(size[0] / h)), max(1, round(size[1] / w))
    if (ry, rx) != (1, 1):
        lead = x.shape[:-2]
        x = x[..., :, None, :, None].expand(*lead, h, ry, w, rx).reshape(*lead, h * ry, w * rx)
    return fit_to(x, size)


class SEM(nn.Module):
    """Scale enhancement module: a 3x3 conv, three dilated 3x3 branches summed with it, a 1x1 projection.

    ``(B, C_in, H, W) -> (B, out_channels, H, W)``. ReLU follows the first conv and every branch; the
    projection is linear. Zero padding, as in the official code.
    """

    def __init__(
        self, in_channels: int, mid_channels: int = 32, out_channels: int = 21, dilations: Sequence[int] = (4, 8, 12)
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.branches = nn.ModuleList(
            nn.Conv2d(mid_channels, mid_channels, 3, padding=d, dilation=d) for d in dilations
        )
        self.down = nn.Conv2d(mid_channels, out_channels, 1)
        for conv in (self.conv, *self.branches):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.relu(self.conv(x))
        out = base
        for branch in self.branches:
            out = out + F.relu(branch(base))
        return self.down(out)


class LocalSelfAttention(nn.Module):
    """Residual attention over each pixel's k x k neighbourhood with cosine affinities.

    ``(B, C, H, W) -> (B, C, H, W)``: ``x + W_back(sum_n softmax_n(cos(theta(x_c), phi(x_n))) g(x_n))``,
    replicate padding at the border, no positional terms, no temperature.
    """

    def __init__(self, channels: int = 21, inner_channels: int | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        inner = inner_channels or channels // 2
        self.kernel_size = kernel_size
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.back = nn.Conv2d(inner, channels, 1)

    def _shifts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> the k*k neighbour maps, each (B, C, H, W), row-major offsets, replicate border."""
        h, w = x.shape[-2:]
        k, pad = self.kernel_size, self.kernel_size // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return [padded[..., dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cosine similarity as F.cosine_similarity computes it (each side divided by max(norm, 1e-8)), taken per
        # pixel before the neighbours are shifted in, and the neighbourhood walked offset by offset: the same
        # values as gathering k*k-fold copies in a fifth of the time (docs/benchmarks.md).
        query = F.normalize(self.theta(x), dim=1, eps=1e-8)
        keys = self._shifts(F.normalize(self.phi(x), dim=1, eps=1e-8))
        weights = torch.stack([(query * key).sum(dim=1) for key in keys], dim=1).softmax(dim=1)
        values = self._shifts(self.g(x))
        attended = weights[:, :1] * values[0]
        for i, value in enumerate(values[1:], start=1):
            attended = attended + weights[:, i : i + 1] * value
        return x + self.back(attended)


class CrossScaleFusion(nn.Module):
    """Top-down fusion: up-sample the fused coarser map, concatenate it after this level's map, 3x3 conv.

    ``(B, C, h, w), (B, C, h', w') -> (B, C, h, w)``. With ``upsample=True`` the coarser map goes through a
    4x4 stride-2 transposed conv without bias (then cropped/padded to (h, w)); with ``upsample=False``
    (levels of equal stride, as in the dilated FCN backbone) it is concatenated as it is.
    """

    def __init__(self, channels: int = 21, upsample: bool = True) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False) if upsample else None
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            coarse = self.up(coarse)
        return self.conv(torch.cat([fine, fit_to(coarse, fine.shape[-2:])], dim=1))


class CorrelationHead(nn.Module):
    """Plain dot-product correlation of two feature maps (no normalisation, as in the official code)."""

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """(B, C, hs, ws), (B, C, ht, wt) -> full 4-D volume (B, hs, ws, ht, wt)."""
        return torch.einsum("bcij,bckl->bijkl", src, tgt)

    def rows(self, src: torch.Tensor, cells: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Only the volume rows of the given source cells.

        src (B, C, hs, ws), cells (B, M) flat indices into hs*ws, tgt (B, C, ht, wt) -> (B, M, ht, wt).
        """
        picked = src.flatten(2).gather(2, cells.unsqueeze(1).expand(-1, src.shape[1], -1))
        return torch.einsum("bcm,bckl->bmkl", picked, tgt)


class MatchingComplement(nn.Module):
    """Coarse-to-fine accumulation: each level's scores plus the nearest-up-sampled coarser total.

    ``S_0 = C_0``, ``S_l = C_l + U(S_{l-1})`` with levels ordered coarse to fine and U nearest up-sampling of
    both grids. With ``detach=True`` (official) the coarser total is a fixed prior for the finer level.
    """

    def __init__(self, detach: bool = True) -> None:
        super().__init__()
        self.detach = detach

    def _prior(self, coarser: torch.Tensor) -> torch.Tensor:
        return coarser.detach() if self.detach else coarser

    def forward(self, volumes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Full volumes, coarse to fine, each (B, hs, ws, ht, wt) -> accumulated volumes, same shapes."""
        out = [volumes[0]]
        for volume in volumes[1:]:
            prior = upsample_nearest(self._prior(out[-1]), volume.shape[3:])  # target grid
            prior = upsample_nearest(prior.permute(0, 3, 4, 1, 2), volume.shape[1:3]).permute(0, 3, 4, 1, 2)
            out.append(volume + prior)
        return out

    def rows(self, rows: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Sparse form: ``rows[l]`` (B, M, h_l, w_l) are level l's rows of the source cells that the queried
        finest cells map to under nearest up-sampling; returns the accumulated rows, same shapes."""
        out = [rows[0]]
        for row in rows[1:]:
            out.append(row + upsample_nearest(self._prior(out[-1]), row.shape[-2:]))
        return out
