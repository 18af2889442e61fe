"""CUB-200-2011 (Wah et al., 2011) in its official layout: pairs from a list, or sampled with a seed."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmnet.checks import check_bool, check_int
from mmnet.data.base import AnnotationFile, PairDataset, PairRecord, as_box, normalise_split
from mmnet.errors import InputError

N_PARTS = 15
PARTS = (
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
)
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


LIST_COLUMNS = (
    "source_image",
    "target_image",
    "source_class",
    "target_class",
    "kp_ids",
    "XA",
    "YA",
    "XB",
    "YB",
    "src_bbox",
    "trg_bbox",
)


def _partners(masks: np.ndarray) -> np.ndarray:
    """For each image of a group (its visible parts as a bit mask), how many OTHER images of the group share at
    least one visible part with it; O(n + 15 * 2**15) whatever the group size."""
    counts = np.bincount(masks, minlength=1 << N_PARTS).astype(np.int64)
    for bit in range(N_PARTS):  # counts[m] becomes the number of images whose parts are a subset of m
        view = counts.reshape(-1, 2, 1 << bit)
        view[:, 1, :] += view[:, 0, :]
    disjoint = counts[((1 << N_PARTS) - 1) ^ masks]  # images sharing no part with this one
    return len(masks) - disjoint - (masks != 0)


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

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        pairs: str | Path | None = None,
        *,
        n_pairs: int = 1000,
        same_class: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(root, split)
        if not (self.root / "images.txt").is_file() and (self.root / "CUB_200_2011").is_dir():
            self.root = self.root / "CUB_200_2011"
        self.images = self.require(self.root / "images", "image folder")
        self.pairs_file = None if pairs is None else self._pair_file(Path(pairs).expanduser())
        if self.pairs_file is not None:
            self._rows = self._read_list(self.pairs_file)
        else:
            n_pairs = check_int("n_pairs", n_pairs, min=1)
            seed = check_int("seed", seed, min=0)
            same_class = check_bool("same_class", same_class)
            self.split = "all" if split == "all" else normalise_split(split, self.name)
            self._rows = self._sample(n_pairs, same_class, seed)
        self.require_all([r.src for r in self._rows] + [r.tgt for r in self._rows], "image")

    def _pair_file(self, path: Path) -> Path:
        for candidate in (path, self.root / path, self.root.parent / path, self.root.parent / "pairs" / path):
            if candidate.is_file():
                return candidate
        raise self.missing(path, "pair list")

    def _read_list(self, path: Path) -> list[_Row]:
        f = AnnotationFile(self.name, path)
        header, lines = f.csv_rows(required=LIST_COLUMNS)
        rows = []
        for n, cells in lines:
            line = f.cells(header, n, cells)
            ids = f.numbers(line["kp_ids"], n, "kp_ids", integer=True)
            if ids.min() < 1 or ids.max() > N_PARTS:
                raise f.error(
                    n, f"column 'kp_ids': part id {int(ids[(ids < 1) | (ids > N_PARTS)][0])} is outside 1..{N_PARTS}"
                )
            if len(np.unique(ids)) != len(ids):
                raise f.error(n, "column 'kp_ids' lists a part twice")
            ids = ids - 1
            valid = np.zeros(N_PARTS, bool)
            valid[ids] = True
            kps = np.full((2, N_PARTS, 2), np.nan, np.float32)
            kps[0, ids] = np.stack([f.numbers(line[c], n, c, length=len(ids)) for c in ("XA", "YA")], 1)
            kps[1, ids] = np.stack([f.numbers(line[c], n, c, length=len(ids)) for c in ("XB", "YB")], 1)
            boxes = [self._list_box(f, line[c], n, c) for c in ("src_bbox", "trg_bbox")]
            src, tgt = (line[c].strip() for c in ("source_image", "target_image"))
            for c, value in (("source_image", src), ("target_image", tgt)):
                if not value:
                    raise f.error(n, f"empty cell in column {c!r}")
            classes = [f.number(line[c], n, c, integer=True) for c in ("source_class", "target_class")]
            category = Path(src).parent.name if classes[0] == classes[1] else "cross-species"
            rows.append(_Row(self.images / src, self.images / tgt, kps[0], kps[1], valid, boxes[0], boxes[1], category))
        return rows

    @staticmethod
    def _list_box(f: AnnotationFile, text: str, line: int, column: str) -> np.ndarray:
        box = f.numbers(text, line, column, length=4)
        if box[2] <= 0 or box[3] <= 0:
            raise f.error(line, f"column {column!r}: box x;y;w;h needs a positive width and height, got {text!r}")
        return _xywh_to_xyxy(box)

    def _table(self, name: str, columns: tuple[str, ...]) -> tuple[AnnotationFile, np.ndarray]:
        """An official whitespace-separated table as (rows, len(columns)) float64; malformed lines (wrong
        number of values, non-numbers, NaN/inf) are errors naming the line."""
        f = AnnotationFile(self.name, self.require(self.root / name, "annotation"))
        text = f.text()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns about an empty file; that is reported below
                table = np.loadtxt(io.StringIO(text), ndmin=2, dtype=np.float64)
        except ValueError:
            table = None
        if table is not None and table.size and table.shape[1] == len(columns) and np.isfinite(table).all():
            return f, table
        for i, line in enumerate(text.splitlines(), 1):  # slow path: find the line and say what is wrong
            cells = line.split()
            if not cells:
                continue
            if len(cells) != len(columns):
                raise f.error(
                    i, f"{len(cells)} values, expected {len(columns)} ({' '.join(columns)}); the file may be truncated"
                )
            for cell, column in zip(cells, columns, strict=True):
                f.number(cell, i, column)
        raise f.error(None, "the file is empty")

    def _by_id(
        self, name: str, columns: tuple[str, ...], ids: np.ndarray, per_image: int = 1
    ) -> tuple[AnnotationFile, np.ndarray]:
        """(I, per_image, C): the columns after the id (and part id) of an official table, in the order of `ids`."""
        f, table = self._table(name, columns)
        keys = table[:, 0] * per_image + (table[:, 1] - 1 if per_image > 1 else 0)
        raw, table = table, table[np.argsort(keys, kind="stable")]
        if (
            len(table) != per_image * len(ids)
            or not np.array_equal(table[::per_image, 0], ids)
            or (per_image > 1 and not np.array_equal(table[:, 1], np.tile(np.arange(1, per_image + 1), len(ids))))
        ):
            stray = np.flatnonzero(~np.isin(raw[:, 0], ids))
            if stray.size:
                raise f.error(None, f"image id {raw[stray[0], 0]:g} is not listed in images.txt")
            counts = dict(zip(*np.unique(raw[:, 0], return_counts=True), strict=True))
            for image in ids.tolist():
                have = counts.get(image, 0)
                if have != per_image:
                    raise f.error(
                        None,
                        f"image id {image} has {have} row(s), expected {per_image}"
                        + ("; the file may be truncated" if have < per_image else "")
                        + (f" (one per part, part ids 1..{per_image})" if per_image > 1 else ""),
                    )
            raise f.error(None, f"part ids must be 1..{per_image}, once per image")
        return f, table[:, 1 + (per_image > 1) :].reshape(len(ids), per_image, -1)

    def _image_list(self) -> dict[int, str]:
        f = AnnotationFile(self.name, self.require(self.root / "images.txt", "image list"))
        names: dict[int, str] = {}
        for i, line in enumerate(f.text().split("\n"), 1):
            if not line.strip():
                continue
            cells = line.split(maxsplit=1)
            if len(cells) != 2:
                raise f.error(i, f"expected '<image id> <path>', got {line.strip()!r}")
            image = int(f.number(cells[0], i, "image id", integer=True))
            if image in names:
                raise f.error(i, f"image id {image} is listed twice")
            names[image] = cells[1].strip()
        if not names:
            raise f.error(None, "the file is empty")
        return dict(sorted(names.items()))

    @staticmethod
    def _flags(f: AnnotationFile, values: np.ndarray, column: str) -> np.ndarray:
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            raise f.error(None, f"column {column!r} must be 0 or 1, found {values[bad][0]:g}")
        return values > 0

    def _sample(self, n_pairs: int, same_class: bool, seed: int) -> list[_Row]:
        names = self._image_list()
        ids = np.array(list(names))
        f, parts = self._by_id(
            "parts/part_locs.txt", ("image_id", "part_id", "x", "y", "visible"), ids, N_PARTS
        )  # (I, 15, 3): x, y, visible
        xy, visible = parts[..., :2].astype(np.float32), self._flags(f, parts[..., 2], "visible")
        f, boxes = self._by_id("bounding_boxes.txt", ("image_id", "x", "y", "width", "height"), ids)
        if (boxes[:, 0, 2:] <= 0).any():
            bad = int(np.flatnonzero((boxes[:, 0, 2:] <= 0).any(1))[0])
            raise f.error(None, f"image id {ids[bad]}: the box needs a positive width and height")
        box = _xywh_to_xyxy(boxes[:, 0])
        f, split = self._by_id("train_test_split.txt", ("image_id", "is_training_image"), ids)
        train = self._flags(f, split[:, 0, 0], "is_training_image")
        f, labels = self._by_id("image_class_labels.txt", ("image_id", "class_id"), ids)
        cls = labels[:, 0, 0].astype(int)
        pool = {"trn": np.flatnonzero(train), "test": np.flatnonzero(~train), "all": np.arange(len(ids))}[self.split]
        groups = {c: pool[cls[pool] == c] for c in np.unique(cls[pool])} if same_class else {0: pool}
        masks = (visible.astype(np.int64) << np.arange(N_PARTS)).sum(1)
        # targets[s]: how many partners each source image of the pool has (distinct image, same group, a shared
        # visible part); their sum is every pair there is, so an impossible request fails before any drawing
        targets = np.zeros(len(ids), np.int64)
        for members in groups.values():
            targets[members] = _partners(masks[members])
        possible = int(targets[pool].sum())
        if n_pairs > possible:
            kind = "same-species " if same_class else ""
            raise InputError(
                f"{self.name}: cannot draw {n_pairs} distinct pairs: the {self.split} split "
                f"({len(pool)} images) has only {possible} ordered {kind}pairs of distinct images "
                "that share a visible part"
            )
        rng = np.random.default_rng(seed)
        chosen: dict[tuple[int, int], None] = {}
        by_class = {c: pool[cls[pool] == c] for c in np.unique(cls[pool])}
        if 2 * n_pairs <= possible:  # sparse request: rejection sampling (expected O(n_pairs) draws)
            for _ in range(10 * n_pairs + 100):
                if len(chosen) == n_pairs:
                    break
                s = int(rng.choice(pool))
                t = int(rng.choice(by_class[cls[s]] if same_class else pool))
                if s != t and masks[s] & masks[t]:
                    chosen.setdefault((s, t))
        if len(chosen) < n_pairs:  # dense request (or rare acceptance): draw pair indices without replacement
            group_of = {int(s): members for members in groups.values() for s in members}
            sources = pool[targets[pool] > 0]
            ends = np.cumsum(targets[sources])
            partners: dict[int, np.ndarray] = {}
            for k in rng.choice(possible, size=min(possible, n_pairs + len(chosen)), replace=False):
                if len(chosen) == n_pairs:
                    break
                i = int(np.searchsorted(ends, k, side="right"))
                s = int(sources[i])
                if s not in partners:
                    members = group_of[s]
                    partners[s] = members[(masks[members] & masks[s] != 0) & (members != s)]
                chosen.setdefault((s, int(partners[s][k - (ends[i] - targets[s])])))
        rows = []
        paths: dict[int, Path] = {}  # one Path per image: building them dominates for millions of pairs
        for s, t in chosen:
            valid = visible[s] & visible[t]
            src_kps, tgt_kps = (np.where(valid[:, None], xy[i], np.nan).astype(np.float32) for i in (s, t))
            for i in (s, t):
                if i not in paths:
                    paths[i] = self.images / names[ids[i]]
            category = paths[s].parent.name if cls[s] == cls[t] else "cross-species"
            rows.append(_Row(paths[s], paths[t], src_kps, tgt_kps, valid, box[s], box[t], category))
        return rows

    def _record(self, row: _Row) -> PairRecord:
        return PairRecord(
            row.src,
            row.tgt,
            row.src_kps,
            row.tgt_kps,
            row.valid,
            as_box(row.src_box),
            as_box(row.tgt_box),
            row.category,
            False,
            {},
            self.size_of(row.src),
            self.size_of(row.tgt),
            np.arange(1, N_PARTS + 1),
        )
