"""A validation list carved from a training pair list, disjoint in images, so checkpoints are chosen without test data.

`carve_validation` holds out a seeded fraction of the *images* of each class: validation pairs are the pairs
whose two images are both held out, training pairs those that touch no held-out image (pairs with one of each
are dropped). The split is a pure function of the list, the fraction and the seed.

    cd $MMNET_DATA/cub-200-2011-cls001-050/pairs
    python -m mmnet.train.splits trn_pairs_cub_cls001-050_sameclass_seed0.csv --out ~/splits  # <stem>_train/_val.csv
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmnet.errors import DatasetError, InputError


def _class_of(row: dict[str, str]) -> str:
    return row.get("source_class") or Path(row["source_image"]).parent.as_posix()


def carve_validation(
    pairs_csv: str | Path, out_dir: str | Path, fraction: float = 0.15, seed: int = 0
) -> tuple[Path, Path]:
    """Split `pairs_csv` into ``<stem>_train.csv`` and ``<stem>_val.csv`` in `out_dir`; returns their paths."""
    if not 0 < fraction < 1:
        raise InputError(f"fraction must be in (0, 1), got {fraction!r}")
    pairs_csv = Path(pairs_csv).expanduser()
    if not pairs_csv.is_file():
        raise DatasetError(f"pair list not found: {pairs_csv}")
    with open(pairs_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or [], list(reader)
    if not rows or "source_image" not in fields or "target_image" not in fields:
        raise DatasetError(f"{pairs_csv}: needs a header with source_image,target_image and at least one row")
    images_by_class: dict[str, set[str]] = {}
    for row in rows:
        images_by_class.setdefault(_class_of(row), set()).update((row["source_image"], row["target_image"]))
    rng = np.random.default_rng(seed)
    held_out: set[str] = set()
    for cls in sorted(images_by_class):
        images = sorted(images_by_class[cls])
        held_out.update(rng.choice(images, size=max(1, round(fraction * len(images))), replace=False).tolist())
    split = {
        "train": [r for r in rows if r["source_image"] not in held_out and r["target_image"] not in held_out],
        "val": [r for r in rows if r["source_image"] in held_out and r["target_image"] in held_out],
    }
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, subset in split.items():
        path = out_dir / f"{pairs_csv.stem}_{name}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(subset)
        paths.append(path)
    return paths[0], paths[1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mmnet.train.splits", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("pairs", help="training pair list (csv with source_image,target_image[,source_class])")
    p.add_argument("--out", required=True, help="folder for <stem>_train.csv and <stem>_val.csv")
    p.add_argument("--fraction", type=float, default=0.15, help="fraction of each class's images held out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train, val = carve_validation(args.pairs, args.out, args.fraction, args.seed)
    for path in (train, val):
        with open(path) as fh:
            print(f"{path}: {sum(1 for _ in fh) - 1} pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
