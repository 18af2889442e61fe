"""CUB-200-2011 (Wah et al., 2011) in its official layout: pairs from a list, or sampled with a seed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.data.base import PairDataset, PairRecord, as_box, normalise_split, split_list
from mmnet.errors import DatasetError, InputError

N_PARTS = 15
PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
         "right eye", "right leg", "right wing", "tail", "throat")
# A left-right mirror turns the bird's left eye/leg/wing (parts 7, 8, 9) into its right ones (11, 12, 13).
FLIP_PERM = np.array([0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14])


class _Row(NamedTuple):
    src: Path
    tgt: Path
    src_kps: np.ndarray  # (15, 2), NaN where not valid
    tgt_kps: np.ndarray
    valid: np.ndarray  # (15,) parts visible in both
    src_box: np.ndarray  # xyxy
    tgt_box: np.ndarray
    category: str


def _xywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    return np.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], axis=-1).astype(np.float32)


class CUB(PairDataset):
    """CUB-200-2011 bird pairs with the 15 part keypoints (row j = part j + 1, see `PARTS`).

    `root` is `CUB_200_2011/` or its parent. With `pairs` (a csv with columns `source_image,target_image,
    source_class,target_class,kp_ids,XA,YA,XB,YB,src_bbox,trg_bbox`, image paths relative to `images/`,
    ';'-separated lists, boxes `x;y;w;h`; relative names are also looked up in `root` and `root/pairs`) the
    list is used as is. Otherwise `n_pairs` distinct ordered pairs of distinct images are drawn with `seed`
    from `split` ("trn", "test" or "all"), of the same species when `same_class`, each sharing at least one
    part visible in both (read from images.txt, parts/part_locs.txt, bounding_boxes.txt,
    train_test_split.txt, image_class_labels.txt). Boxes are converted to x1 y1 x2 y2 = x, y, x + w, y + h.
    """

    name = "CUB-200-2011"
    source = "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)"
    default_threshold = "bbox"
    flip_perm = FLIP_PERM

    def __init__(self, root: str | Path, split: str = "test", pairs: str | Path | None = None, *,
                 n_pairs: int = 1000, same_class: bool = True, seed: int = 0) -> None:
        super().__init__(root, split)
        if not (self.root / "images.txt").is_file() and (self.root / "CUB_200_2011").is_dir():
            self.root = self.root / "CUB_200_2011"
        self.images = self.require(self.root / "images", "image folder")
        self.pairs_file = None if pairs is None else self._pair_file(Path(pairs).expanduser())
        if self.pairs_file is not None:
            self._rows = self._read_list(self.pairs_file)
        else:
            self.split = "all" if split == "all" else normalise_split(split, self.name)
            self._rows = self._sample(n_pairs, same_class, seed)
        self.require_all([r.src for r in self._rows] + [r.tgt for r in self._rows], "image")

    def _pair_file(self, path: Path) -> Path:
        for candidate in (path, self.root / path, self.root.parent / path, self.root.parent / "pairs" / path):
            if candidate.is_file():
                return candidate
        raise self.missing(path, "pair list")

    def _read_list(self, path: Path) -> list[_Row]:
        with open(path, newline="") as fh:
            lines = list(csv.DictReader(fh))
        if lines and "kp_ids" not in lines[0]:
            raise DatasetError(f"{self.name}: {path} is not a CUB pair list (no kp_ids column)")
        rows = []
        for line in lines:
            ids = split_list(line["kp_ids"]).astype(int) - 1
            valid = np.zeros(N_PARTS, bool)
            valid[ids] = True
            kps = np.full((2, N_PARTS, 2), np.nan, np.float32)
            kps[0, ids] = np.stack([split_list(line["XA"]), split_list(line["YA"])], 1)
            kps[1, ids] = np.stack([split_list(line["XB"]), split_list(line["YB"])], 1)
            src, tgt = line["source_image"], line["target_image"]
            category = Path(src).parent.name if line["source_class"] == line["target_class"] else "cross-species"
            rows.append(_Row(self.images / src, self.images / tgt, kps[0], kps[1], valid,
                             _xywh_to_xyxy(split_list(line["src_bbox"])),
                             _xywh_to_xyxy(split_list(line["trg_bbox"])), category))
        return rows

    def _by_id(self, name: str, ids: np.ndarray, per_image: int = 1) -> np.ndarray:
        """(I, per_image, C): the columns after the id (and part id) of an official table, in the order of `ids`."""
        table = np.loadtxt(self.require(self.root / name, "annotation"), ndmin=2)
        keys = table[:, 0] * per_image + (table[:, 1] if per_image > 1 else 0)
        table = table[np.argsort(keys, kind="stable")]
        if len(table) != per_image * len(ids) or not np.array_equal(table[::per_image, 0].astype(int), ids):
            raise DatasetError(f"{self.name}: {name} does not list the image ids of images.txt")
        return table[:, 1 + (per_image > 1):].reshape(len(ids), per_image, -1)

    def _sample(self, n_pairs: int, same_class: bool, seed: int) -> list[_Row]:
        lines = self.require(self.root / "images.txt", "image list").read_text().split("\n")
        names = dict(sorted((int(k), v) for k, v in (line.split(maxsplit=1) for line in lines if line.strip())))
        ids = np.array(list(names))
        parts = self._by_id("parts/part_locs.txt", ids, N_PARTS)  # (I, 15, 3): x, y, visible
        xy, visible = parts[..., :2].astype(np.float32), parts[..., 2] > 0
        box = _xywh_to_xyxy(self._by_id("bounding_boxes.txt", ids)[:, 0])
        train = self._by_id("train_test_split.txt", ids)[:, 0, 0] > 0
        cls = self._by_id("image_class_labels.txt", ids)[:, 0, 0].astype(int)
        pool = {"trn": np.flatnonzero(train), "test": np.flatnonzero(~train), "all": np.arange(len(ids))}[self.split]
        if n_pairs < 1 or len(pool) < 2:
            raise InputError(f"{self.name}: cannot draw {n_pairs} pairs from {len(pool)} {self.split} images")
        by_class = {c: pool[cls[pool] == c] for c in np.unique(cls[pool])}
        rng = np.random.default_rng(seed)
        chosen: dict[tuple[int, int], None] = {}
        for _ in range(100 * n_pairs):
            if len(chosen) == n_pairs:
                break
            s = int(rng.choice(pool))
            t = int(rng.choice(by_class[cls[s]] if same_class else pool))
            if s != t and (visible[s] & visible[t]).any():
                chosen.setdefault((s, t))
        if len(chosen) < n_pairs:
            raise InputError(f"{self.name}: found only {len(chosen)} distinct pairs of the {n_pairs} asked for")
        rows = []
        for s, t in chosen:
            valid = visible[s] & visible[t]
            src_kps, tgt_kps = (np.where(valid[:, None], xy[i], np.nan).astype(np.float32) for i in (s, t))
            src, tgt = names[ids[s]], names[ids[t]]
            category = Path(src).parent.name if cls[s] == cls[t] else "cross-species"
            rows.append(_Row(self.images / src, self.images / tgt,
                             src_kps, tgt_kps, valid, box[s], box[t], category))
        return rows

    def _record(self, row: _Row) -> PairRecord:
        return PairRecord(row.src, row.tgt, row.src_kps, row.tgt_kps, row.valid, as_box(row.src_box),
                          as_box(row.tgt_box), row.category, False, {}, self.size_of(row.src),
                          self.size_of(row.tgt), np.arange(1, N_PARTS + 1))
