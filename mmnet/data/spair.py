"""SPair-71k (Min et al., 2019): `Layout/<size>/<split>.txt` + `PairAnnotation/<split>/*.json` + `JPEGImages/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.data.base import AnnotationFile, PairDataset, PairRecord, mat_box, normalise_split
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

    def __init__(
        self, root: str | Path, split: str = "test", pairs: str | Path | None = None, size: str = "large"
    ) -> None:
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
        f = AnnotationFile(self.name, self.pairs_file)
        self._rows = [self._row(f, n, line.strip()) for n, line in enumerate(f.text().splitlines(), 1) if line.strip()]
        if not self._rows:
            raise f.error(None, "lists no pairs (the file is empty)")
        self.require_all([self._json(r) for r in self._rows], "pair annotation")
        self.require_all([r.src for r in self._rows] + [r.tgt for r in self._rows], "image")

    def _row(self, f: AnnotationFile, n: int, line: str) -> _Row:
        try:
            stem, category = line.split(":")
            _, src, tgt = stem.split("-")
        except ValueError:
            raise f.error(n, f"bad line {line!r} (expected NNNNNN-<src>-<trg>:<category>)") from None
        if not (src and tgt and category):
            raise f.error(n, f"bad line {line!r} (expected NNNNNN-<src>-<trg>:<category>)")
        images = self.root / "JPEGImages" / category
        return _Row(line, category, images / f"{src}.jpg", images / f"{tgt}.jpg")

    def _json(self, row: _Row) -> Path:
        return self.root / "PairAnnotation" / self.split / f"{row.name}.json"

    def _record(self, row: _Row) -> PairRecord:
        path = self.require(self._json(row), "pair annotation")
        try:
            ann = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{self.name}: {path}: not valid JSON ({exc}); the file may be truncated") from None
        if not isinstance(ann, dict):
            raise DatasetError(f"{self.name}: {path}: expected a JSON object, got {type(ann).__name__}")
        missing = [
            k
            for k in ("src_kps", "trg_kps", "src_imsize", "trg_imsize", "src_bndbox", "trg_bndbox", "category")
            if k not in ann
        ]
        if missing:
            raise DatasetError(f"{self.name}: {path}: missing key(s) {', '.join(map(repr, missing))}")
        src_kps, tgt_kps = (self._points(ann[k], path, k) for k in ("src_kps", "trg_kps"))
        if len(src_kps) != len(tgt_kps):
            raise DatasetError(f"{self.name}: {path}: {len(src_kps)} src_kps but {len(tgt_kps)} trg_kps")
        (sw, sh), (tw, th) = (self._size(ann[k], path, k) for k in ("src_imsize", "trg_imsize"))
        try:
            flags = {k: int(ann[k]) for k in FLAGS if k in ann}
            kp_ids = np.array([int(k) for k in ann["kps_ids"]], dtype=np.int64) if "kps_ids" in ann else None
        except (TypeError, ValueError):
            raise DatasetError(f"{self.name}: {path}: difficulty flags and kps_ids must be integers") from None
        if kp_ids is not None and len(kp_ids) != len(src_kps):
            raise DatasetError(f"{self.name}: {path}: {len(kp_ids)} kps_ids for {len(src_kps)} keypoints")
        return PairRecord(
            row.src,
            row.tgt,
            src_kps,
            tgt_kps,
            np.ones(len(src_kps), bool),
            mat_box(ann["src_bndbox"], path, self.name),
            mat_box(ann["trg_bndbox"], path, self.name),
            str(ann["category"]),
            False,
            flags,
            (sh, sw),
            (th, tw),
            kp_ids,
        )

    def _points(self, value: object, path: Path, key: str) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError(f"{self.name}: {path}: {key} must be a list of [x, y] numbers") from None
        if arr.size == 0:
            return np.zeros((0, 2), np.float32)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise DatasetError(f"{self.name}: {path}: {key} must be a list of [x, y], got shape {arr.shape}")
        if not np.isfinite(arr).all():
            i = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
            raise DatasetError(f"{self.name}: {path}: {key}[{i}] = {arr[i].tolist()} is not finite")
        return arr.astype(np.float32)

    def _size(self, value: object, path: Path, key: str) -> tuple[int, int]:
        """[W, H, C] -> (W, H), positive integers."""
        try:
            w, h = (int(v) for v in list(value)[:2])  # type: ignore[call-overload]
            ok = w > 0 and h > 0 and all(float(v) == int(v) for v in list(value)[:2])  # type: ignore[call-overload]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DatasetError(
                f"{self.name}: {path}: {key} must be [width, height, channels] with positive integers, got {value!r}"
            )
        return w, h
