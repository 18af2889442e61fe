"""Benchmark pair datasets (PF-PASCAL, PF-WILLOW, SPair-71k, CUB-200-2011) read from local folders.

Nothing is downloaded: each loader checks the folder layout and says which file is missing and where the
dataset can be obtained. Every item is a `PairRecord` in original-image pixels with a validity mask.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmnet.checks import check_keys
from mmnet.data.base import PairDataset, PairRecord, mirror_box, mirror_points
from mmnet.data.cub import CUB
from mmnet.data.pfpascal import PFPascal
from mmnet.data.pfwillow import PFWillow
from mmnet.data.spair import SPair
from mmnet.errors import InputError

DATASETS: dict[str, type[PairDataset]] = {"pf-pascal": PFPascal, "pf-willow": PFWillow, "spair": SPair, "cub": CUB}


def load_dataset(
    name: str, root: str | Path, split: str = "test", pairs: str | Path | None = None, **kw: Any
) -> PairDataset:
    """`name` in {pf-pascal, pf-willow, spair, cub}; extra keywords go to the dataset class
    (SPair: `size`; CUB: `n_pairs`, `same_class`, `seed`)."""
    cls = DATASETS.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    # every loader is built as (root, split=..., pairs=..., **its own keywords); PairDataset itself takes no pair list
    build: Callable[..., PairDataset] = cls
    allowed = [p for p in inspect.signature(build).parameters if p not in ("root", "split", "pairs")]
    check_keys(f"keyword argument(s) for {cls.name}", kw, allowed)
    return build(root, split=split, pairs=pairs, **kw)


__all__ = [
    "CUB",
    "DATASETS",
    "PFPascal",
    "PFWillow",
    "PairDataset",
    "PairRecord",
    "SPair",
    "load_dataset",
    "mirror_box",
    "mirror_points",
]
