"""Shared fixtures: the benchmark data folder and the embedded example images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("MMNET_DATA", REPO.parent / "shared" / "data"))
EXAMPLES = REPO / "examples"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """`../shared/data` (or `$MMNET_DATA`); tests that need it skip when it is absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_ROOT} (set MMNET_DATA to the shared data folder)")
    return DATA_ROOT
