"""Coarse-to-fine dense flow: search each finer level only near the coarser level's best match.

The exact dense flow scores every source cell of the readout level against every target cell (time grows with
the image area squared). Here level 0 (the coarsest) is searched exhaustively; every finer level, up to the
readout level, only in a window around the up-sampled best match of the source cell's parent one level up
(the matching complement's own prior). Inside a window the scores are the exact complemented scores
``S_l(s, t) = sum_{k <= l} C_k(anc_k(s), anc_k(t))`` (the same dot products as `MMNet.correlation_rows`), so
where the best match lies inside its window the positions equal the exact path's; the readout's confidence
(softmax mass) is taken over the window only, so it is an upper bound of the exact one. Accuracy against the
exact path: docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models.components import nearest_indices


def _ancestors(size: tuple[int, int], coarse: Sequence[int], ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Flat index into the `coarse` grid of the cells (ys, xs) of a `size` grid (nearest up-sampling rule)."""
    iy, ix = nearest_indices(size[0], coarse[0], ys.device), nearest_indices(size[1], coarse[1], xs.device)
    return iy[ys] * coarse[1] + ix[xs]


def window_scores(
    src_feats: list[torch.Tensor],
    tgt_feats: list[torch.Tensor],
    level: int,
    cells: torch.Tensor,
    origin: torch.Tensor,
    window: tuple[int, int],
) -> torch.Tensor:
    """Exact complemented scores of `level` between source cells and a window of target cells.

    cells (B, M) flat source cells of `level`; origin (B, M, 2) the window's top-left target cell (y, x);
    window (wh, ww) -> (B, M, wh, ww).
    """
    b, m = cells.shape
    hs, ws = src_feats[level].shape[-2:]
    ht, wt = tgt_feats[level].shape[-2:]
    sy, sx = torch.div(cells, ws, rounding_mode="floor"), cells % ws
    dy = torch.arange(window[0], device=cells.device).view(1, 1, -1, 1)
    dx = torch.arange(window[1], device=cells.device).view(1, 1, 1, -1)
    ty = (origin[..., 0, None, None] + dy).expand(b, m, *window)
    tx = (origin[..., 1, None, None] + dx).expand(b, m, *window)
    total: torch.Tensor | None = None
    for k in range(level + 1):
        fs, ft = src_feats[k], tgt_feats[k]
        c = fs.shape[1]
        s_idx = _ancestors((hs, ws), tuple(fs.shape[-2:]), sy, sx)  # (B, M)
        t_idx = _ancestors((ht, wt), tuple(ft.shape[-2:]), ty, tx).reshape(b, -1)  # (B, M * wh * ww)
        picked_s = fs.flatten(2).gather(2, s_idx[:, None].expand(-1, c, -1))  # (B, C, M)
        picked_t = ft.flatten(2).gather(2, t_idx[:, None].expand(-1, c, -1)).view(b, c, m, -1)
        scores = torch.einsum("bcm,bcmn->bmn", picked_s, picked_t)
        total = scores if total is None else total + scores
    assert total is not None  # level >= 0: at least one level was summed
    return total.view(b, m, *window)


def search(
    src_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor], level: int, radius: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every source cell of `level` -> its search window's scores (B, M, wh, ww) and origins (B, M, 2) (y, x).

    Level 0 is searched whole; level l + 1 in a window of the cells under the best level-l cell, widened by
    `radius` cells on each side (clamped into the grid, so every window has the same size).
    """
    b = src_feats[0].shape[0]
    device = src_feats[0].device
    best: torch.Tensor | None = None  # (B, M_prev) flat target cell of the previous level, per source cell
    for k in range(level + 1):
        hs, ws = src_feats[k].shape[-2:]
        ht, wt = tgt_feats[k].shape[-2:]
        cells = torch.arange(hs * ws, device=device).expand(b, -1)
        if best is None:
            window = (ht, wt)
            origin = torch.zeros(b, hs * ws, 2, dtype=torch.long, device=device)
        else:
            (phs, pws), (pht, pwt) = src_feats[k - 1].shape[-2:], tgt_feats[k - 1].shape[-2:]
            ry, rx = max(1, round(ht / pht)), max(1, round(wt / pwt))
            window = (min(ry + 2 * radius, ht), min(rx + 2 * radius, wt))
            parent = _ancestors((hs, ws), (phs, pws), torch.div(cells, ws, rounding_mode="floor"), cells % ws)
            coarse = best.gather(1, parent)
            top = torch.div(coarse, pwt, rounding_mode="floor") * ry - radius
            left = coarse % pwt * rx - radius
            origin = torch.stack([top.clamp(0, ht - window[0]), left.clamp(0, wt - window[1])], -1)
        if best is None:  # level 0, no coarser level: plain rows of the whole target grid
            fs, ft = src_feats[0].flatten(2), tgt_feats[0].flatten(2)
            scores = torch.cat(
                [
                    torch.einsum("bcm,bcn->bmn", fs[..., c[0]], ft).view(b, -1, ht, wt)
                    for c in cells.split(chunk_size, 1)
                ],
                1,
            )
        else:
            scores = torch.cat(
                [
                    window_scores(src_feats, tgt_feats, k, c, o, window)
                    for c, o in zip(cells.split(chunk_size, 1), origin.split(chunk_size, 1), strict=True)
                ],
                1,
            )
        if k == level:
            return scores, origin
        arg = scores.flatten(2).argmax(-1)
        by = torch.div(arg, window[1], rounding_mode="floor") + origin[..., 0]
        bx = arg % window[1] + origin[..., 1]
        best = by * wt + bx
    raise AssertionError("unreachable")
