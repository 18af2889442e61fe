"""Run a matcher over a benchmark dataset and score it with PCK."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
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


def evaluate(
    matcher: SupportsMatch,
    dataset: PairDataset | Any,
    alphas: Sequence[float] = (0.05, 0.1, 0.15),
    threshold: str | None = None,
    frame: tuple[int, int] | None = None,
    progress: bool = True,
    limit: int | None = None,
    name: str | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
) -> EvalResult:
    """PCK of `matcher` on the first `limit` pairs of `dataset` (all when None).

    For each pair: `matcher.match(src_image, tgt_image, src_kps)` with PIL RGB images (decoded on first
    pixel access, so a matcher that needs only sizes stays cheap; closed afterwards) and the (N_valid, 2)
    float32 valid source keypoints in source pixels; `.keypoints` of the answer ((N_valid, 2) array or tensor,
    target pixels) is scored. `threshold` defaults to the dataset's ("img" PF-PASCAL, "bbox-kp" PF-WILLOW,
    "bbox" SPair-71k and CUB); `frame` (H, W) evaluates in an anisotropically resized target frame.
    Pairs without a valid keypoint are not matched and are excluded from the means. `dataset` is an
    `mmnet.data` dataset or any sized object with `load(i) -> (src_image, tgt_image, PairRecord)`.

    `batch_size` > 1 or `num_workers` > 0: images are decoded in a `DataLoader` (`num_workers` processes, as
    uint8 tensors) and a matcher with `match_batch` gets `batch_size` pairs per call; the scores are the same.
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
    batch_size = check_int("batch_size", batch_size, min=1)
    num_workers = check_int("num_workers", num_workers, min=0)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    data_name = getattr(dataset, "name", type(dataset).__name__)
    if count == 0:
        source = getattr(dataset, "pairs_file", None) or getattr(dataset, "root", None)
        raise DatasetError(
            f"{data_name}: nothing to evaluate, the dataset has 0 pairs"
            + (f" ({source})" if source is not None else "")
        )
    label = name or getattr(matcher, "name", type(matcher).__name__)
    scores: list[PairScore] = []
    start = time.perf_counter()
    root = getattr(dataset, "root", None)
    bar = tqdm(total=count, desc=f"{label} on {data_name}", disable=not progress, unit="pair")
    for items in _batches(dataset, count, batch_size, num_workers):
        todo = [(src, tgt, rec) for _, src, tgt, rec in items if rec.n_valid]
        preds = _predict(matcher, todo)
        for i, src, tgt, rec in items:
            if rec.n_valid:
                distances, length = score_pair(_numpy(preds.pop(0)), rec, threshold, frame)
            else:
                distances, length = np.zeros(0), float("nan")
            for image in (src, tgt):
                if isinstance(image, Image.Image):
                    image.close()
            scores.append(
                PairScore(
                    i,
                    _relative(rec.src_path, root),
                    _relative(rec.tgt_path, root),
                    rec.category,
                    distances,
                    length,
                    dict(rec.flags),
                )
            )
        bar.update(len(items))
    bar.close()
    if not any(p.n_kps for p in scores):
        raise DatasetError(
            f"{data_name}: none of the {len(scores)} evaluated pair(s) has a keypoint valid in both "
            "images, so there is nothing to score"
        )
    return EvalResult(
        scores,
        alphas=alphas,
        threshold=threshold,
        frame=None if frame is None else (int(frame[0]), int(frame[1])),
        dataset=data_name,
        split=getattr(dataset, "split", ""),
        model=str(label),
        seconds=time.perf_counter() - start,
    )


def _predict(matcher: Any, todo: list[tuple[Any, Any, Any]]) -> list[Any]:
    """Predicted target keypoints of each (source, target, record): one `match_batch` call when the matcher has
    one and there are several pairs, else `match` per pair."""
    if not todo:
        return []
    kps = [rec.src_kps[rec.valid] for _, _, rec in todo]
    if len(todo) > 1 and callable(getattr(matcher, "match_batch", None)):
        results = matcher.match_batch([s for s, _, _ in todo], [t for _, t, _ in todo], kps)
    else:
        results = [matcher.match(s, t, k) for (s, t, _), k in zip(todo, kps, strict=True)]
    return [r.keypoints for r in results]


class _Decoded:
    """Pairs decoded to uint8 tensors (3, H, W), for `DataLoader` workers."""

    def __init__(self, dataset: Any, count: int) -> None:
        self.dataset, self.count = dataset, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, Any, Any, Any]:
        import torch

        src, tgt, rec = self.dataset.load(i)
        with src, tgt:
            images = [torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous() for im in (src, tgt)]
        return i, images[0], images[1], rec


def _batches(dataset: Any, count: int, batch_size: int, num_workers: int) -> Iterator[list[tuple[int, Any, Any, Any]]]:
    """Lists of (index, source, target, record). batch_size 1 without workers: lazily opened PIL images (a matcher
    that needs only the sizes never decodes them); otherwise tensors decoded by a DataLoader."""
    if batch_size == 1 and num_workers == 0:
        for i in range(count):
            src, tgt, rec = dataset.load(i, lazy=True) if isinstance(dataset, PairDataset) else dataset.load(i)
            yield [(i, src, tgt, rec)]
        return
    from torch.utils.data import DataLoader  # torch only for the batched path

    decoded: Any = _Decoded(dataset, count)  # a map-style dataset (__len__, __getitem__)
    loader: Any = DataLoader(
        decoded,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
    yield from loader
