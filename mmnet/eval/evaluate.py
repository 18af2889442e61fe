"""Run a matcher over a benchmark dataset and score it with PCK."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from mmnet.checks import check_float, check_int, check_size, describe
from mmnet.data.base import PairDataset
from mmnet.errors import DatasetError, InputError
from mmnet.eval.pck import check_threshold, score_pair
from mmnet.eval.results import EvalResult, PairScore


class SupportsMatch(Protocol):
    def match(self, source: Image.Image, target: Image.Image, keypoints: Any) -> Any: ...


def _relative(path: Path, root: Path | None) -> str:
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)


def _numpy(points: Any) -> np.ndarray:
    """An (N, 2) array from a numpy array or a torch tensor (on any device)."""
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    return np.asarray(points, dtype=np.float64)


def evaluate(matcher: SupportsMatch, dataset: PairDataset | Any, alphas: Sequence[float] = (0.05, 0.1, 0.15),
             threshold: str | None = None, frame: tuple[int, int] | None = None, progress: bool = True,
             limit: int | None = None, name: str | None = None) -> EvalResult:
    """PCK of `matcher` on the first `limit` pairs of `dataset` (all when None).

    For each pair: `matcher.match(src_image, tgt_image, src_kps)` with PIL RGB images (decoded on first
    pixel access, so a matcher that needs only sizes stays cheap; closed afterwards) and the (N_valid, 2)
    float32 valid source keypoints in source pixels; `.keypoints` of the answer ((N_valid, 2) array or tensor,
    target pixels) is scored. `threshold` defaults to the dataset's ("img" PF-PASCAL, "bbox-kp" PF-WILLOW,
    "bbox" SPair-71k and CUB); `frame` (H, W) evaluates in an anisotropically resized target frame.
    Pairs without a valid keypoint are not matched and are excluded from the means. `dataset` is an
    `mmnet.data` dataset or any sized object with `load(i) -> (src_image, tgt_image, PairRecord)`.
    """
    if not callable(getattr(matcher, "match", None)):
        raise InputError(f"matcher must have a match(source, target, keypoints) method, got {describe(matcher)}")
    if not hasattr(dataset, "load") or not hasattr(dataset, "__len__"):
        raise InputError(f"dataset must be an mmnet.data dataset (or have load(i) and len()), got {describe(dataset)}")
    threshold = threshold or getattr(dataset, "default_threshold", None)
    if threshold is None:
        raise InputError(f"{type(dataset).__name__} has no default PCK threshold: pass threshold=")
    check_threshold(threshold)
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Iterable):
        raise InputError(f"alphas must be a non-empty list of positive numbers, got {describe(alphas)}")
    alphas = tuple(alphas)
    if not alphas:
        raise InputError("alphas must be a non-empty list of positive numbers, got an empty list")
    alphas = tuple(check_float("alphas", a, min=0.0, min_inclusive=False) for a in alphas)
    frame = None if frame is None else check_size("frame", frame)
    if limit is not None:
        limit = check_int("limit", limit, min=1)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    data_name = getattr(dataset, "name", type(dataset).__name__)
    if count == 0:
        source = getattr(dataset, "pairs_file", None) or getattr(dataset, "root", None)
        raise DatasetError(f"{data_name}: nothing to evaluate, the dataset has 0 pairs"
                           + (f" ({source})" if source is not None else ""))
    label = name or getattr(matcher, "name", type(matcher).__name__)
    scores: list[PairScore] = []
    start = time.perf_counter()
    root = getattr(dataset, "root", None)
    for i in tqdm(range(count), desc=f"{label} on {data_name}", disable=not progress, unit="pair"):
        src, tgt, rec = dataset.load(i, lazy=True) if isinstance(dataset, PairDataset) else dataset.load(i)
        with src, tgt:
            if rec.n_valid:
                pred = _numpy(matcher.match(src, tgt, rec.src_kps[rec.valid]).keypoints)
                distances, length = score_pair(pred, rec, threshold, frame)
            else:
                distances, length = np.zeros(0), float("nan")
        scores.append(PairScore(i, _relative(rec.src_path, root), _relative(rec.tgt_path, root), rec.category,
                                distances, length, dict(rec.flags)))
    if not any(p.n_kps for p in scores):
        raise DatasetError(f"{data_name}: none of the {len(scores)} evaluated pair(s) has a keypoint valid in both "
                           "images, so there is nothing to score")
    return EvalResult(scores, alphas=alphas, threshold=threshold, frame=None if frame is None else tuple(frame),
                      dataset=data_name, split=getattr(dataset, "split", ""), model=label,
                      seconds=time.perf_counter() - start)
