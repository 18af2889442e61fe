"""PF-PASCAL (Ham et al., TPAMI 2018) in the NCNet csv layout and in the HPF/DHPF/CHM/MMNet layout."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.data.base import PairDataset, PairRecord, as_box, as_kps, load_mat, normalise_split, split_list
from mmnet.errors import DatasetError

PASCAL_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                  "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                  "tvmonitor")
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
    source = ("https://www.di.ens.fr/willow/research/proposalflow/ (images + Annotations); the split csv files "
              "come with the HPF/DHPF data download (github.com/juhongm999/hpf) or NCNet "
              "(github.com/ignacio-rocco/ncnet, datasets/pf-pascal/image_pairs)")
    default_threshold = "img"

    def __init__(self, root: str | Path, split: str = "test", pairs: str | Path | None = None) -> None:
        super().__init__(root, normalise_split(split, self.name))
        self.pairs_file = self._pair_file(pairs)
        self._mats: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        with open(self.pairs_file, newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            self._rows = [self._row(header, line) for line in reader if line]
        if not self._rows:
            raise DatasetError(f"{self.name}: {self.pairs_file} lists no pairs")
        if self._rows[0].kps is None:
            self.require_all([self._mat_path(r.src, r.category) for r in self._rows]
                             + [self._mat_path(r.tgt, r.category) for r in self._rows], "annotation")

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

    def _row(self, header: list[str], line: list[str]) -> _Row:
        col = dict(zip(header, line, strict=False))
        category = PASCAL_CLASSES[int(line[2]) - 1]
        kps = None
        if "XA" in col:
            kps = (as_kps(split_list(col["XA"]), split_list(col["YA"])),
                   as_kps(split_list(col["XB"]), split_list(col["YB"])))
        flip_col = col.get("flip", line[3] if len(line) == 4 and "XA" not in col else "0")
        flip = bool(int(float(flip_col or 0)))
        return _Row(self._image(line[0]), self._image(line[1]), category, flip, kps)

    def _image(self, entry: str) -> Path:
        name = Path(entry).name
        candidates = (self.root / entry, self.root / "JPEGImages" / name,
                      self.root / "PF-dataset-PASCAL" / "JPEGImages" / name)
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
            mat = load_mat(self.require(path, "annotation"))
            self._mats[path] = (as_kps(mat["kps"]), as_box(mat["bbox"]))
        return self._mats[path]

    def _record(self, row: _Row) -> PairRecord:
        src_box = tgt_box = None
        if row.kps is not None:
            src_kps, tgt_kps = row.kps
        else:
            (src_kps, src_box), (tgt_kps, tgt_box) = (self._annotation(row.src, row.category),
                                                      self._annotation(row.tgt, row.category))
        if len(src_kps) != len(tgt_kps):
            raise DatasetError(f"{self.name}: {row.src.name} has {len(src_kps)} keypoints, "
                               f"{row.tgt.name} has {len(tgt_kps)}")
        valid = np.isfinite(src_kps).all(1) & np.isfinite(tgt_kps).all(1)
        src_kps, tgt_kps = (np.where(valid[:, None], k, np.nan).astype(np.float32) for k in (src_kps, tgt_kps))
        return PairRecord(row.src, row.tgt, src_kps, tgt_kps, valid, src_box, tgt_box, row.category, row.flip,
                          {}, self.size_of(row.src), self.size_of(row.tgt))
