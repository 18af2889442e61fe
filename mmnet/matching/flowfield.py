"""`FlowFieldMatcher`: what the matchers whose network gives one target position per source cell share.

A family (CATs, LPMFlow) runs its network in `_run` (a per-cell field and a score map on its `grid`) and says
how that field reads as a displacement and as target cells (`_shift`, `_target_cells`); this class checks the
preset and input size and turns them into keypoints and dense flow in original pixels with the ``"exact"`` and
``"official"`` point rules (see the families' module docstrings). `open_family_checkpoint` starts the families'
loaders.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..zoo._registry import get_pretrained_cfg, is_registered
from ..zoo.hub import Source, open_checkpoint, source_of
from .base import CheckpointMatcher, FlowResult, MatchResult, bilinear_extrapolate, cells_to_flow
from .geometry import Convention, grid_to_pixels, pixel_grid, pixels_to_grid, tensor_hw
from .images import PreprocessConfig, prepare
from .readouts import check_preset

PRESETS = ("exact", "official")
#: Old names (accepted for one release with a DeprecationWarning; silently in a checkpoint's config.json).
RENAMED = {"default": "exact"}

_T = TypeVar("_T")


class FlowFieldModel(Protocol):
    """What a family's network carries (`mmnet.models.cats.CATs`, `mmnet.models.lpmflow.LPMFlow`)."""

    preprocess: PreprocessConfig
    readout: dict[str, Any]

    @property
    def architecture(self) -> str: ...

    def eval(self: _T) -> _T: ...

    def to(self: _T, device: torch.device) -> _T: ...


ModelT = TypeVar("ModelT", bound=FlowFieldModel)


def is_path(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` is an existing file or folder (which wins over a registered name)."""
    return Path(name_or_path).expanduser().exists()


def open_family_checkpoint(
    name_or_path: str | Path | Source,
    prefix: str,
    family: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[Path, Path, dict[str, Any]]:
    """`open_checkpoint` of a registered name, folder, safetensors file or hub id whose architecture must start
    with `prefix` (`family` names the model in the error) -> (config path, weights path, config)."""
    source = name_or_path
    if isinstance(name_or_path, (str, Path)) and not is_path(name_or_path) and is_registered(str(name_or_path)):
        source = source_of(get_pretrained_cfg(str(name_or_path)), str(name_or_path))
    config_path, weights_path, config = open_checkpoint(
        source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    if not str(config.get("architecture", "")).startswith(prefix):
        raise CheckpointError(
            f"{config_path} describes {config.get('architecture')!r}, not {family}; "
            "load it with mmnet.create_matcher instead"
        )
    return config_path, weights_path, config


class FlowFieldMatcher(CheckpointMatcher, Generic[ModelT]):
    """A `CheckpointMatcher` reading keypoints and flow from a per-cell field with the ``exact`` or ``official`` rule.

    Arguments as in the families' matchers (`CatsMatcher`, `LpmflowMatcher`); a subclass sets `min_input_side` (and
    `official_input_size` when the official preset has its own) and implements `grid`, `_run`, `_shift` and
    `_target_cells`.
    """

    #: The smallest input side the network takes.
    min_input_side: ClassVar[int]
    #: The official preset's default input size, when it is not the model's own.
    official_input_size: ClassVar[tuple[int, int] | None] = None

    def __init__(
        self,
        model: ModelT,
        *,
        device: str | torch.device | None = None,
        preset: str | None = None,
        input_size: tuple[int, int] | None = None,
        amp: bool = False,
    ) -> None:
        preset = check_preset(preset, PRESETS, RENAMED) or check_preset(
            model.readout.get("preset", "exact"), PRESETS, RENAMED, warn=False
        )
        super().__init__(device, amp)
        self.preset = preset
        self.model = model.eval().to(self.device)
        self.name = model.architecture
        official = self.official_input_size if preset == "official" else None
        size = tuple(int(s) for s in input_size) if input_size else tuple(official or model.preprocess.size)
        if len(size) != 2 or min(size) < self.min_input_side:
            raise InputError(
                f"input_size must be (H, W) with both at least {self.min_input_side} pixels; got {input_size}"
            )
        self.preprocess: PreprocessConfig = replace(model.preprocess, size=size)

    @property
    def convention(self) -> Convention:
        return "corner" if self.preset == "official" else "center"

    @property
    @abstractmethod
    def grid(self) -> tuple[int, int]:
        """(h, w) of the source cell grid the field lives on."""

    @abstractmethod
    def _run(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on a batch: per-cell field (B, 2, h, w) and score map (B, h, w)."""

    def _inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Images (3, H, W) -> the network's normalised input batch."""
        return torch.cat([prepare(t[None].to(self.device), self.preprocess) for t in images])

    @abstractmethod
    def _shift(self, field: torch.Tensor) -> torch.Tensor:
        """One pair's field (2, h, w) -> displacement (2, h, w) in cells of the grid."""

    @abstractmethod
    def _target_cells(self, field: torch.Tensor) -> torch.Tensor:
        """One pair's field (2, h, w) -> target cell xy (h, w, 2) per source cell."""

    def _transfer(
        self,
        field: torch.Tensor,
        mass: torch.Tensor,
        points: torch.Tensor,
        src_size: tuple[int, int],
        tgt_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair: (2, h, w) field + (h, w) scores, (N, 2) source pixels -> target pixels, scores."""
        grid = self.grid
        shift = self._shift(field)
        if self.preset == "official":
            size = self.preprocess.size
            up = F.interpolate(shift[None], size=size, mode="bilinear", align_corners=False)[0]
            up = up * torch.tensor([size[1] / grid[1], size[0] / grid[0]], device=up.device).view(2, 1, 1)
            frame = pixels_to_grid(points, src_size, size, "corner").long()  # truncation, as the official .long()
            px, py = frame[:, 0].clamp(0, size[1] - 1), frame[:, 1].clamp(0, size[0] - 1)
            predicted = torch.stack([px, py], -1).float() + up[:, py, px].T
            cell = pixels_to_grid(torch.stack([px, py], -1).float(), size, grid, "center")
            return grid_to_pixels(predicted, tgt_size, size, "corner"), self._sample(mass[None], cell)[0]
        cell = pixels_to_grid(points, src_size, grid, "center")
        # the displacement, extrapolated beyond the outermost cell centres exactly as `cells_to_flow` does
        target = cell + bilinear_extrapolate(shift, cell[:, None])[:, :, 0].T
        return grid_to_pixels(target, tgt_size, grid, "center"), self._sample(mass[None], cell)[0].clamp(0, 1)

    @staticmethod
    def _sample(maps: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Bilinear (C, h, w) at (N, 2) cell xy (border cells extend outwards) -> (C, N)."""
        h, w = maps.shape[-2:]
        norm = torch.stack([cell[:, 0] / max(w - 1, 1), cell[:, 1] / max(h - 1, 1)], -1) * 2 - 1
        return F.grid_sample(
            maps[None].float(), norm[None, None], mode="bilinear", padding_mode="border", align_corners=True
        )[0, :, 0]

    def _match(
        self, sources: list[torch.Tensor], targets: list[torch.Tensor], points: list[torch.Tensor]
    ) -> list[MatchResult]:
        field, mass = self._run(sources, targets)
        out = []
        for i, (p, s, t) in enumerate(zip(points, sources, targets, strict=True)):
            xy, score = self._transfer(field[i], mass[i], p.to(self.device), tensor_hw(s), tensor_hw(t))
            out.append(MatchResult(xy.cpu(), score.cpu()))
        return out

    def _flow(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> list[FlowResult]:
        field, mass = self._run(sources, targets)
        out = []
        for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
            src_size, tgt_size = tensor_hw(s), tensor_hw(t)
            pixels = pixel_grid(src_size, self.device)
            if self.preset == "official":  # the point rule at every pixel
                xy, score = self._transfer(field[i], mass[i], pixels.view(-1, 2), src_size, tgt_size)
                flow = (xy - pixels.view(-1, 2)).T.reshape(2, *src_size)
                out.append(FlowResult(flow.cpu(), score.view(src_size).cpu()))
                continue
            cells = grid_to_pixels(self._target_cells(field[i]), tgt_size, self.grid, "center")
            cell_map = torch.cat([cells.permute(2, 0, 1), mass[i][None]])
            out.append(cells_to_flow(cell_map, pixels_to_grid(pixels, src_size, self.grid, "center")))
        return out
