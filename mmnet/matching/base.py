"""`BaseMatcher`: what every matcher family shares, and the result types.

A family subclasses `BaseMatcher` and implements `_match` and `_flow` on loaded images; the base class loads
and checks the inputs, batches, masks source points outside their image, runs without autograd, and provides
`warp`, `from_pretrained`, device and autocast handling; a family around a checkpoint's network subclasses
`CheckpointMatcher`, which adds the registry's `create`. Conventions: docs/conventions.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_bool, describe
from ..errors import InputError
from ..zoo._factory import create_matcher
from .geometry import Convention, inside_image, pixel_grid
from .images import ImageLike, load_image


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


def as_points(kpts: Any) -> torch.Tensor:
    """Any (N, 2) array-like -> float tensor (N, 2); raises InputError on a wrong shape or non-finite values."""
    try:
        points = torch.as_tensor(np.asarray(kpts.cpu() if isinstance(kpts, torch.Tensor) else kpts, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"keypoints must be an (N, 2) array of x, y pixels: {exc}") from exc
    if points.numel() == 0:
        return points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"keypoints must have shape (N, 2) of x, y pixels; got {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise InputError("keypoints contain NaN or infinite values")
    return points


def bilinear_extrapolate(values: torch.Tensor, grid_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of `values` (C, h, w) at grid positions `grid_xy` (H, W, 2), continued linearly
    beyond the outermost cell centres (from the two outermost cells of each axis) -> (C, H, W).

    An axis with a single cell is constant along it; an affine function of the grid position is reproduced
    exactly everywhere, inside and outside the cell centres.
    """
    _, h, w = values.shape

    def axis(g: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if n == 1:
            zero = torch.zeros_like(g, dtype=torch.long)
            return zero, zero, torch.zeros_like(g)
        i0 = g.floor().clamp(0, n - 2)
        return i0.long(), i0.long() + 1, g - i0  # the weight t leaves [0, 1] outside the outermost centres

    x0, x1, tx = axis(grid_xy[..., 0].float(), w)
    y0, y1, ty = axis(grid_xy[..., 1].float(), h)
    v = values.float()
    top = v[:, y0, x0] * (1 - tx) + v[:, y0, x1] * tx
    bottom = v[:, y1, x0] * (1 - tx) + v[:, y1, x1] * tx
    return top * (1 - ty) + bottom * ty


def _cell_positions(grid_axis: torch.Tensor, n: int) -> torch.Tensor:
    """Pixel position of each of `n` cell centres along one axis, from the grid position of every pixel along it
    (``grid_axis`` (P,), affine in the pixel index): the inverse of the matcher's pixel-to-grid mapping."""
    cells = torch.arange(n, device=grid_axis.device, dtype=torch.float32)
    start = grid_axis[0].float()
    if len(grid_axis) < 2:  # one pixel: its own position is all that is known; any slope gives it back exactly
        return cells - start
    slope = (grid_axis[-1].float() - start) / (len(grid_axis) - 1)
    return (cells - start) / slope


def cells_to_flow(cell_map: torch.Tensor, grid_xy: torch.Tensor) -> FlowResult:
    """Per-cell (target x, target y, score) (3, h, w) -> `FlowResult` at every source pixel.

    grid_xy (Hs, Ws, 2): the grid position of each source pixel (affine in the pixel, as every matcher's
    pixel-to-grid mapping is). Each cell's *displacement* (its target minus its own source position) is
    interpolated bilinearly at the pixel's grid position and, for pixels beyond the outermost cell centres,
    extrapolated linearly from the two outermost cells (an axis with one cell keeps its displacement). So a flow
    that is exact at the cell centres is exact at every pixel when it is an affine map (identity, shifts,
    resizes, aspect changes), the border band included. Scores are interpolated bilinearly, border cells
    extending outwards, and clamped to [0, 1].
    """
    h, w = cell_map.shape[-2:]
    xs = _cell_positions(grid_xy[0, :, 0], w)
    ys = _cell_positions(grid_xy[:, 0, 1], h)
    displacement = cell_map[:2].float() - torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)])
    flow = bilinear_extrapolate(displacement, grid_xy)
    norm = torch.stack([grid_xy[..., 0] / max(w - 1, 1), grid_xy[..., 1] / max(h - 1, 1)], -1) * 2 - 1
    scores = F.grid_sample(
        cell_map[None, 2:].float(), norm[None].float(), mode="bilinear", padding_mode="border", align_corners=True
    )[0, 0]
    return FlowResult(flow.cpu(), scores.clamp(0, 1).cpu())


def warp_image(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[:, y, x] = image at (x, y) + flow[:, y, x]`` (bilinear, zeros outside).

    image (C, H', W'), flow (2, H, W) in pixels of `image` -> (C, H, W).
    """
    _, h, w = flow.shape
    pos = pixel_grid((h, w)).permute(2, 0, 1) + flow.float()
    size = torch.tensor([image.shape[-1], image.shape[-2]], dtype=torch.float32).view(2, 1, 1)
    norm = ((pos + 0.5) / size * 2 - 1).permute(1, 2, 0)
    return F.grid_sample(image[None].float(), norm[None], mode="bilinear", align_corners=False)[0]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else the CPU; anything else must name a device this machine has."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"
    if not isinstance(device, (str, torch.device)):
        raise InputError(f"device must be {allowed}, got {describe(device)}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"device must be {allowed}, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {str(device)!r}: no CUDA GPU is available here (torch.cuda.is_available() "
                "is False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), indices 0..{torch.cuda.device_count() - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device {str(device)!r}: MPS is not available here; use device='cpu'")
    elif dev.type != "cpu":
        raise InputError(f"device must be {allowed}, got {str(device)!r}")
    return dev


class BaseMatcher(ABC):
    """Keypoint transfer, dense flow and warping between image pairs; one subclass per matcher family.

    A subclass implements `_match` and `_flow` on loaded images (float RGB (3, H, W) in [0, 1], original sizes)
    and may override `convention` (which pixel extent counts as inside an image). Everything public is here.

    Args:
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        amp: run the network under `autocast` on CUDA (bfloat16 where supported, else float16).
    """

    name: str = ""

    def __init__(self, device: str | torch.device | None = None, amp: bool = False) -> None:
        self.device = resolve_device(device)
        self.amp = check_bool("amp", amp)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> BaseMatcher:
        """The matcher of a registered name (``arch`` or ``arch.tag``), hub repo id, folder or file, whatever its
        family (the registry decides, see `mmnet.create_matcher`); kwargs go to the family's matcher."""
        return create_matcher(name_or_path, **kwargs)

    @property
    def convention(self) -> Convention:
        """``"center"``: an (H, W) image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]; ``"corner"``: [0, W] x [0, H]."""
        return "center"

    def autocast(self) -> Any:
        """The autocast context of the network: bfloat16/float16 with `amp` on CUDA, else a no-op."""
        if not self.amp or self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    # -- what a family implements ----------------------------------------------------------------------------

    @abstractmethod
    def _match(
        self, sources: list[torch.Tensor], targets: list[torch.Tensor], points: list[torch.Tensor]
    ) -> list[MatchResult]:
        """Images (3, H, W) and source points (N, 2) -> one result per pair, in original target pixels.

        Points outside the source image may come back as anything: the caller masks them.
        """

    @abstractmethod
    def _flow(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> list[FlowResult]:
        """Images (3, H, W) -> one dense source-to-target `FlowResult` per pair (`cells_to_flow` helps)."""

    # -- public API ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def match_batch(
        self, sources: Sequence[ImageLike], targets: Sequence[ImageLike], keypoints: Sequence[Any]
    ) -> list[MatchResult]:
        """`match` for several pairs in one call; the pairs may have different sizes and point counts."""
        if not len(sources) == len(targets) == len(keypoints):
            raise InputError(f"got {len(sources)} sources, {len(targets)} targets, {len(keypoints)} keypoint sets")
        if not sources:
            return []
        points = [as_points(k) for k in keypoints]
        src = [load_image(s) for s in sources]
        results = self._match(src, [load_image(t) for t in targets], points)
        out = []
        for result, p, image in zip(results, points, src, strict=True):
            inside = inside_image(p, image.shape[1:], self.convention)
            out.append(
                MatchResult(
                    result.keypoints.masked_fill(~inside[:, None], float("nan")),
                    result.scores.masked_fill(~inside, 0.0),
                )
            )
        return out

    def match(self, source: ImageLike, target: ImageLike, keypoints: Any) -> MatchResult:
        """Transfer `keypoints` ((N, 2) xy pixels of `source`) to `target`; returns target pixels and scores."""
        return self.match_batch([source], [target], [keypoints])[0]

    @torch.inference_mode()
    def flow_batch(self, sources: Sequence[ImageLike], targets: Sequence[ImageLike]) -> list[FlowResult]:
        """`flow` for several pairs in one call."""
        if len(sources) != len(targets):
            raise InputError(f"got {len(sources)} sources and {len(targets)} targets")
        if not sources:
            return []
        return self._flow([load_image(s) for s in sources], [load_image(t) for t in targets])

    def flow(self, source: ImageLike, target: ImageLike) -> FlowResult:
        """Dense flow from every `source` pixel to `target`, at the source's original resolution."""
        return self.flow_batch([source], [target])[0]

    def warp(self, source: ImageLike, target: ImageLike) -> torch.Tensor:
        """The source image resampled into the target's frame, (3, Ht, Wt) in [0, 1]: each target pixel takes
        the colour of the source point it matches (uses ``flow(target, source)``)."""
        return warp_image(load_image(source), self.flow(target, source).flow)


_M = TypeVar("_M", bound="CheckpointMatcher")


class CheckpointMatcher(BaseMatcher):
    """A `BaseMatcher` around a network of a checkpoint family, its first argument: `create` builds or loads it.

    A subclass sets `_new_model` and `_load_model` (e.g. ``staticmethod(load_cats)``).
    """

    @staticmethod
    @abstractmethod
    def _new_model(name: str) -> Any:
        """A fresh, randomly initialised model of an architecture name."""

    @staticmethod
    @abstractmethod
    def _load_model(
        name_or_path: str | Path, *, revision: str | None, cache_dir: str | Path | None, local_files_only: bool
    ) -> Any:
        """The model of a registered name, hub repo id, folder or file (eval mode, CPU)."""

    @classmethod
    def create(
        cls: type[_M],
        name_or_path: str | Path,
        *,
        pretrained: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> _M:
        """The registry's matcher factory: weights (registered name, hub repo id, folder or file) in a matcher of
        this class (``pretrained=False``: a fresh, randomly initialised model of the architecture); kwargs go to
        the class."""
        if not pretrained:
            return cls(cls._new_model(str(name_or_path)), **kwargs)
        model = cls._load_model(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return cls(model, **kwargs)
