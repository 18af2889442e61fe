"""The optimal-transport readout (``ReadoutConfig(method="ot")``): SCOT's entropic OT and regularised Hough
matching run on MMNet's learned, complemented correlation of one level, read out like the plain readout.

For one pair, with ``S`` the (M, N) complemented scores of all M source and N target cells of the readout level:

1. **Cost** ``C = -S``, in the model's own score units: ``exp(S / epsilon)`` with ``epsilon = 1`` is the row
   softmax the model was trained with. Each row is shifted by its maximum (a row scaling of the kernel, absorbed
   by Sinkhorn's row scaling, so the plan is unchanged) and capped at `COST_CAP` x epsilon, so no kernel column is
   all zeros in float32 (a target cell every source cell scores far below its best still receives its mass,
   spread evenly instead of as 0 / 0).
2. **Masses** ``"uniform"`` (every cell 1 / M, 1 / N) or ``"confidence"``: a source cell's mass is the peak of
   its row softmax, a target cell's the peak of its column softmax (flat rows, e.g. background, weigh less).
3. **Plan** by `mmnet.models.scot.sinkhorn` (``epsilon``, ``iterations``), rescaled by M and raised to
   ``exponent`` as in SCOT; optionally multiplied by `mmnet.models.scot.hough_votes` (``hough``).
4. **Readout**: the log of the final scores replaces the raw scores: a query point blends the log rows of the four
   source cells around it (as the plain readout blends raw rows) and the soft-argmax window reads it
   (``window``; 1 is the argmax cell). The score of a match is the share of the row's final score inside the
   window. In the limit of no column scaling (``epsilon = 1``, exponent 1, no Hough, v = 1) the log plan differs
   from the raw scores by a constant per row, so this readout equals the plain soft-argmax one.

The full (M, N) table is built once per pair (1,120 x 1,120 at level 2 of a 224 x 320 input, 5 MB; the finest level
is 4,480 x 4,480, 80 MB, and about four such buffers during the solve).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..models.scot import hough_votes, sinkhorn

#: Cost cap in units of epsilon: kernel entries are at least exp(-COST_CAP) of their row's best.
COST_CAP = 30.0
#: Sinkhorn's stopping tolerance (L1 error of the row marginal), SCOT's default.
TOLERANCE = 1e-3


def score_table(
    model: Any, src_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor], level: int, chunk_size: int
) -> torch.Tensor:
    """All complemented correlation rows of `level`: (B, M, ht, wt), M = hs ws, float32, `chunk_size` rows a step
    through `model.correlation_rows`."""
    h, w = src_feats[level].shape[-2:]
    cells = torch.arange(h * w, device=src_feats[level].device).expand(len(src_feats[level]), -1)
    return torch.cat(
        [
            model.correlation_rows(src_feats, tgt_feats, chunk, level)[-1].float()
            for chunk in cells.split(chunk_size, dim=1)
        ],
        dim=1,
    )


def point_masses(scores: torch.Tensor, masses: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (..., M, N) -> source masses (..., M) and target masses (..., N), each summing to 1."""
    m, n = scores.shape[-2:]
    if masses == "uniform":
        return (scores.new_full(scores.shape[:-1], 1.0 / m), scores.new_full((*scores.shape[:-2], n), 1.0 / n))
    a = scores.softmax(dim=-1).amax(dim=-1)
    b = scores.softmax(dim=-2).amax(dim=-2)
    return a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)


def transport_plan(
    scores: torch.Tensor, epsilon: float, iterations: int, masses: str = "uniform", tol: float = TOLERANCE
) -> torch.Tensor:
    """Scores (..., M, N) -> the entropic OT plan (..., M, N) of cost -scores (rows summing to the source masses,
    columns to the target masses, up to `tol`)."""
    a, b = point_masses(scores, masses)
    cost = (scores.amax(dim=-1, keepdim=True) - scores).clamp_(max=COST_CAP * epsilon)
    return sinkhorn(cost, a, b, epsilon, iterations, tol).plan


def transport_scores(
    scores: torch.Tensor,
    readout: Any,
    src_grid: Sequence[int],
    tgt_grid: Sequence[int],
    src_size: Sequence[int],
    tgt_size: Sequence[int],
) -> torch.Tensor:
    """Raw scores (B, M, N) -> log final scores (B, M, N) of the OT readout (`readout` fields ``ot_*``).

    `src_grid`/`tgt_grid` are the (h, w) grids of the level and `src_size`/`tgt_size` the (H, W) input sizes
    (Hough bins are in input pixels). Zeros become the log of the smallest normal float.
    """
    plan = transport_plan(scores.float(), readout.ot_epsilon, readout.ot_iterations, readout.ot_masses)
    mass = plan.mul_(plan.shape[-2]).pow_(readout.ot_exponent)
    if readout.ot_hough:
        mass = torch.stack([m * hough_votes(m, src_grid, tgt_grid, src_size, tgt_size) for m in mass])
    return mass.clamp_(min=torch.finfo(mass.dtype).tiny).log_()


def transport_table(
    model: Any,
    src_feats: list[torch.Tensor],
    tgt_feats: list[torch.Tensor],
    level: int,
    readout: Any,
    input_size: Sequence[int],
    chunk_size: int,
) -> torch.Tensor:
    """The OT readout's score rows of every source cell of `level`: (B, M, ht, wt) log final scores, float32."""
    src_grid, tgt_grid = tuple(src_feats[level].shape[-2:]), tuple(tgt_feats[level].shape[-2:])
    with torch.autocast(src_feats[level].device.type, enabled=False):
        table = score_table(model, src_feats, tgt_feats, level, chunk_size)
        out = transport_scores(table.flatten(2), readout, src_grid, tgt_grid, input_size, input_size)
    return out.view_as(table)


def gather_rows(table: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Rows (B, M, ht, wt) and flat source cells (B, K) -> (B, K, ht, wt)."""
    return table[torch.arange(len(table), device=table.device)[:, None], cells]
