"""CATs training objectives: the flow loss (official or keypoint targets), an MMNet-style keypoint loss, and the
official optimiser groups. `Trainer` uses them through `mmnet.train.families.CatsObjective`; each function takes a
model and a batch of the trainer's form (normalised images (B, 3, H, W), keypoints (B, N, 2) in pixels of those
images, validity (B, N)).

The model runs as ``model(src, tgt)``: flow on the source's 16 x 16 grid into the target, in cells (the official
``model(target, source)`` with the roles named the mmnet way, docs/cats.md).

Flow targets (``target=``):

- ``"keypoints"`` (default): the flow read bilinearly at each source keypoint's exact grid position (pixel-centre
  convention) against the true displacement in cells; each valid keypoint counts once.
- ``"official"``: the official dense ground truth, in the 256 x 256 frame (keypoints scaled by 256 / W, no half-pixel
  shift): cell (r, c) owns the window x in [16c - 9, 16c + 25], y in [16r - 9, 16r + 25] (inclusive); it receives,
  from the source keypoints inside its window, the target of the **last** of them minus the **mean** of them,
  divided by 16 (the official last-write-wins rule, not corrected for the keypoint's offset from the cell); cells
  left at exactly (0, 0) are ignored (a true zero displacement too); EPE averaged over the valid cells of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ..errors import InputError
from ..matching.geometry import bilinear_cells, blend_rows, pixels_to_grid
from ..models.cats import CATs
from .loss import soft_target, softmax_bce
from .lpmflow import flow_loss as _flow_loss
from .lpmflow import official_flow_target as _official_flow_target

Target = Literal["keypoints", "official"]


def official_flow_target(
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    grid: int = 16,
    frame: int = 256,
    window: tuple[int, int] = (-9, 25),
) -> torch.Tensor:
    """The official CATs ground-truth flow (module docstring): keypoints (B, N, 2) in the `frame` x `frame` image ->
    (B, 2, grid, grid) in cells on the source grid, zeros where no keypoint reaches (LPMFlow's rule, CATs' window)."""
    return _official_flow_target(src_kps, tgt_kps, valid, grid, frame, window)


def cats_flow_loss(
    flow: torch.Tensor,
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    src_size: Sequence[int],
    tgt_size: Sequence[int],
    target: Target = "keypoints",
) -> torch.Tensor:
    """End-point error of a (B, 2, g, g) source -> target flow in cells against keypoint pairs in pixels of the model
    inputs (sizes `src_size` / `tgt_size`); ``target`` as in the module docstring (LPMFlow's loss, CATs' frame)."""
    return _flow_loss(flow, src_kps, tgt_kps, valid, src_size, tgt_size, target, stride=16, window=(-9, 25))


def cats_keypoint_loss(
    scores: torch.Tensor,
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    src_size: Sequence[int],
    tgt_size: Sequence[int],
    beta: float = 0.02,
    both_directions: bool = False,
) -> torch.Tensor:
    """MMNet's keypoint loss on the CATs scores R (B, Ns, Nt) over square grids: each source keypoint's row (bilinear
    blend of the 4 cells around it) as a softmax with temperature `beta` over the target cells, against MMNet's soft
    target around the true match (`mmnet.train.loss.soft_target`); BCE summed over cells and keypoints, divided by
    the batch size. ``both_directions`` adds the same from the target keypoints over the columns."""
    side = round(scores.shape[-1] ** 0.5)
    grid = (side, side)
    weight = valid.to(scores.dtype)

    def one(
        volume: torch.Tensor, kps_a: torch.Tensor, kps_b: torch.Tensor, size_a: Sequence[int], size_b: Sequence[int]
    ) -> torch.Tensor:
        cells, blend = bilinear_cells(pixels_to_grid(kps_a, size_a, grid, "center"), grid)
        rows = volume.gather(1, cells.flatten(1)[..., None].expand(-1, -1, volume.shape[-1]))
        rows = blend_rows(rows.view(len(volume), -1, *grid), blend) / beta
        target = soft_target(pixels_to_grid(kps_b, size_b, grid, "center"), grid)
        return (softmax_bce(rows, target) * weight).sum() / len(volume)

    loss = one(scores, src_kps, tgt_kps, src_size, tgt_size)
    if both_directions:
        loss = loss + one(scores.transpose(1, 2), tgt_kps, src_kps, tgt_size, src_size)
    return loss


def cats_loss(
    model: CATs,
    src: torch.Tensor,
    tgt: torch.Tensor,
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    *,
    objective: Literal["flow", "keypoint"] = "flow",
    target: Target = "keypoints",
) -> tuple[torch.Tensor, dict[str, float]]:
    """One training forward: the flow EPE (``objective="flow"``, the official objective) or the MMNet-style keypoint
    loss, and its value as a float."""
    scores = model.scores(src, tgt)
    sizes = src.shape[-2:], tgt.shape[-2:]
    if objective == "flow":
        loss = cats_flow_loss(model.softargmax(scores), src_kps, tgt_kps, valid, *sizes, target)
    elif objective == "keypoint":
        loss = cats_keypoint_loss(scores, src_kps, tgt_kps, valid, *sizes, beta=model.softargmax.beta)
    else:
        raise InputError(f"unknown objective {objective!r}; choose 'flow' or 'keypoint'")
    return loss, {objective: float(loss.detach())}


def cats_param_groups(
    model: CATs, lr: float = 3e-5, backbone_lr: float = 3e-6, weight_decay: float = 0.05
) -> list[dict]:
    """The official AdamW groups: the head (projections, aggregator, soft-argmax grid) at `lr`, the backbone at
    `backbone_lr`, weight decay on every parameter (biases, norms, embeddings and the grid included, as the official
    code does)."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    return [
        {"params": head, "lr": lr, "weight_decay": weight_decay},
        {"params": backbone, "lr": backbone_lr, "weight_decay": weight_decay},
    ]
