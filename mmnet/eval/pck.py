"""PCK with every convention explicit: threshold length, evaluation frame, alpha list.

A transferred keypoint p is correct when ||p - t||_2 <= alpha * L, with t its ground truth in the target image
and L one of the THRESHOLDS:
  img      max(H, W) of the target image;
  bbox     max(x2 - x1, y2 - y1) of the target object box;
  bbox-kp  max(x-extent, y-extent) of the VALID target keypoints (PF-WILLOW; padded/invalid points never count).
By default everything lives in the original target image. With `frame=(H', W')` the target is treated as
resized anisotropically to H' x W' (as the official MMNet code does with 224 x 320): predictions, ground truth
and the box (or image size) defining L are all scaled by (W'/W, H'/H) before distances and L are taken.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmnet.data.base import PairRecord
from mmnet.errors import InputError

THRESHOLDS = ("img", "bbox", "bbox-kp")


def check_threshold(kind: str) -> str:
    if kind not in THRESHOLDS:
        raise InputError(f"unknown PCK threshold {kind!r}; choose one of {', '.join(THRESHOLDS)}")
    return kind


def frame_scale(size: tuple[int, int], frame: tuple[int, int] | None) -> np.ndarray:
    """(2,) xy factors taking pixels of an image of `size` (H, W) into `frame` (H', W'); ones when None."""
    if frame is None:
        return np.ones(2)
    return np.array([frame[1] / size[1], frame[0] / size[0]])


def threshold_length(
    kind: str,
    tgt_kps: np.ndarray,
    tgt_bbox: np.ndarray | None,
    tgt_size: tuple[int, int],
    frame: tuple[int, int] | None = None,
) -> float:
    """L in pixels of the evaluation frame. `tgt_kps`: (N, 2) VALID target keypoints (original pixels);
    `tgt_bbox`: (4,) xyxy or None; `tgt_size`: (H, W) of the original target image."""
    check_threshold(kind)
    scale = frame_scale(tgt_size, frame)
    if kind == "img":
        return float(max(frame if frame is not None else tgt_size))
    if kind == "bbox":
        if tgt_bbox is None:
            raise InputError("threshold 'bbox' needs a target box; this dataset has none (use 'img' or 'bbox-kp')")
        corners = np.asarray(tgt_bbox, dtype=np.float64).reshape(2, 2) * scale
    else:
        if len(tgt_kps) == 0:
            raise InputError("threshold 'bbox-kp' needs at least one valid target keypoint")
        corners = np.asarray(tgt_kps, dtype=np.float64) * scale
    return float((corners.max(0) - corners.min(0)).max())


def keypoint_distances(
    pred: np.ndarray, gt: np.ndarray, tgt_size: tuple[int, int], frame: tuple[int, int] | None = None
) -> np.ndarray:
    """(N,) Euclidean distances between (N, 2) predictions and ground truth, both in original target pixels,
    measured in the evaluation frame."""
    scale = frame_scale(tgt_size, frame)
    diff = (np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)) * scale
    return np.hypot(diff[:, 0], diff[:, 1])


def pck_correct(distances: np.ndarray, length: float | np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """(A, N) bool: distance <= alpha * L for each alpha; `length` a scalar or (N,) per keypoint."""
    return np.asarray(distances)[None, :] <= np.asarray(alphas, dtype=np.float64)[:, None] * np.asarray(length)


def score_pair(
    pred: np.ndarray, record: PairRecord, threshold: str, frame: tuple[int, int] | None = None
) -> tuple[np.ndarray, float]:
    """Distances (N_valid,) of the predictions (N_valid, 2) for the record's valid keypoints, and L, both in
    pixels of the evaluation frame."""
    if record.tgt_size is None:
        raise InputError("PCK needs the target image size")
    gt = record.tgt_kps[record.valid]
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    if pred.shape != gt.shape:
        raise InputError(f"expected {len(gt)} predicted keypoints, got array of shape {pred.shape}")
    length = threshold_length(threshold, gt, record.tgt_bbox, record.tgt_size, frame)
    return keypoint_distances(pred, gt, record.tgt_size, frame), length
