"""PF-PASCAL (Ham et al., TPAMI 2018) in the NCNet csv layout and in the HPF/DHPF/CHM/MMNet layout."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.data.base import (
    AnnotationFile,
    PairDataset,
    PairRecord,
    as_kps,
    load_mat,
    mat_box,
    mat_points,
    normalise_split,
)
from mmnet.errors import DatasetError

PASCAL_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_CSV_NAMES = {"trn": ("trn", "train"), "val": ("val",), "test": ("test",)}


class _Row(NamedTuple):
    src: Path
    tgt: Path
    category: str
    flip: bool
    kps: tuple[np.ndarray, np.ndarray] | None  # (src, tgt) from the csv, or None: read the .mat files


class PFPascal(PairDataset):
    """PF-PASCAL pairs (299 test / 308 val / 2,940 train in the usual lists).

    Layouts (`root` is the folder holding the pair csv or its `PF-PASCAL/` parent):
    - HPF/DHPF/CHM/MMNet: `{trn,val,test}_pairs.csv` (source, target, 1-based VOC class[, flip]),
      `JPEGImages/`, `Annotations/<class>/<image>.mat` (`kps` N x 2 with NaN rows, `bbox` x1 y1 x2 y2).
    - NCNet: `image_pairs/{train,val,test}_pairs.csv` with `PF-dataset-PASCAL/JPEGImages/`; the test csv
      carries the keypoints (`XA,YA,XB,YB`, ';'-separated), the others are read from `Annotations/` .mat files.
    `pairs` names another csv in either format. Keypoints stay as annotated (MATLAB 1-based, not shifted).
    """

    name = "PF-PASCAL"
    source = (
        "https://www.di.ens.fr/willow/research/proposalflow/ (images + Annotations); the split csv files "
        "come with the HPF/DHPF data download (github.com/juhongm999/hpf) or NCNet "
        "(github.com/ignacio-rocco/ncnet, datasets/pf-pascal/image_pairs)"
    )
    default_threshold = "img"

    def __init__(self, root: str | Path, split: str = "test", pairs: str | Path | None = None) -> None:
        super().__init__(root, normalise_split(split, self.name))
        self.pairs_file = self._pair_file(pairs)
        self._mats: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        f = AnnotationFile(self.name, self.pairs_file)
        header, lines = f.csv_rows(min_columns=3)
        self._rows = [self._row(f, header, n, line) for n, line in lines]
        if self._rows[0].kps is None:
            self.require_all(
                [self._mat_path(r.src, r.category) for r in self._rows]
                + [self._mat_path(r.tgt, r.category) for r in self._rows],
                "annotation",
            )

    def _pair_file(self, pairs: str | Path | None) -> Path:
        if pairs is not None:
            path = Path(pairs).expanduser()
            return self.require(path if path.exists() else self.root / path, "pair list")
        for base in (self.root, self.root / "PF-PASCAL"):
            for sub in ("", "image_pairs"):
                for stem in _CSV_NAMES[self.split]:
                    path = base / sub / f"{stem}_pairs.csv"
                    if path.is_file():
                        self.root = base
                        return path
        err = self.missing(self.root / f"{_CSV_NAMES[self.split][0]}_pairs.csv", "pair list")
        raise DatasetError(f"{err} (also looked for image_pairs/{_CSV_NAMES[self.split][-1]}_pairs.csv)")

    def _row(self, f: AnnotationFile, header: list[str], n: int, line: list[str]) -> _Row:
        # HPF training lists may carry an unnamed 4th column (flip) after a 3-column header
        if not (len(line) == len(header) or (len(header) == 3 and len(line) == 4)):
            raise f.error(n, f"{len(line)} cells, expected {len(header)} (one per header column)")
        col = dict(zip(header, line, strict=False))
        class_id = int(f.number(line[2], n, header[2] or "class", integer=True))
        if not 1 <= class_id <= len(PASCAL_CLASSES):
            raise f.error(n, f"class {class_id} is outside 1..{len(PASCAL_CLASSES)} (1-based VOC class)")
        kps = None
        if "XA" in col:
            xa, ya, xb, yb = (f.numbers(col.get(c), n, c) for c in ("XA", "YA", "XB", "YB"))
            if not len(xa) == len(ya) == len(xb) == len(yb):
                raise f.error(
                    n,
                    f"XA, YA, XB, YB must have the same number of values, got "
                    f"{len(xa)}, {len(ya)}, {len(xb)}, {len(yb)}",
                )
            kps = (as_kps(xa, ya), as_kps(xb, yb))
        flip = False
        flip_cell = col.get("flip", line[3] if len(line) == 4 and "XA" not in col else None)
        if flip_cell is not None:
            value = f.number(flip_cell, n, "flip")
            if value not in (0, 1):
                raise f.error(n, f"column 'flip' must be 0 or 1, got {flip_cell.strip()!r}")
            flip = bool(value)
        for c, entry in zip(header[:2], line[:2], strict=True):
            if not entry.strip():
                raise f.error(n, f"empty cell in column {c!r}")
        return _Row(self._image(line[0].strip()), self._image(line[1].strip()), PASCAL_CLASSES[class_id - 1], flip, kps)

    def _image(self, entry: str) -> Path:
        name = Path(entry).name
        candidates = (
            self.root / entry,
            self.root / "JPEGImages" / name,
            self.root / "PF-dataset-PASCAL" / "JPEGImages" / name,
        )
        for path in candidates:
            if path.is_file():
                return path
        expected = next((p for p in candidates if p.parent.is_dir()), candidates[0])
        raise self.missing(expected, "image")

    @staticmethod
    def _mat_path(image: Path, category: str) -> Path:
        return image.parent.parent / "Annotations" / category / f"{image.stem}.mat"

    def _annotation(self, image: Path, category: str) -> tuple[np.ndarray, np.ndarray]:
        path = self._mat_path(image, category)
        if path not in self._mats:
            mat = load_mat(self.require(path, "annotation"), self.name, keys=("kps", "bbox"))
            self._mats[path] = (
                mat_points(mat["kps"], path, self.name, missing_rows=True),
                mat_box(mat["bbox"], path, self.name),
            )
        return self._mats[path]

    def _record(self, row: _Row) -> PairRecord:
        src_box = tgt_box = None
        if row.kps is not None:
            src_kps, tgt_kps = row.kps
        else:
            (src_kps, src_box), (tgt_kps, tgt_box) = (
                self._annotation(row.src, row.category),
                self._annotation(row.tgt, row.category),
            )
        if len(src_kps) != len(tgt_kps):
            raise DatasetError(
                f"{self.name}: {row.src.name} has {len(src_kps)} keypoints, {row.tgt.name} has {len(tgt_kps)}"
            )
        valid = np.isfinite(src_kps).all(1) & np.isfinite(tgt_kps).all(1)
        src_kps, tgt_kps = (np.where(valid[:, None], k, np.nan).astype(np.float32) for k in (src_kps, tgt_kps))
        return PairRecord(
            row.src,
            row.tgt,
            src_kps,
            tgt_kps,
            valid,
            src_box,
            tgt_box,
            row.category,
            row.flip,
            {},
            self.size_of(row.src),
            self.size_of(row.tgt),
        )
