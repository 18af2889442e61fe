"""Soft-argmax of a correlation volume into a dense flow field, with a (trainable) coordinate grid.

Shared by CATs (`mmnet.models.cats`) and any other model that reads a 4-D correlation volume with a softmax
expectation. Conventions (docs/conventions.md): volumes are **source first**, ``(B, hs, ws, ht, wt)`` or flattened
``(B, hs*ws, ht*wt)`` with row-major cells (``n = y * w + x``); points are (x, y).

What it computes, for every source cell ``a``::

    p_a(b) = softmax_b(corr[a, b] / beta)                   over the ht*wt target cells
    E_x(a) = sum_b p_a(b) * grid_x[b mod wt]                 grid_x: (wt,), normalised coordinates
    E_y(a) = sum_b p_a(b) * grid_y[b div wt]                 grid_y: (ht,)
    X(a)   = (E_x + 1) * (wt - 1) / 2,  Y(a) = (E_y + 1) * (ht - 1) / 2      target cell units (align-corners)
    flow[:, 0, ya, xa] = X - xa,  flow[:, 1, ya, xa] = Y - ya

so ``flow`` is ``(B, 2, hs, ws)`` on the **source** grid, pointing into the **target** grid, in **cells**
(channel 0 = dx, 1 = dy); ``positions`` is the same without subtracting the source cell (target cell xy). The
subtraction is only meaningful when both grids have the same size, which is the case for CATs (16 x 16).

``grid_x`` / ``grid_y`` start as ``linspace(-1, 1, n)`` (so X = the expected target column index) but are
``nn.Parameter``s: CATs trains them (and weight-decays them), so a checkpoint may hold other values; load them, never
regenerate them. Pass ``trainable=False`` to keep them fixed (they stay in the state dict either way).

Use ``over="target"`` (default) as above; ``over="source"`` reads the same volume the other way round: for every
target cell, a softmax over source cells, giving the flow on the **target** grid pointing into the source (this is
the official CATs output when the volume is ``(source, target)``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import InputError


def _flat(corr: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """(B, hs, ws, ht, wt) or (B, Ns, Nt) (+ square grids, or `size` for both) -> (B, Ns, Nt), src grid, tgt grid."""
    if corr.ndim == 5:
        b, hs, ws, ht, wt = corr.shape
        return corr.reshape(b, hs * ws, ht * wt), (hs, ws), (ht, wt)
    if corr.ndim != 3:
        raise InputError(f"correlation must be (B, hs, ws, ht, wt) or (B, Ns, Nt); got {tuple(corr.shape)}")
    grids = []
    for n in corr.shape[1:]:
        if size is not None and size[0] * size[1] == n:
            grids.append(tuple(size))
            continue
        side = round(n**0.5)
        if side * side != n:
            raise InputError(f"a flattened volume of {n} cells needs its grid size (pass size=(h, w))")
        grids.append((side, side))
    return corr, (grids[0][0], grids[0][1]), (grids[1][0], grids[1][1])


def soft_argmax(
    corr: torch.Tensor, grid_x: torch.Tensor, grid_y: torch.Tensor, beta: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """Functional core: flattened (B, Ns, Nt) scores -> expected target (x, y) in cells, (B, Ns, 2), and the
    softmax probabilities (B, Ns, Nt). ``grid_x`` (wt,), ``grid_y`` (ht,) are normalised coordinates in [-1, 1]
    at initialisation; the target grid is (len(grid_y), len(grid_x))."""
    wt, ht = grid_x.numel(), grid_y.numel()
    if corr.shape[-1] != ht * wt:
        raise InputError(f"scores have {corr.shape[-1]} target cells, the grid {ht}x{wt} = {ht * wt}")
    logits = (corr - corr.amax(dim=-1, keepdim=True)) / beta
    prob = logits.softmax(dim=-1)
    p = prob.view(*prob.shape[:-1], ht, wt)
    ex = (p.sum(dim=-2) * grid_x).sum(dim=-1)  # marginal over rows, then expectation of x
    ey = (p.sum(dim=-1) * grid_y).sum(dim=-1)
    xy = torch.stack([(ex + 1) * (wt - 1) / 2, (ey + 1) * (ht - 1) / 2], dim=-1)
    return xy, prob


class SoftArgmaxFlow(nn.Module):
    """Correlation volume -> flow (B, 2, h, w) in cells, through a soft-argmax over a trainable grid.

    Args:
        size: (h, w) of the grid that is read (the target grid for ``over="target"``).
        beta: softmax temperature (CATs: 0.02).
        trainable: whether ``grid_x`` / ``grid_y`` receive gradients (CATs: True).

    ``forward(corr, over="target", return_positions=False)``: `corr` (B, hs, ws, ht, wt) or (B, Ns, Nt), source
    first; returns the flow (B, 2, hs, ws) on the source grid into the target (``over="target"``) or (B, 2, ht, wt)
    on the target grid into the source (``over="source"``), or with ``return_positions=True`` the absolute
    positions (B, 2, h, w) in cells of the grid read, instead of displacements.
    """

    def __init__(self, size: tuple[int, int] | int = 16, beta: float = 0.02, trainable: bool = True) -> None:
        super().__init__()
        h, w = (size, size) if isinstance(size, int) else size
        self.beta = beta
        self.grid_x = nn.Parameter(torch.linspace(-1, 1, w), requires_grad=trainable)
        self.grid_y = nn.Parameter(torch.linspace(-1, 1, h), requires_grad=trainable)

    @property
    def size(self) -> tuple[int, int]:
        return self.grid_y.numel(), self.grid_x.numel()

    def probabilities(self, corr: torch.Tensor, over: Literal["source", "target"] = "target") -> torch.Tensor:
        """The softmax distributions (B, N_query, N_read) the expectation is taken over."""
        flat, _, _ = _flat(corr, self.size)
        flat = flat.transpose(1, 2) if over == "source" else flat
        return ((flat - flat.amax(dim=-1, keepdim=True)) / self.beta).softmax(dim=-1)

    def forward(
        self, corr: torch.Tensor, over: Literal["source", "target"] = "target", return_positions: bool = False
    ) -> torch.Tensor:
        if over not in ("source", "target"):
            raise InputError(f"over must be 'source' or 'target', got {over!r}")
        flat, src, tgt = _flat(corr, self.size)
        query, read = (tgt, src) if over == "source" else (src, tgt)
        if tuple(read) != self.size:
            raise InputError(
                f"the grid read is {read[0]}x{read[1]} but this soft-argmax holds a {self.size[0]}x{self.size[1]} grid"
            )
        flat = flat.transpose(1, 2) if over == "source" else flat
        xy, _ = soft_argmax(flat, self.grid_x, self.grid_y, self.beta)
        pos = xy.transpose(1, 2).reshape(xy.shape[0], 2, *query)
        if return_positions:
            return pos
        ys, xs = torch.meshgrid(
            torch.arange(query[0], device=pos.device, dtype=pos.dtype),
            torch.arange(query[1], device=pos.device, dtype=pos.dtype),
            indexing="ij",
        )
        return pos - torch.stack([xs, ys])
