"""SPair-71k (Min et al., 2019): `Layout/<size>/<split>.txt` + `PairAnnotation/<split>/*.json` + `JPEGImages/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.data.base import PairDataset, PairRecord, as_box, as_kps, normalise_split
from mmnet.errors import DatasetError, InputError

FLAGS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion", "mirror")


class _Row(NamedTuple):
    name: str
    category: str
    src: Path
    tgt: Path


class SPair(PairDataset):
    """SPair-71k pairs (large layout: 53,340 trn / 5,384 val / 12,234 test; small: 10,652 / 1,070 / 2,438).

    Keypoints are the pair json's `src_kps`/`trg_kps` (only those visible in both, so all valid), with
    `kps_ids`; boxes from `src_bndbox`/`trg_bndbox`; the difficulty flags (viewpoint_variation,
    scale_variation, truncation, occlusion, mirror) go to `record.flags`. `pairs` names another list in the
    Layout format (`NNNNNN-<src>-<trg>:<category>` per line).
    """

    name = "SPair-71k"
    source = "http://cvlab.postech.ac.kr/research/SPair/ (SPair-71k.tar.gz)"
    default_threshold = "bbox"

    def __init__(self, root: str | Path, split: str = "test", pairs: str | Path | None = None,
                 size: str = "large") -> None:
        super().__init__(root, normalise_split(split, self.name))
        if size not in ("large", "small"):
            raise InputError(f"{self.name}: layout size must be 'large' or 'small', not {size!r}")
        if not (self.root / "Layout").is_dir() and (self.root / "SPair-71k").is_dir():
            self.root = self.root / "SPair-71k"
        if pairs is None:
            self.pairs_file = self.require(self.root / "Layout" / size / f"{self.split}.txt", "split list")
        else:
            path = Path(pairs).expanduser()
            self.pairs_file = self.require(path if path.exists() else self.root / path, "pair list")
        self.require(self.root / "PairAnnotation" / self.split, "annotation folder")
        self.require(self.root / "JPEGImages", "image folder")
        self._rows = [self._row(line.strip()) for line in self.pairs_file.read_text().splitlines() if line.strip()]
        self.require_all([self._json(r) for r in self._rows], "pair annotation")
        self.require_all([r.src for r in self._rows] + [r.tgt for r in self._rows], "image")

    def _row(self, line: str) -> _Row:
        try:
            stem, category = line.split(":")
            _, src, tgt = stem.split("-")
        except ValueError:
            raise DatasetError(f"{self.name}: bad line {line!r} in {self.pairs_file} "
                               "(expected NNNNNN-<src>-<trg>:<category>)") from None
        images = self.root / "JPEGImages" / category
        return _Row(line, category, images / f"{src}.jpg", images / f"{tgt}.jpg")

    def _json(self, row: _Row) -> Path:
        return self.root / "PairAnnotation" / self.split / f"{row.name}.json"

    def _record(self, row: _Row) -> PairRecord:
        ann = json.loads(self.require(self._json(row), "pair annotation").read_text())
        src_kps, tgt_kps = as_kps(ann["src_kps"]), as_kps(ann["trg_kps"])
        (sw, sh), (tw, th) = ann["src_imsize"][:2], ann["trg_imsize"][:2]
        return PairRecord(
            row.src, row.tgt, src_kps, tgt_kps, np.ones(len(src_kps), bool),
            as_box(ann["src_bndbox"]), as_box(ann["trg_bndbox"]), ann["category"], False,
            {k: int(ann[k]) for k in FLAGS if k in ann}, (int(sh), int(sw)), (int(th), int(tw)),
            np.array([int(k) for k in ann.get("kps_ids", [])], dtype=np.int64) if "kps_ids" in ann else None,
        )
