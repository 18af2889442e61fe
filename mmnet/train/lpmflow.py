"""LPMFlow training objectives: the flow loss, the RPTC task with its lambda schedules, and the optimiser groups.

The official recipe (docs/lpmflow.md, "Training"): sparse end-point error on the final 8g x 8g flow, plus
``lambda_e * L_RPTC``, AdamW with weight decay 0.05 on every parameter, lr 4e-5 for the head and 3e-6 for the
(fine-tuned) ViT, constant within its 10 epochs. `lpmflow_loss` computes both terms from one training forward
(``model.train()``: foreground tokens replaced, the training-only source table added).

Flow targets (``target=``):

- ``"keypoints"`` (default): the flow read bilinearly at each source keypoint's exact position on the flow grid
  (pixel-centre convention) against the true displacement, in grid cells; every valid keypoint counts once.
- ``"official"``: the official dense ground truth: on the 128 x 128 grid of a 512 x 512 frame, cell (i, j)
  receives, from every source keypoint inside its 35-pixel box x in [4j - 15, 4j + 19], y in [4i - 15, 4i + 19]
  (the last one wins), the keypoint's target minus the mean of the source keypoints inside that box, divided by 4;
  cells left at exactly (0, 0) are ignored; EPE averaged over the valid cells of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..matching.geometry import pixels_to_grid
from ..models.lpmflow import LPMFlow

Schedule = Literal["code", "supplement"]


def rptc_lambda(epoch: int, schedule: Schedule = "code", initial: float = 0.2, decline: float = 0.1) -> float:
    """Weight of the RPTC loss at 0-based `epoch`.

    ``"code"`` (the official training script): ``initial / max(epoch, 1)`` up to epoch 10, then ``initial / 10``
    (0.2, 0.2, 0.1, 0.067, 0.05, ..., 0.02 for ever; never 0). ``"supplement"`` (the paper's text, "initial 0.2,
    decline rate 10 % until 0"): read as a linear decline by `decline` of the initial value per epoch,
    ``max(0, initial * (1 - decline * epoch))`` (0 from epoch 10 on).
    """
    if epoch < 0:
        raise InputError(f"epoch must be >= 0, got {epoch}")
    if schedule == "code":
        return initial / max(epoch, 1) if epoch <= 10 else initial / 10
    if schedule == "supplement":
        return max(0.0, initial * (1 - decline * epoch))
    raise InputError(f"unknown RPTC schedule {schedule!r}; choose 'code' or 'supplement'")


def rptc_loss(tokens: torch.Tensor, replaced: torch.Tensor, grid: int, temperature: float = 0.1) -> torch.Tensor:
    """Relative-position token consistency (InfoNCE), mean over the batch.

    tokens: the LARL source output (B, 1 + g^2, C); replaced: (B, R) patch indices that were overwritten. For each
    replaced patch, the query is its output token, the positive the (detached) mean of its valid 8-neighbours on the
    g x g grid, the negatives the other R - 1 replaced tokens; cosine similarities over `temperature`.
    """
    patches = tokens[:, 1:]
    b, n, c = patches.shape
    if n != grid * grid:
        raise InputError(f"{n} patch tokens do not form a {grid}x{grid} grid")
    maps = patches.transpose(1, 2).reshape(b, c, grid, grid)
    ones = torch.ones(1, 1, grid, grid, device=tokens.device, dtype=tokens.dtype)
    kernel = torch.ones(1, 1, 3, 3, device=tokens.device, dtype=tokens.dtype)
    kernel[..., 1, 1] = 0
    count = F.conv2d(ones, kernel, padding=1).flatten()  # 3, 5 or 8 neighbours
    sums = F.conv2d(maps.reshape(b * c, 1, grid, grid), kernel, padding=1).view(b, c, n)
    neighbours = (sums / count).transpose(1, 2).detach()  # (B, n, C)
    index = replaced[..., None].expand(-1, -1, c)
    query = F.normalize(patches.gather(1, index), dim=-1)  # (B, R, C)
    positive = F.normalize(neighbours.gather(1, index), dim=-1)
    pos_logit = (query * positive).sum(-1, keepdim=True)  # (B, R, 1)
    sim = query @ query.transpose(1, 2)  # (B, R, R): the other replaced tokens are the negatives
    eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
    neg = sim.masked_fill(eye, float("-inf"))
    logits = torch.cat([pos_logit, neg], -1) / temperature
    return -logits.log_softmax(-1)[..., 0].mean()


def official_flow_target(
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    grid: int = 128,
    frame: int = 512,
    window: tuple[int, int] = (-15, 19),
) -> torch.Tensor:
    """The official dense ground truth (see the module docstring): keypoints in the `frame` x `frame` image ->
    (B, 2, grid, grid) flow in grid cells, zeros where no keypoint reaches. Cell (i, j) owns the box x in
    [stride * j + window[0], stride * j + window[1]], likewise y with i (CATs' rule too, with its own window)."""
    stride = frame // grid
    out = torch.zeros(src_kps.shape[0], 2, grid, grid, device=src_kps.device)
    starts = torch.arange(grid, device=src_kps.device) * stride
    lo, hi = starts + window[0], starts + window[1]
    for b in range(src_kps.shape[0]):
        src, tgt = src_kps[b][valid[b]], tgt_kps[b][valid[b]]
        if not len(src):
            continue
        inside_x = (src[:, 0, None] >= lo) & (src[:, 0, None] <= hi)  # (N, grid) over columns
        inside_y = (src[:, 1, None] >= lo) & (src[:, 1, None] <= hi)  # (N, grid) over rows
        inside = inside_y[:, :, None] & inside_x[:, None, :]  # (N, grid, grid)
        count = inside.sum(0).clamp(min=1)
        mean = (inside[..., None] * src[:, None, None, :]).sum(0) / count[..., None]  # (grid, grid, 2)
        last = torch.where(inside, torch.arange(len(src), device=src.device)[:, None, None], -1).amax(0)
        hit = last >= 0
        value = (tgt[last.clamp(min=0)] - mean) / stride
        out[b] = torch.where(hit[None], value.permute(2, 0, 1), out[b])
    return out


def flow_loss(
    flow: torch.Tensor,
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    src_size: Sequence[int],
    tgt_size: Sequence[int],
    target: Literal["keypoints", "official"] = "keypoints",
    *,
    stride: int = 4,
    window: tuple[int, int] = (-15, 19),
) -> torch.Tensor:
    """Sparse end-point error of a (B, 2, G, G) source -> target flow (grid cells) against keypoint pairs
    (B, N, 2) in pixels of the model inputs of sizes `src_size` / `tgt_size`, with a (B, N) validity mask.
    The official target lives in the (stride * G)-pixel frame with the cell boxes `window` (LPMFlow's by default)."""
    grid = flow.shape[-2:]
    if target == "official":
        frame = (stride * grid[0], stride * grid[1])
        src = pixels_to_grid(src_kps, src_size, frame, "corner")
        tgt = pixels_to_grid(tgt_kps, tgt_size, frame, "corner")
        gt = official_flow_target(src, tgt, valid, grid[0], frame[0], window)
        mask = (gt != 0).any(1)
        if not mask.any():
            return flow.sum() * 0
        return (flow - gt).norm(dim=1)[mask].mean()
    if target != "keypoints":
        raise InputError(f"unknown flow target {target!r}; choose 'keypoints' or 'official'")
    src = pixels_to_grid(src_kps, src_size, grid, "center")
    tgt = pixels_to_grid(tgt_kps, tgt_size, grid, "center")
    norm = torch.stack([src[..., 0] / max(grid[1] - 1, 1), src[..., 1] / max(grid[0] - 1, 1)], -1) * 2 - 1
    sampled = F.grid_sample(flow, norm[:, None], mode="bilinear", padding_mode="border", align_corners=True)
    error = (sampled[:, :, 0].transpose(1, 2) - (tgt - src)).norm(dim=-1)
    if not valid.any():
        return flow.sum() * 0
    return error[valid].mean()


def lpmflow_loss(
    model: LPMFlow,
    src: torch.Tensor,
    tgt: torch.Tensor,
    src_kps: torch.Tensor,
    tgt_kps: torch.Tensor,
    valid: torch.Tensor,
    epoch: int,
    *,
    schedule: Schedule = "code",
    target: Literal["keypoints", "official"] = "keypoints",
    temperature: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One training forward: ``flow EPE + rptc_lambda(epoch) * L_RPTC`` and its parts (as floats)."""
    out = model(src, tgt)
    epe = flow_loss(out.flow, src_kps, tgt_kps, valid, src.shape[-2:], tgt.shape[-2:], target)
    weight = rptc_lambda(epoch, schedule)
    if out.replaced is None or weight == 0:
        rptc = epe.new_zeros(())
    else:
        rptc = rptc_loss(out.source_tokens, out.replaced, model.grid, temperature)
    total = epe + weight * rptc
    return total, {
        "epe": float(epe.detach()),
        "rptc": float(rptc.detach()),
        "lambda": weight,
        "loss": float(total.detach()),
    }


def lpmflow_param_groups(
    model: LPMFlow, lr: float = 4e-5, backbone_lr: float = 3e-6, weight_decay: float = 0.05
) -> list[dict]:
    """The official AdamW groups: the ViT at `backbone_lr`, everything else at `lr`, weight decay on every
    parameter (norms, tables and the soft-argmax grid included, as the official code does). Each parameter once
    (the official aliases made the shared position table update twice per step)."""
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    return [
        {"params": head, "lr": lr, "weight_decay": weight_decay},
        {"params": backbone, "lr": backbone_lr, "weight_decay": weight_decay},
    ]
