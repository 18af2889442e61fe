"""`Matcher`: keypoint transfer and dense flow between two images of any size, in their own pixels.

Keypoint transfer computes only the correlation rows of the query points (memory grows with the image area,
not its square); dense flow walks over the source cells in chunks. Conventions: docs/conventions.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .geometry import (
    Convention,
    argmax_readout,
    bilinear_cells,
    blend_rows,
    grid_to_pixels,
    pixels_to_grid,
    soft_argmax_readout,
)
from .hub import from_pretrained
from .images import ImageLike, PreprocessConfig, load_image, prepare
from .model import MMNet


class MatchResult(NamedTuple):
    """Transferred keypoints: ``keypoints`` (N, 2) xy in target pixels, ``scores`` (N,) in [0, 1].

    Source points outside the source image get NaN coordinates and score 0.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor


class FlowResult(NamedTuple):
    """Dense source-to-target flow: ``flow`` (2, Hs, Ws) with ``target_xy = source_xy + flow[:, y, x]``
    (channel 0 is dx, 1 is dy, in pixels), and ``scores`` (Hs, Ws) in [0, 1]."""

    flow: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class ReadoutConfig:
    """How scores become positions.

    level: which level's complemented scores to read (coarse to fine; -1 = finest, 2 = the official choice).
    method: ``"softargmax"`` (sub-cell mean in a `window` x `window` patch around the argmax) or ``"argmax"``.
    convention: ``"center"`` or ``"corner"`` (official) grid/pixel convention, see `mmnet.geometry`.
    """

    level: int = -1
    method: Literal["softargmax", "argmax"] = "softargmax"
    window: int = 5
    convention: Convention = "center"


PRESETS: dict[str, ReadoutConfig] = {
    "default": ReadoutConfig(),
    "official": ReadoutConfig(level=2, method="argmax", convention="corner"),
}


def _as_points(kpts: Any) -> torch.Tensor:
    """Any (N, 2) array-like -> float tensor (N, 2); raises InputError on a wrong shape or non-finite values."""
    try:
        points = torch.as_tensor(np.asarray(kpts.cpu() if isinstance(kpts, torch.Tensor) else kpts,
                                            dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"keypoints must be an (N, 2) array of x, y pixels: {exc}") from exc
    if points.numel() == 0:
        return points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"keypoints must have shape (N, 2) of x, y pixels; got {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise InputError("keypoints contain NaN or infinite values")
    return points


class Matcher:
    """Semantic correspondence between image pairs with an MMNet.

    Args:
        model: an `MMNet` (e.g. from `mmnet.create_model` or `mmnet.from_pretrained`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        preset: ``"default"`` or ``"official"`` readout; keyword `readout` fields override it.
        input_size: (H, W) the images are resized to (default: the checkpoint's).
        amp: autocast on CUDA (bfloat16 where supported, else float16); default on for CUDA, except with the
            official readout, which runs in float32 like the official test.
        chunk_size: source cells per step in dense flow.
    """

    def __init__(self, model: MMNet, *, device: str | torch.device | None = None, preset: str | None = None,
                 input_size: tuple[int, int] | None = None, amp: bool | None = None, chunk_size: int = 2048,
                 **readout: Any) -> None:
        if preset is not None and preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        base = PRESETS[preset] if preset else ReadoutConfig(**model.readout)
        self.readout = replace(base, **readout)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        preprocess = model.preprocess
        if preset == "official":
            preprocess = replace(preprocess, size=(224, 320), antialias=False)
        self.preprocess: PreprocessConfig = replace(preprocess, size=tuple(input_size)) if input_size else preprocess
        # the official readout is a hard argmax over raw scores: keep it in float32 (as the official test) by default
        self.amp = (self.device.type == "cuda" and self.readout != PRESETS["official"]) if amp is None else amp
        self.chunk_size = chunk_size
        if not -model.num_levels <= self.readout.level < model.num_levels:
            raise InputError(f"level {self.readout.level} out of range for {model.num_levels} levels")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        **kwargs: Any) -> Matcher:
        """Load weights (registered name, hub repo id, folder or file) and wrap them; kwargs go to `Matcher`."""
        if isinstance(name_or_path, str) and name_or_path.startswith("scot_"):  # training-free SCOT, same API
            from .scot import ScotMatcher  # lazy: mmnet.scot imports this module

            return ScotMatcher.from_pretrained(name_or_path, local_files_only=local_files_only, **kwargs)
        model = from_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only)
        return cls(model, **kwargs)

    # -- internals -------------------------------------------------------------------------------------------

    @property
    def _level(self) -> int:
        return self.readout.level % self.model.num_levels

    def _autocast(self) -> Any:
        if not self.amp or self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _inputs(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        tensors = [load_image(image) for image in images]
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        batch = torch.cat([prepare(t[None].to(self.device), self.preprocess) for t in tensors])
        return batch, sizes

    def _read(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.readout.method == "argmax":
            return argmax_readout(scores)
        if self.readout.method == "softargmax":
            return soft_argmax_readout(scores, self.readout.window)
        raise InputError(f"unknown readout method {self.readout.method!r}")

    def _to_target_pixels(self, grid_xy: torch.Tensor, grid_size: Sequence[int],
                          sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(B, M, 2) target grid xy -> target original pixels."""
        conv = self.readout.convention
        pixels = grid_to_pixels(grid_xy, self.preprocess.size, grid_size, conv)
        return torch.stack([grid_to_pixels(p, size, self.preprocess.size, conv) for p, size in zip(pixels, sizes,
                                                                                                   strict=True)])

    # -- public API ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def match_batch(self, sources: Sequence[ImageLike], targets: Sequence[ImageLike],
                    keypoints: Sequence[Any]) -> list[MatchResult]:
        """`match` for several pairs in one batch; the pairs may have different sizes and point counts."""
        if not len(sources) == len(targets) == len(keypoints):
            raise InputError(f"got {len(sources)} sources, {len(targets)} targets, {len(keypoints)} keypoint sets")
        if not sources:
            return []
        points = [_as_points(k) for k in keypoints]
        src, src_sizes = self._inputs(sources)
        tgt, tgt_sizes = self._inputs(targets)
        n = max(max(len(p) for p in points), 1)
        conv, size = self.readout.convention, self.preprocess.size
        padded = torch.zeros(len(points), n, 2, device=self.device)
        inside = torch.zeros(len(points), n, dtype=torch.bool, device=self.device)
        lo = 0.0 if conv == "corner" else -0.5  # the image spans [0, W] in corner coordinates, [-0.5, W - 0.5] else
        for i, (p, (h, w)) in enumerate(zip(points, src_sizes, strict=True)):
            padded[i, : len(p)] = pixels_to_grid(p.to(self.device), (h, w), size, conv)
            inside[i, : len(p)] = (p[:, 0] >= lo) & (p[:, 0] <= w + lo) & (p[:, 1] >= lo) & (p[:, 1] <= h + lo)
        with self._autocast():
            src_feats, tgt_feats = self.model.pair_features(src, tgt, self._level)
            src_grid, tgt_grid = src_feats[self._level].shape[-2:], tgt_feats[self._level].shape[-2:]
            cells, weights = bilinear_cells(pixels_to_grid(padded, size, src_grid, conv), src_grid)
            rows = self.model.correlation_rows(src_feats, tgt_feats, cells.flatten(1), self._level)[-1]
            grid_xy, scores = self._read(blend_rows(rows, weights))
        target = self._to_target_pixels(grid_xy, tgt_grid, tgt_sizes)
        target = target.masked_fill(~inside[..., None], float("nan"))
        scores = scores.masked_fill(~inside, 0.0)
        return [MatchResult(target[i, : len(p)].cpu(), scores[i, : len(p)].cpu()) for i, p in enumerate(points)]

    def match(self, source: ImageLike, target: ImageLike, keypoints: Any) -> MatchResult:
        """Transfer `keypoints` ((N, 2) xy pixels of `source`) to `target`; returns target pixels and scores."""
        return self.match_batch([source], [target], [keypoints])[0]

    @torch.inference_mode()
    def flow_batch(self, sources: Sequence[ImageLike], targets: Sequence[ImageLike]) -> list[FlowResult]:
        """`flow` for several pairs in one batch."""
        if len(sources) != len(targets):
            raise InputError(f"got {len(sources)} sources and {len(targets)} targets")
        if not sources:
            return []
        src, src_sizes = self._inputs(sources)
        tgt, tgt_sizes = self._inputs(targets)
        with self._autocast():
            src_feats, tgt_feats = self.model.pair_features(src, tgt, self._level)
            (h, w), tgt_grid = src_feats[self._level].shape[-2:], tgt_feats[self._level].shape[-2:]
            all_cells = torch.arange(h * w, device=self.device).expand(len(src), -1)
            read = [self._read(self.model.correlation_rows(src_feats, tgt_feats, chunk, self._level)[-1])
                    for chunk in all_cells.split(self.chunk_size, dim=1)]
        target = self._to_target_pixels(torch.cat([r[0] for r in read], 1), tgt_grid, tgt_sizes)
        cell_maps = torch.cat([target.transpose(1, 2), torch.cat([r[1] for r in read], 1)[:, None]], 1)
        cell_maps = cell_maps.view(len(src), 3, h, w)
        return [self._dense(cell_maps[i], size, (h, w)) for i, size in enumerate(src_sizes)]

    def _dense(self, cell_map: torch.Tensor, size: tuple[int, int], grid: Sequence[int]) -> FlowResult:
        """Per-cell (target x, target y, score) (3, h, w) -> FlowResult at the source's original size."""
        height, width = size
        ys, xs = torch.meshgrid(torch.arange(height, device=self.device, dtype=torch.float32),
                                torch.arange(width, device=self.device, dtype=torch.float32), indexing="ij")
        pixels = torch.stack([xs, ys], -1)
        conv = self.readout.convention
        g = pixels_to_grid(pixels_to_grid(pixels, size, self.preprocess.size, conv), self.preprocess.size, grid, conv)
        norm = torch.stack([g[..., 0] / max(grid[1] - 1, 1), g[..., 1] / max(grid[0] - 1, 1)], -1) * 2 - 1
        dense = F.grid_sample(cell_map[None].float(), norm[None], mode="bilinear", padding_mode="border",
                              align_corners=True)[0]
        flow = dense[:2] - pixels.permute(2, 0, 1)
        return FlowResult(flow.cpu(), dense[2].clamp(0, 1).cpu())

    def flow(self, source: ImageLike, target: ImageLike) -> FlowResult:
        """Dense flow from every `source` pixel to `target`, at the source's original resolution."""
        return self.flow_batch([source], [target])[0]

    def warp(self, source: ImageLike, target: ImageLike) -> torch.Tensor:
        """The source image resampled into the target's frame, (3, Ht, Wt) in [0, 1]: each target pixel takes
        the colour of the source point it matches (uses ``flow(target, source)``)."""
        flow = self.flow(target, source).flow
        return warp_image(load_image(source), flow)


def warp_image(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[:, y, x] = image at (x, y) + flow[:, y, x]`` (bilinear, zeros outside).

    image (C, H', W'), flow (2, H, W) in pixels of `image` -> (C, H, W).
    """
    _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    pos = torch.stack([xs, ys]) + flow.float()
    size = torch.tensor([image.shape[-1], image.shape[-2]], dtype=torch.float32).view(2, 1, 1)
    norm = ((pos + 0.5) / size * 2 - 1).permute(1, 2, 0)
    return F.grid_sample(image[None].float(), norm[None], mode="bilinear", align_corners=False)[0]
