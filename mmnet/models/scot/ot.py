"""Entropic optimal transport (Sinkhorn scaling) and SCOT's saliency point masses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...errors import InputError


class SinkhornResult(NamedTuple):
    plan: torch.Tensor
    iterations: int
    error: float
    epsilon: float


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 100,
    tol: float = 1e-3,
    max_retries: int = 10,
) -> SinkhornResult:
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
