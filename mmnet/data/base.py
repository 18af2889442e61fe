"""The common pair record, the dataset base class and the small file helpers every loader shares."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mmnet.checks import describe
from mmnet.errors import DatasetError, InputError

SPLIT_ALIASES = {
    "trn": "trn",
    "train": "trn",
    "training": "trn",
    "val": "val",
    "validation": "val",
    "test": "test",
    "tst": "test",
}


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
    arr = (
        np.asarray(x, dtype=np.float32)
        if y is None
        else np.stack([np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)], axis=1)
    )
    return arr.reshape(-1, 2)


def as_box(box: Any) -> np.ndarray:
    return np.asarray(box, dtype=np.float32).reshape(4)


def _image_error(path: Path, exc: Exception) -> DatasetError:
    if isinstance(exc, Image.DecompressionBombError):
        return DatasetError(
            f"image {path} is larger than PIL's decompression-bomb limit ({exc}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        )
    return DatasetError(
        f"image {path} cannot be read ({type(exc).__name__}: {exc}); the file may be truncated or not an image"
    )


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _image_error(path, exc) from None


def open_rgb(path: Path, lazy: bool = False) -> Image.Image:
    """The image as RGB. With `lazy`, an RGB file is not decoded until its pixels are used (reading `.size`
    costs a header read); the caller must then close it."""
    try:
        im = Image.open(path)
        if im.mode == "RGB":
            if not lazy:
                im.load()
            return im
        with im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _image_error(path, exc) from None


def split_list(text: str) -> np.ndarray:
    """'1.5;2;3' -> float array (no checks: annotation files are parsed with `AnnotationFile`)."""
    return np.array([float(v) for v in text.split(";")], dtype=np.float32) if text.strip() else np.zeros(0)


def load_mat(path: Path, dataset: str = "", keys: Sequence[str] = ()) -> dict[str, Any]:
    """A MATLAB .mat file as a dict, with scipy imported only here. A file scipy cannot read (truncated,
    not a .mat) or one without every key in `keys` raises `DatasetError` naming it."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise ImportError(f"reading {path.name} needs scipy: pip install 'mmnet[data]'") from exc
    prefix = f"{dataset}: " if dataset else ""
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... for damaged files
        raise DatasetError(
            f"{prefix}{path}: not a readable MATLAB file ({type(exc).__name__}: {exc}); it may be truncated"
        ) from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DatasetError(f"{prefix}{path}: no variable {', '.join(map(repr, missing))} in the MATLAB file")
    return mat


def mat_points(
    value: Any, path: Path, dataset: str, *, missing_rows: bool = False, transpose: bool = False
) -> np.ndarray:
    """(N, 2) float32 keypoints from a MATLAB array (`transpose`: stored 2 x N). With `missing_rows`, a row that
    is NaN in both coordinates marks an invisible keypoint; any other NaN or inf is an error."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{dataset}: {path}: keypoints are not numbers") from None
    arr = arr.T if transpose else arr
    if arr.ndim != 2 or arr.shape[1] != 2:
        shape, got = ("2 x N", arr.shape[::-1]) if transpose else ("N x 2", arr.shape)
        raise DatasetError(f"{dataset}: {path}: keypoints must be an {shape} array, got shape {got}")
    missing = np.isnan(arr).all(1) if missing_rows else np.zeros(len(arr), bool)
    bad = ~np.isfinite(arr).all(1) & ~missing
    if bad.any():
        raise DatasetError(
            f"{dataset}: {path}: keypoint {int(np.flatnonzero(bad)[0]) + 1} is not finite "
            f"({arr[bad][0].tolist()})" + ("; an invisible keypoint is NaN in both x and y" if missing_rows else "")
        )
    return arr.astype(np.float32)


def mat_box(value: Any, path: Path, dataset: str) -> np.ndarray:
    """(4,) float32 x1 y1 x2 y2 from a MATLAB array; 4 finite values with x1 <= x2, y1 <= y2."""
    try:
        box = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(f"{dataset}: {path}: the box is not numbers") from None
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]:
        raise DatasetError(
            f"{dataset}: {path}: the box must be 4 finite numbers x1 y1 x2 y2 with x1 <= x2 and "
            f"y1 <= y2, got {box.tolist()}"
        )
    return box.astype(np.float32)


class AnnotationFile:
    """Reads numbers from one text annotation file; every error is a `DatasetError` naming the dataset, the file,
    the line (1-based, as an editor shows it) and the column."""

    def __init__(self, dataset: str, path: Path) -> None:
        self.dataset, self.path = dataset, path

    def error(self, line: int | None, message: str) -> DatasetError:
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        return DatasetError(f"{self.dataset}: {where}: {message}")

    def text(self) -> str:
        try:
            return self.path.read_text()
        except UnicodeDecodeError as exc:
            raise self.error(None, f"not a text file ({exc})") from None

    def number(self, text: str | None, line: int, column: str, *, integer: bool = False, finite: bool = True) -> float:
        """One number from a cell; empty, malformed, non-finite (unless `finite=False`) or, with `integer`,
        fractional values are errors."""
        if text is None:
            raise self.error(line, f"no value in column {column!r} (the row is shorter than the header)")
        cell = text.strip()
        if not cell:
            raise self.error(line, f"empty cell in column {column!r}")
        try:
            value = float(cell)
        except ValueError:
            raise self.error(line, f"column {column!r}: {cell!r} is not a number") from None
        if finite and not math.isfinite(value):
            raise self.error(line, f"column {column!r}: {cell!r} is not a finite number")
        if integer and (not math.isfinite(value) or value != int(value)):
            raise self.error(line, f"column {column!r}: {cell!r} is not an integer")
        return int(value) if integer else value

    def numbers(
        self, text: str | None, line: int, column: str, *, length: int | None = None, integer: bool = False
    ) -> np.ndarray:
        """A ';'-separated list of finite numbers (float32, or int64 with `integer`), of `length` when given."""
        if text is None:
            raise self.error(line, f"no value in column {column!r} (the row is shorter than the header)")
        if not text.strip():
            raise self.error(line, f"empty cell in column {column!r}")
        cells = text.split(";")
        try:
            values = np.array(cells, dtype=np.float64)
            good = bool(np.isfinite(values).all()) and (not integer or bool((values == np.round(values)).all()))
        except ValueError:
            good = False
        if not good:  # slow path: find the offending entry and say what is wrong with it
            values = np.array([self.number(c, line, column, integer=integer) for c in cells], dtype=np.float64)
        if length is not None and len(values) != length:
            raise self.error(line, f"column {column!r} has {len(values)} values, expected {length}")
        return values.astype(np.int64) if integer else values.astype(np.float32)

    def csv_rows(
        self, required: Sequence[str] = (), min_columns: int = 0
    ) -> tuple[list[str], list[tuple[int, list[str]]]]:
        """(header, [(line, cells), ...]) of a csv file with a header row; blank lines are skipped. A file with
        no header, without the `required` columns, or with no data row is an error."""
        try:
            with open(self.path, newline="") as fh:
                reader = csv.reader(fh)
                header = [h.strip() for h in next(reader, [])]
                rows = [(reader.line_num, line) for line in reader if any(c.strip() for c in line)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self.error(None, f"not a readable csv file ({exc})") from None
        if not header:
            raise self.error(None, "the file is empty (expected a header row and one row per pair)")
        missing = [c for c in required if c not in header]
        if missing:
            raise self.error(
                1, f"missing column(s) {', '.join(map(repr, missing))} in the header (found: {', '.join(header)})"
            )
        if len(header) < min_columns:
            raise self.error(1, f"the header has {len(header)} columns, expected at least {min_columns}")
        if not rows:
            raise self.error(None, "lists no pairs (only a header row)")
        return header, rows

    def cells(self, header: list[str], line: int, cells: list[str]) -> dict[str, str]:
        """The row as {column: cell}; a row with fewer or more cells than the header is an error."""
        if len(cells) != len(header):
            raise self.error(line, f"{len(cells)} cells, expected {len(header)} (one per header column)")
        return dict(zip(header, cells, strict=True))


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
        if isinstance(root, bytes) or not isinstance(root, (str, os.PathLike)) or not str(root):
            raise InputError(f"root must be the path of the {self.name} folder, got {describe(root)}")
        if not isinstance(split, str):
            raise InputError(f"split must be a string such as 'test', got {describe(split)}")
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
        return DatasetError(
            f"{self.name}: {what} '{shown}' not found (expected at {path}). "
            f"{self.name} is not shipped with mmnet; get it from {self.source}"
        )

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
