"""PF-WILLOW (Ham et al., CVPR 2016): the 42-column `test_pairs.csv`, or the per-image `.mat` files."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.data.base import AnnotationFile, PairDataset, PairRecord, as_kps, load_mat, mat_points
from mmnet.errors import DatasetError, InputError

N_KPS = 10


class _Row(NamedTuple):
    src: Path
    tgt: Path
    src_kps: np.ndarray
    tgt_kps: np.ndarray


class PFWillow(PairDataset):
    """PF-WILLOW pairs (900 in the full benchmark), test only; 10 keypoints per image, all visible.

    `root` holds `test_pairs.csv` (columns `imageA,imageB`, then XA1..10, YA1..10, XB1..10, YB1..10) with the
    image paths relative to `root` or to its parent. Without a csv, every ordered pair of distinct images
    inside each sub-class folder (`PF-WILLOW/<subclass>/<name>.png` + `<name>.mat` holding `pts_coord`, 2 x 10)
    is used. There are no boxes: the threshold is the box around the target keypoints ("bbox-kp").
    """

    name = "PF-WILLOW"
    source = "https://www.di.ens.fr/willow/research/proposalflow/ (PF-WILLOW dataset)"
    default_threshold = "bbox-kp"

    def __init__(self, root: str | Path, split: str = "test", pairs: str | Path | None = None) -> None:
        super().__init__(root, split)
        if split != "test":
            raise InputError(f"{self.name} has only a test split, not {split!r}")
        if pairs is not None:
            path = Path(pairs).expanduser()
            self.pairs_file: Path | None = self.require(path if path.exists() else self.root / path, "pair list")
        elif (self.root / "test_pairs.csv").is_file():
            self.pairs_file = self.root / "test_pairs.csv"
        else:
            self.pairs_file = None
        self._rows = self._read_csv(self.pairs_file) if self.pairs_file else self._from_mat()
        self.require_all([r.src for r in self._rows] + [r.tgt for r in self._rows], "image")

    def _read_csv(self, path: Path) -> list[_Row]:
        f = AnnotationFile(self.name, path)
        header, lines = f.csv_rows(min_columns=2 + 4 * N_KPS)
        rows = []
        for n, line in lines:
            if len(line) != 2 + 4 * N_KPS:
                raise f.error(
                    n,
                    f"{len(line)} cells, expected {2 + 4 * N_KPS} (imageA, imageB, XA1..XA{N_KPS}, "
                    f"YA1..YA{N_KPS}, XB1..XB{N_KPS}, YB1..YB{N_KPS})",
                )
            for c, entry in zip(header[:2], line[:2], strict=True):
                if not entry.strip():
                    raise f.error(n, f"empty cell in column {c!r}")
            v = np.array(
                [f.number(cell, n, c) for c, cell in zip(header[2 : 2 + 4 * N_KPS], line[2:], strict=True)],
                dtype=np.float32,
            ).reshape(4, N_KPS)
            rows.append(
                _Row(self._image(line[0].strip()), self._image(line[1].strip()), as_kps(v[0], v[1]), as_kps(v[2], v[3]))
            )
        return rows

    def _image(self, entry: str) -> Path:
        for base in (self.root, self.root.parent):
            if (base / entry).is_file():
                return base / entry
        raise self.missing(self.root / entry, "image")

    def _from_mat(self) -> list[_Row]:
        base = self.root / "PF-WILLOW" if (self.root / "PF-WILLOW").is_dir() else self.root
        mats = sorted(base.glob("*/*.mat"))
        if not mats:
            raise self.missing(self.root / "test_pairs.csv", "pair list")
        points = {m.with_suffix(".png"): self._points(m) for m in mats}
        return [_Row(a, b, points[a], points[b]) for a, b in itertools.permutations(points, 2) if a.parent == b.parent]

    def _points(self, path: Path) -> np.ndarray:
        kps = mat_points(load_mat(path, self.name, keys=("pts_coord",))["pts_coord"], path, self.name, transpose=True)
        if len(kps) != N_KPS:
            raise DatasetError(f"{self.name}: {path}: pts_coord holds {len(kps)} keypoints, expected {N_KPS}")
        return kps

    def _record(self, row: _Row) -> PairRecord:
        return PairRecord(
            row.src,
            row.tgt,
            row.src_kps,
            row.tgt_kps,
            np.ones(len(row.src_kps), bool),
            category=row.src.parent.name,
            src_size=self.size_of(row.src),
            tgt_size=self.size_of(row.tgt),
        )
