"""Trivial reference matchers with the `Matcher.match` signature."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from PIL import Image


class BaselineMatch(NamedTuple):
    """`keypoints` (N, 2) float32 xy target pixels; `scores` (N,) float32."""

    keypoints: np.ndarray
    scores: np.ndarray


class RescaleMatcher:
    """Maps each source keypoint by its relative position: (x * W_tgt / W_src, y * H_tgt / H_src).

    Needs only the image sizes, so lazily opened PIL images are never decoded.
    """

    name = "rescale"

    def match(self, source: Image.Image, target: Image.Image, keypoints: Any) -> BaselineMatch:
        kps = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2)
        scale = np.array([target.width / source.width, target.height / source.height], dtype=np.float32)
        return BaselineMatch(kps * scale, np.ones(len(kps), dtype=np.float32))
