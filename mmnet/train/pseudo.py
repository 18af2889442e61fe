"""Pseudo ground truth from a teacher matcher: forward-backward consistent matches on same-class photo pairs.

Image-level labels are all that most photo collections have (a folder per category). For a pair (I, J) of
photos of one category, a teacher (by default the training-free ``scot_efficientnet_lite2``) transfers a grid
of points of I to J and those matches back to I. A point is kept when it returns within
``cycle_tol * max(H_I, W_I)`` of where it started and its forward score is at least `min_score`; the
`max_points` best-scored kept points become one row of a keypoint-pair csv in the `CsvPairs` format, so
training reads them like any annotated list (``--csv pseudo.csv --image-root <folder>``).

    python -m mmnet.train.pseudo --photos photos/caltech101 --pairs-per-category 24 --out pseudo_caltech.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from mmnet.errors import DatasetError, InputError, MMNetError
from mmnet.train.pairs import default_data_root

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class _Teacher(Protocol):
    def match(self, source: Any, target: Any, keypoints: Any) -> Any: ...


@dataclass(frozen=True)
class PseudoLabelConfig:
    """pairs_per_category: ordered pairs of distinct photos drawn per category folder; grid: grid x grid source
    points (cell centres); cycle_tol: allowed forward-backward error as a fraction of the source's longer side;
    min_score: least forward score; margin: points within this fraction of a side from the source border are not
    queried, matches that land this close to the target border are dropped (uniform photo backgrounds match
    each other consistently); max_points / min_points: points kept per pair / pairs with fewer are dropped.
    """

    pairs_per_category: int = 24
    grid: int = 12
    cycle_tol: float = 0.03
    min_score: float = 0.0
    margin: float = 0.0
    max_points: int = 20
    min_points: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("pairs_per_category", "grid", "max_points", "min_points"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 < self.cycle_tol <= 1:
            raise InputError(f"cycle_tol must be in (0, 1], got {self.cycle_tol!r}")
        if not 0 <= self.margin < 0.5:
            raise InputError(f"margin must be in [0, 0.5), got {self.margin!r}")
        if self.min_points > self.max_points:
            raise InputError(f"min_points ({self.min_points}) must not exceed max_points ({self.max_points})")


def category_photos(root: str | Path) -> dict[str, list[Path]]:
    """``root/<category>/*.jpg`` -> {category: sorted photo paths}; categories with fewer than 2 photos dropped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"photo folder not found: {root}")
    photos = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(root.iterdir())
        if d.is_dir()
    }
    photos = {k: v for k, v in photos.items() if len(v) >= 2}
    if not photos:
        raise DatasetError(f"{root} holds no category folders with at least two photos")
    return photos


def category_pairs(photos: dict[str, list[Path]], per_category: int, seed: int) -> list[tuple[Path, Path]]:
    """`per_category` distinct ordered pairs of distinct photos per category (fewer where a folder is small)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for paths in photos.values():
        n = len(paths)
        flat = rng.choice(n * (n - 1), size=min(per_category, n * (n - 1)), replace=False)
        for k in flat.tolist():
            i, j = divmod(k, n - 1)
            pairs.append((paths[i], paths[j + (j >= i)]))
    return pairs


def grid_points(size: Sequence[int], grid: int, margin: float = 0.0) -> torch.Tensor:
    """Cell centres of a grid x grid partition of an (H, W) image without a `margin` (fraction of each side) on
    every border: (grid * grid, 2) xy pixels."""
    h, w = size
    steps = (torch.arange(grid) + 0.5) / grid * (1 - 2 * margin) + margin
    return torch.stack(torch.meshgrid(steps * w - 0.5, steps * h - 0.5, indexing="xy"), -1).reshape(-1, 2)


def inside_margin(points: torch.Tensor, size: Sequence[int], margin: float) -> torch.Tensor:
    """(N, 2) xy pixels -> (N,) bool: at least `margin` (fraction of the side) away from every border."""
    low = torch.tensor([margin * size[1], margin * size[0]]) - 0.5
    high = torch.tensor([(1 - margin) * size[1], (1 - margin) * size[0]]) - 0.5
    return ((points >= low) & (points <= high)).all(dim=1)


def consistent_matches(
    teacher: _Teacher,
    source: Any,
    target: Any,
    points: torch.Tensor,
    source_size: Sequence[int],
    config: PseudoLabelConfig,
    target_size: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The points of `source` whose teacher match in `target` maps back within the cycle tolerance, scores at
    least `min_score` and (with `target_size`) lands at least `margin` inside the target.

    Returns (source points (K, 2), target points (K, 2), forward scores (K,)), best score first, K <= max_points.
    """
    forward = teacher.match(source, target, points)
    found = torch.isfinite(forward.keypoints).all(1)
    back = teacher.match(target, source, forward.keypoints[found])
    error = torch.full((len(points),), float("inf"))
    error[found] = (back.keypoints - points[found]).norm(dim=1).nan_to_num(float("inf"))
    keep = (error <= config.cycle_tol * max(source_size)) & (forward.scores >= config.min_score)
    if target_size is not None:
        keep &= inside_margin(forward.keypoints.nan_to_num(-1e9), target_size, config.margin)
    order = torch.argsort(forward.scores[keep], descending=True)[: config.max_points]
    return points[keep][order], forward.keypoints[keep][order], forward.scores[keep][order]


def _joined(values: torch.Tensor, digits: int = 1) -> str:
    return ";".join(f"{v:.{digits}f}" for v in values.tolist())


def _point_columns(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> dict[str, str]:
    """(K, 2) source and target points and (K,) scores -> the csv's XA, YA, XB, YB and score cells."""
    columns = {"XA": a[:, 0], "YA": a[:, 1], "XB": b[:, 0], "YB": b[:, 1]}
    return {k: _joined(v) for k, v in columns.items()} | {"score": _joined(scores, 3)}


def pseudo_label(
    teacher: _Teacher,
    root: str | Path,
    out_csv: str | Path,
    config: PseudoLabelConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the pseudo-labelled pairs of the category folders under `root` to `out_csv` (paths relative to
    `root`); returns counts (pairs tried / kept, points kept). Coordinates are in the EXIF-oriented frame the
    teacher reads (`load_image`), the frame `CsvPairs` expects."""
    from mmnet.matching.images import image_size

    config = config or PseudoLabelConfig()
    root = Path(root).expanduser()
    pairs = category_pairs(category_photos(root), config.pairs_per_category, config.seed)
    rows, points_kept = [], 0
    for src, tgt in tqdm(pairs, disable=not progress, desc="pseudo-label", unit="pair"):
        size, target_size = image_size(src), image_size(tgt)
        points = grid_points(size, config.grid, config.margin)
        a, b, scores = consistent_matches(teacher, src, tgt, points, size, config, target_size)
        if len(a) < config.min_points:
            continue
        points_kept += len(a)
        names = {"source_image": src.relative_to(root).as_posix(), "target_image": tgt.relative_to(root).as_posix()}
        rows.append(names | _point_columns(a, b, scores))
    out_csv = Path(out_csv).expanduser()
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["source_image", "target_image", "XA", "YA", "XB", "YB", "score"])
        writer.writeheader()
        writer.writerows(rows)
    return {"pairs_tried": len(pairs), "pairs_kept": len(rows), "points_kept": points_kept, **asdict(config)}


def refilter(in_csv: str | Path, root: str | Path, out_csv: str | Path, config: PseudoLabelConfig) -> dict[str, Any]:
    """Apply `min_score`, `margin`, `max_points` and `min_points` of `config` to a csv written by `pseudo_label`
    (the cycle test needs the teacher and is not repeated); returns counts."""
    from mmnet.matching.images import image_size

    root = Path(root).expanduser()
    with open(in_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out, points_kept = [], 0
    for row in rows:
        a, b = (
            torch.tensor(np.stack([np.array(row[x].split(";"), float), np.array(row[y].split(";"), float)], 1))
            for x, y in (("XA", "YA"), ("XB", "YB"))
        )
        scores = torch.tensor(np.array(row["score"].split(";"), float))
        sizes = [image_size(root / row[name]) for name in ("source_image", "target_image")]
        keep = (scores >= config.min_score) & inside_margin(a, sizes[0], config.margin)
        keep &= inside_margin(b, sizes[1], config.margin)
        order = torch.argsort(scores[keep], descending=True, stable=True)[: config.max_points]
        a, b, scores = a[keep][order], b[keep][order], scores[keep][order]
        if len(a) < config.min_points:
            continue
        points_kept += len(a)
        out.append(row | _point_columns(a, b, scores))
    with open(out_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["source_image"])
        writer.writeheader()
        writer.writerows(out)
    return {"pairs_in": len(rows), "pairs_kept": len(out), "points_kept": points_kept}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mmnet.train.pseudo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--photos", required=True, help="folder of category folders (relative: under --data-root)")
    p.add_argument("--data-root", help="default $MMNET_DATA or ../shared/data")
    p.add_argument("--teacher", default="scot_efficientnet_lite2", help="any name mmnet.create_matcher knows")
    p.add_argument("--out", required=True, help="csv to write")
    p.add_argument(
        "--refilter",
        metavar="CSV",
        help="instead of running the teacher, apply --min-score, --margin, "
        "--max-points and --min-points to this csv written earlier",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--device", default="cpu")
    for name, default in asdict(PseudoLabelConfig()).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import mmnet

        config = PseudoLabelConfig(**{k: getattr(args, k) for k in asdict(PseudoLabelConfig())})
        root = (
            Path(args.photos)
            if Path(args.photos).is_dir()
            else (Path(args.data_root) if args.data_root else default_data_root()) / args.photos
        )
        if args.refilter:
            stats = refilter(args.refilter, root, args.out, config)
        else:
            stats = pseudo_label(mmnet.create_matcher(args.teacher, device=args.device), root, args.out, config)
    except MMNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
