"""Training pairs as fixed-size tensors: benchmark datasets, custom csv lists and mixtures of sources.

Every pair source yields a dict of
``src``/``tgt`` (3, H, W) normalised images, ``src_kps``/``tgt_kps`` (K, 2) xy pixels of those resized images
(pixel centres at integers), and ``valid`` (K,) bool. Valid keypoints come first; padding rows hold 0.0 and
``valid=False`` (never -1 or NaN, so the loss can multiply them away). Augmentation is a pure function of
``(seed, epoch, index)``: a resumed run sees exactly the same pairs as an uninterrupted one.

Images go through the inference path (`mmnet.matching.images`): `load_image` (any mode; RGBA and transparent
palettes composited on white, 16-bit scaled) and `prepare`'s resize + normalisation, so training sees the
pixels a matcher sees. Keypoints are in the frame of the image as its reader returns it: a benchmark dataset's
`load` (stored pixels, as `mmnet.eval` reads them) or, for `CsvPairs`, `load_image` of the file (EXIF
orientation applied: the frame an image viewer shows and `mmnet match` reads and prints).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mmnet.checks import check_int
from mmnet.errors import DatasetError, InputError
from mmnet.matching.geometry import rescale_points
from mmnet.matching.images import PreprocessConfig, image_size, load_image, prepare

Sample = dict[str, torch.Tensor]


def default_data_root() -> Path:
    """`$MMNET_DATA`, else ``../shared/data`` next to the checkout (where the benchmark folders live)."""
    env = os.environ.get("MMNET_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Augment:
    """Train-time augmentation of a supervised pair.

    flip: probability of mirroring the whole pair left-right (keypoint semantics permuted by the dataset's
    `flip_perm`, e.g. CUB's left/right parts). crop: probability of a random crop of each image that keeps
    every valid keypoint (at most `crop_scale` of each side removed). jitter: probability of colour jitter of
    each image (brightness/contrast/saturation by up to `jitter_strength`, grayscale with p 0.1).
    """

    flip: float = 0.5
    crop: float = 0.5
    crop_scale: float = 0.25
    jitter: float = 0.5
    jitter_strength: float = 0.3

    @classmethod
    def none(cls) -> Augment:
        return cls(flip=0.0, crop=0.0, jitter=0.0)


def sample_rng(seed: int, epoch: int, index: int, salt: int = 0) -> np.random.Generator:
    """The generator of one sample: a pure function of its coordinates."""
    return np.random.default_rng([seed, epoch, index, salt])


def check_max_kps(name: str, value: object) -> int:
    """Keypoint rows per sample: an integer >= 1 (InputError naming the argument otherwise)."""
    return check_int(name, value, min=1)


def preprocess_config(size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> PreprocessConfig:
    """The `PreprocessConfig` of a pair source: `size` (H, W) checked at construction (InputError naming it)."""
    return PreprocessConfig(size=size, mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]


def colour_jitter(image: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """Random brightness, contrast and saturation (factors in 1 +- strength), gray with p 0.1; stays in [0, 1]."""
    b, c, s = (1 + rng.uniform(-strength, strength, size=3)).tolist()
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    out = image * b
    out = (out - out.mean()) * c + out.mean()
    g = gray * b
    out = (out - g) * s + g
    if rng.random() < 0.1:
        out = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None].expand(3, -1, -1)
    return out.clamp(0, 1)


def pad_keypoints(
    src_kps: np.ndarray, tgt_kps: np.ndarray, valid: np.ndarray, max_kps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep rows valid in both (finite), put them first, pad with zeros to `max_kps` rows; mask (K,) bool."""
    keep = valid & np.isfinite(src_kps).all(1) & np.isfinite(tgt_kps).all(1)
    idx = np.flatnonzero(keep)[:max_kps]
    out_s = np.zeros((max_kps, 2), np.float32)
    out_t = np.zeros((max_kps, 2), np.float32)
    mask = np.zeros(max_kps, bool)
    out_s[: len(idx)], out_t[: len(idx)], mask[: len(idx)] = src_kps[idx], tgt_kps[idx], True
    return torch.from_numpy(out_s), torch.from_numpy(out_t), torch.from_numpy(mask)


def _crop_box(
    size: tuple[int, int], kps: np.ndarray, rng: np.random.Generator, scale: float
) -> tuple[int, int, int, int]:
    """A random (x0, y0, x1, y1) crop of an (H, W) image removing at most `scale` of each side, keeping `kps`."""
    h, w = size
    kps = kps[np.isfinite(kps).all(1)]
    lo_x, lo_y = kps.min(0) if len(kps) else (w, h)
    hi_x, hi_y = kps.max(0) + 1 if len(kps) else (0, 0)
    x0 = int(rng.uniform(0, max(0.0, min(scale * w, lo_x))))
    y0 = int(rng.uniform(0, max(0.0, min(scale * h, lo_y))))
    x1 = w - int(rng.uniform(0, max(0.0, min(scale * w, w - hi_x))))
    y1 = h - int(rng.uniform(0, max(0.0, min(scale * h, h - hi_y))))
    return x0, y0, max(x1, x0 + 8), max(y1, y0 + 8)


class PairSource(Protocol):
    """What the trainer needs of a pair source: a length, an epoch and a sample per index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def set_epoch(self, epoch: int) -> None: ...


class CsvPairs:
    """A custom list of annotated pairs, read like an `mmnet.data` dataset.

    The csv has a header with at least ``source_image,target_image,XA,YA,XB,YB`` (``XA``... are ';'-separated
    pixel coordinates in the original images, same count in all four; empty or 'nan' entries mark a keypoint
    missing in one image) and optionally ``flip`` (0/1: use the pair mirrored). Image paths are relative to
    `image_root` (default: the csv's folder). Mirroring keeps the keypoint order unless `flip_perm` is given.

    Coordinates are in the frame `mmnet.matching.images.load_image` returns: EXIF orientation applied, as an
    image viewer shows the photo and as ``mmnet match`` reads and prints keypoints (and as
    ``python -m mmnet.train.pseudo`` writes them). `load` returns that image as a float (3, H, W) tensor.
    """

    name = "custom csv"

    def __init__(
        self, csv_path: str | Path, image_root: str | Path | None = None, flip_perm: Sequence[int] | None = None
    ) -> None:
        from mmnet.data import PairRecord

        self.csv_path = Path(csv_path).expanduser()
        if not self.csv_path.is_file():
            raise InputError(f"pair list not found: {self.csv_path}")
        root = Path(image_root).expanduser() if image_root is not None else self.csv_path.parent
        self.flip_perm = None if flip_perm is None else np.asarray(flip_perm)
        self._records = []
        with open(self.csv_path, newline="") as fh:
            for line_no, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    xa, ya, xb, yb = (self._floats(row[k]) for k in ("XA", "YA", "XB", "YB"))
                except KeyError as exc:
                    raise DatasetError(
                        f"{self.csv_path}: missing column {exc}; need source_image,target_image,XA,YA,XB,YB"
                    ) from None
                if not len(xa) == len(ya) == len(xb) == len(yb):
                    raise DatasetError(f"{self.csv_path}:{line_no}: XA, YA, XB, YB have different lengths")
                src, tgt = root / row["source_image"], root / row["target_image"]
                for path in (src, tgt):
                    if not path.is_file():
                        raise DatasetError(f"{self.csv_path}:{line_no}: image not found: {path}")
                src_kps, tgt_kps = np.stack([xa, ya], 1), np.stack([xb, yb], 1)
                valid = np.isfinite(src_kps).all(1) & np.isfinite(tgt_kps).all(1)
                flip = row.get("flip", "0").strip() in {"1", "true", "True"}
                self._records.append(
                    PairRecord(
                        src, tgt, src_kps, tgt_kps, valid, flip=flip, src_size=image_size(src), tgt_size=image_size(tgt)
                    )
                )

    @staticmethod
    def _floats(text: str) -> np.ndarray:
        return (
            np.array(
                [float(v) if v.strip() and v.strip().lower() != "nan" else np.nan for v in text.split(";")],
                dtype=np.float32,
            )
            if text.strip()
            else np.zeros(0, np.float32)
        )

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Any:
        return self._records[index]

    def mirror(self, rec: Any) -> Any:
        return rec.mirrored(self.flip_perm)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Source and target as `load_image` reads them (RGB (3, H, W) in [0, 1]) and the record in their frame
        (mirrored when the row says `flip`)."""
        rec = self._records[index]
        src, tgt = load_image(rec.src_path), load_image(rec.tgt_path)
        if rec.flip:
            src, tgt = src.flip(-1), tgt.flip(-1)
            rec = self.mirror(rec)
        return src, tgt, rec


class SupervisedPairs:
    """Any `mmnet.data` dataset (or `CsvPairs`) as fixed-size training tensors.

    Each pair is loaded with the dataset's own `load` (which applies a record's `flip`) and converted by
    `load_image` (the inference reader), optionally mirrored again at random with the dataset's `mirror` (so
    CUB swaps left and right parts), cropped around its keypoints and colour-jittered, resized and normalised by
    `prepare` (`size`, aspect ignored) with its keypoints scaled, and padded to `max_kps` keypoints.
    """

    def __init__(
        self,
        dataset: Any,
        size: Sequence[int] = (224, 320),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        max_kps: int = 20,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.preprocess = preprocess_config(size, mean, std)
        self.max_kps = check_max_kps("max_kps", max_kps)
        if len(dataset) == 0:
            raise InputError("the training dataset is empty")
        self.dataset, self.size = dataset, self.preprocess.size
        self.mean, self.std = self.preprocess.mean, self.preprocess.std
        self.augment, self.seed, self.epoch = augment or Augment(), seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.seed, self.epoch, index, salt=1)
        src_im, tgt_im, rec = self.dataset.load(index)
        src, tgt = load_image(src_im), load_image(tgt_im)
        aug = self.augment
        if rng.random() < aug.flip:
            src, tgt = src.flip(-1), tgt.flip(-1)
            rec = self.dataset.mirror(rec)
        images, points = [], []
        for tensor, kps in ((src, rec.src_kps), (tgt, rec.tgt_kps)):
            kps = kps.astype(np.float32)
            valid_kps = np.where(rec.valid[:, None], kps, np.nan)
            if rng.random() < aug.crop:
                x0, y0, x1, y1 = _crop_box(
                    (int(tensor.shape[-2]), int(tensor.shape[-1])), valid_kps, rng, aug.crop_scale
                )
                tensor = tensor[:, y0:y1, x0:x1]
                kps = kps - np.array([x0, y0], np.float32)
            if rng.random() < aug.jitter:
                tensor = colour_jitter(tensor, rng, aug.jitter_strength)
            scaled = rescale_points(torch.from_numpy(np.nan_to_num(kps)), tensor.shape[-2:], self.size).numpy()
            images.append(prepare(tensor[None], self.preprocess)[0])
            points.append(np.where(np.isfinite(kps), scaled, np.nan))
        src_kps, tgt_kps, valid = pad_keypoints(points[0], points[1], rec.valid.astype(bool), self.max_kps)
        return {"src": images[0], "tgt": images[1], "src_kps": src_kps, "tgt_kps": tgt_kps, "valid": valid}


class MixedPairs:
    """Several pair sources drawn at chosen ratios.

    `length` samples per epoch (default: the first source's length); sample i of an epoch comes from source j
    with probability ``weights[j]`` and uses a random index of it, both drawn from ``(seed, epoch, i)``.
    """

    def __init__(
        self, sources: Sequence[PairSource], weights: Sequence[float], length: int | None = None, seed: int = 0
    ) -> None:
        if len(sources) != len(weights) or not sources:
            raise InputError("MixedPairs needs one weight per source")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise InputError(f"mixing weights must be >= 0 and not all 0, got {list(weights)}")
        self.sources, self.p = list(sources), w / w.sum()
        self.length = int(length if length is not None else len(sources[0]))
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for source in self.sources:
            source.set_epoch(epoch)

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.seed, self.epoch, index, salt=2)
        j = int(rng.choice(len(self.sources), p=self.p))
        return self.sources[j][int(rng.integers(len(self.sources[j])))]


def collate(samples: Sequence[Sample]) -> Sample:
    """Stack samples; keypoint rows beyond the largest valid count of the batch are dropped (they are padding)."""
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    keep = max(1, int(batch["valid"].sum(1).max()))
    for k in ("src_kps", "tgt_kps", "valid"):
        batch[k] = batch[k][:, :keep].contiguous()
    return batch
