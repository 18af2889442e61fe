"""The common pair record, the dataset base class and the small file helpers every loader shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mmnet.errors import DatasetError, InputError

SPLIT_ALIASES = {"trn": "trn", "train": "trn", "training": "trn", "val": "val", "validation": "val",
                 "test": "test", "tst": "test"}


@dataclass(frozen=True, eq=False)
class PairRecord:
    """One annotated image pair, coordinates in pixels of the ORIGINAL (unflipped) images.

    `src_kps`, `tgt_kps`: (N, 2) float32 xy; rows where `valid` (N,) is False are NaN (never -1 padding).
    `src_bbox`, `tgt_bbox`: (4,) float32 x1 y1 x2 y2 or None. `src_size`, `tgt_size`: (H, W).
    `flip`: the pair is meant to be used mirrored horizontally (PF-PASCAL training rows); `Dataset.load`
    applies it. `flags`: per-pair integers such as SPair-71k's difficulty levels. `kp_ids`: (N,) keypoint
    ids where the dataset names them.
    """

    src_path: Path
    tgt_path: Path
    src_kps: np.ndarray
    tgt_kps: np.ndarray
    valid: np.ndarray
    src_bbox: np.ndarray | None = None
    tgt_bbox: np.ndarray | None = None
    category: str = ""
    flip: bool = False
    flags: dict[str, int] = field(default_factory=dict)
    src_size: tuple[int, int] | None = None
    tgt_size: tuple[int, int] | None = None
    kp_ids: np.ndarray | None = None

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def mirrored(self, perm: Sequence[int] | np.ndarray | None = None) -> PairRecord:
        """The record of both images flipped left-right: x -> W - 1 - x (pixel-index mirror), boxes mirrored,
        rows reordered by `perm` (new row j = old row perm[j], e.g. CUB's left/right parts); `flip` toggled."""
        if self.src_size is None or self.tgt_size is None:
            raise InputError("mirroring a pair needs both image sizes")
        order = np.arange(len(self.valid)) if perm is None else np.asarray(perm)
        return replace(
            self,
            src_kps=mirror_points(self.src_kps[order], self.src_size[1]),
            tgt_kps=mirror_points(self.tgt_kps[order], self.tgt_size[1]),
            valid=self.valid[order],
            src_bbox=mirror_box(self.src_bbox, self.src_size[1]),
            tgt_bbox=mirror_box(self.tgt_bbox, self.tgt_size[1]),
            kp_ids=None if self.kp_ids is None else self.kp_ids[order],
            flip=not self.flip,
        )


def mirror_points(kps: np.ndarray, width: int) -> np.ndarray:
    """(N, 2) xy -> the same points in the left-right mirrored image of width `width`."""
    out = kps.copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return out


def mirror_box(box: np.ndarray | None, width: int) -> np.ndarray | None:
    """(4,) x1 y1 x2 y2 -> the box in the mirrored image (still x1 <= x2)."""
    if box is None:
        return None
    return np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]], dtype=np.float32)


def as_kps(x: Any, y: Any | None = None) -> np.ndarray:
    """(N, 2) float32 from an (N, 2) array, or from separate x and y sequences."""
    arr = np.asarray(x, dtype=np.float32) if y is None else np.stack(
        [np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)], axis=1)
    return arr.reshape(-1, 2)


def as_box(box: Any) -> np.ndarray:
    return np.asarray(box, dtype=np.float32).reshape(4)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only."""
    with Image.open(path) as im:
        return im.height, im.width


def open_rgb(path: Path, lazy: bool = False) -> Image.Image:
    """The image as RGB. With `lazy`, an RGB file is not decoded until its pixels are used (reading `.size`
    costs a header read); the caller must then close it."""
    im = Image.open(path)
    if im.mode == "RGB":
        if not lazy:
            im.load()
        return im
    with im:
        return im.convert("RGB")


def split_list(text: str) -> np.ndarray:
    """'1.5;2;3' -> float array."""
    return np.array([float(v) for v in text.split(";")], dtype=np.float32) if text.strip() else np.zeros(0)


def load_mat(path: Path) -> dict[str, Any]:
    """A MATLAB .mat file as a dict, with scipy imported only here."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise ImportError(f"reading {path.name} needs scipy: pip install 'mmnet[data]'") from exc
    return loadmat(path)


class PairDataset:
    """Base of the benchmark loaders: a sequence of `PairRecord` with image loading.

    Subclasses set `name`, `source`, `default_threshold` (and `flip_perm` if a mirror swaps keypoint
    semantics) and fill `self._rows`; `_record(row)` turns one row into a `PairRecord`.
    """

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    default_threshold: ClassVar[str] = "img"
    flip_perm: ClassVar[np.ndarray | None] = None

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise self.missing(self.root, "dataset folder")
        self.split = split
        self._rows: list[Any] = []
        self._sizes: dict[Path, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> PairRecord:
        if not -len(self) <= index < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        return self._record(self._rows[index])

    def __iter__(self) -> Iterator[PairRecord]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, pairs={len(self)})"

    def _record(self, row: Any) -> PairRecord:
        raise NotImplementedError

    def size_of(self, path: Path) -> tuple[int, int]:
        """(H, W) of an image of this dataset, cached."""
        if path not in self._sizes:
            self._sizes[path] = image_size(path)
        return self._sizes[path]

    def load_images(self, index: int) -> tuple[Image.Image, Image.Image]:
        """Source and target as PIL RGB, mirrored when the record says `flip`."""
        return self.load(index)[:2]

    def load(self, index: int, lazy: bool = False) -> tuple[Image.Image, Image.Image, PairRecord]:
        """Source image, target image and the record in the frame of those images (flip applied, so the
        returned record has `flip=False`). `lazy`: see `open_rgb`."""
        rec = self[index]
        src, tgt = open_rgb(rec.src_path, lazy), open_rgb(rec.tgt_path, lazy)
        if not rec.flip:
            return src, tgt, rec
        with src, tgt:
            flipped = (src.transpose(Image.Transpose.FLIP_LEFT_RIGHT), tgt.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        return (*flipped, self.mirror(rec))

    def mirror(self, rec: PairRecord) -> PairRecord:
        """`rec` mirrored left-right with this dataset's keypoint permutation (see `PairRecord.mirrored`)."""
        return rec.mirrored(self.flip_perm)

    def missing(self, path: Path, what: str) -> DatasetError:
        """The error for a missing file: which file, where it was expected, where the data comes from."""
        shown = path.relative_to(self.root) if path != self.root and path.is_relative_to(self.root) else path
        return DatasetError(f"{self.name}: {what} '{shown}' not found (expected at {path}). "
                            f"{self.name} is not shipped with mmnet; get it from {self.source}")

    def require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise self.missing(path, what)
        return path

    def require_all(self, paths: Sequence[Path], what: str) -> None:
        """Check that every path exists (one stat each), naming the first missing one."""
        for path in dict.fromkeys(paths):
            self.require(path, what)


def normalise_split(split: str, dataset: str) -> str:
    """'train'/'trn'/... -> 'trn', 'val' or 'test'."""
    try:
        return SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise InputError(f"{dataset}: unknown split {split!r}; use trn, val or test") from None
