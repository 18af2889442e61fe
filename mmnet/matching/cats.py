"""`CatsMatcher`: CATs keypoint transfer and dense flow in original image pixels, with two readouts.

The network always runs in the direction it was trained in: the image holding the query points (mmnet's
*source*) is the first argument, so its 16 x 16 cells are the soft-argmax queries and the flow points into the
*target*. (The official test calls the same thing "target -> source": it transfers the target's keypoints into the
source image; ``match(a, b, pts)`` here transfers points of a into b, whatever a and b are called.)

Readouts (``preset``):

- ``"exact"`` (formerly ``"default"``): the point's exact position on the 16 x 16 grid (pixel-centre convention,
  docs/conventions.md), the per-cell expected target position interpolated bilinearly there, mapped to the
  target's original pixels with the same convention. No truncation.
- ``"official"``: the official test: points mapped into the 256 x 256 frame by ``x * 256 / W`` and truncated to
  integers (clamped to [0, 255]), the 16 x 16 flow up-sampled to 256 x 256 (bilinear, ``align_corners=False``)
  and multiplied by 16, ``prediction = point + flow[point]``, then mapped to the target's pixels by
  ``x * W / 256``.

Both resize the images to the checkpoint's input size (256 x 256, aspect ignored, antialiased bilinear like the
official PIL resize) and give a score in [0, 1] per point: the soft-argmax probability within the 3 x 3 target
cells around its most likely cell, interpolated like the positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError, InputError
from ..models.cats import CATs, CatsConfig
from ..version import __version__
from ..zoo.hub import CONFIG_NAME, WEIGHTS_NAME, Source, load_state, read_weights
from .flowfield import PRESETS as PRESETS
from .flowfield import RENAMED as RENAMED
from .flowfield import FlowFieldMatcher, is_path, open_family_checkpoint
from .geometry import pixel_grid
from .images import PreprocessConfig
from .readouts import window_mass

PREFIX = "cats_"


def create_cats(name: str, pretrained: bool = False, pretrained_backbone: bool = False, **config: Any) -> CATs:
    """The registry's CATs factory: ``cats_<backbone>[.tag]`` -> `CATs` (see `mmnet.create_model`).

    ``config`` overrides `CatsConfig` fields of a fresh model, e.g. ``hyperpixels="pfpascal"`` or ``depth=2``.
    """
    arch, _, tag = str(name).partition(".")
    if pretrained or tag or is_path(name):
        if config:
            raise InputError("config overrides cannot be combined with pretrained weights")
        return load_cats(name)
    if not arch.startswith(PREFIX):
        raise InputError(f"CATs architectures are named cats_<backbone>, got {name!r}")
    return CATs(CatsConfig(backbone=arch.removeprefix(PREFIX), **config), pretrained_backbone=pretrained_backbone)


def save_cats(
    model: CATs,
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    readout: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """``model.safetensors`` (floats stored as `dtype`) + ``config.json`` (architecture, `CatsConfig`, preprocess,
    readout, `extra`) in `directory`; `load_cats` reads it back strictly."""
    if not isinstance(model, CATs):
        raise InputError(f"model must be a CATs, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype!r}")
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{str(directory)!r} is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, directory / WEIGHTS_NAME, metadata={"format": "pt", "mmnet_version": __version__})
    config = {
        "architecture": model.architecture,
        "model": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "readout": dict(model.readout if readout is None else readout),
        "mmnet_version": __version__,
        **(extra or {}),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_cats(
    name_or_path: str | Path | Source,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> CATs:
    """A `CATs` from a registered name (``cats_resnet101.spair_official``), folder, safetensors file or hub id;
    strict loading, eval mode, CPU."""
    config_path, weights_path, config = open_family_checkpoint(
        name_or_path,
        PREFIX,
        "a CATs model (cats_<backbone>)",
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    try:
        model_config = CatsConfig.from_dict(config["model"])
    except (InputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    with torch.device("meta"):
        model = CATs(model_config)
    state = read_weights(weights_path)
    model = model.to_empty(device="cpu")
    load_state(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, str(weights_path))
    model.preprocess = PreprocessConfig.from_dict({**model.preprocess.to_dict(), **config.get("preprocess", {})})
    model.readout = dict(config.get("readout", {}))
    return model.eval()


class CatsMatcher(FlowFieldMatcher[CATs]):
    """Semantic correspondence with a CATs model (`mmnet.models.cats.CATs`).

    Args:
        model: a `CATs` (e.g. `mmnet.create_model("cats_resnet101")` or `load_cats`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        preset: None (default): the checkpoint's readout (``"official"`` for converted checkpoints, else
            ``"exact"``); ``"exact"`` or ``"official"`` (see the module docstring).
        input_size: (H, W) the images are resized to (default: the checkpoint's, 256 x 256). The grid stays
            feature_size x feature_size whatever the input size.
        amp: autocast on CUDA; off by default (beta = 0.02 amplifies rounding in the scores 50 times).
    """

    min_input_side = 32
    _new_model = staticmethod(create_cats)
    _load_model = staticmethod(load_cats)

    @property
    def grid(self) -> tuple[int, int]:
        return self.model.softargmax.size

    def _run(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per source cell: expected target cell xy (B, 2, h, w) and score (B, h, w)."""
        src, tgt = self._inputs(sources), self._inputs(targets)
        with self.autocast():
            scores = self.model.scores(src, tgt).float()
        positions = self.model.softargmax(scores, return_positions=True)
        mass = window_mass(self.model.softargmax.probabilities(scores), self.grid)
        return positions, mass.view(-1, *self.grid)

    def _shift(self, field: torch.Tensor) -> torch.Tensor:
        return field - pixel_grid(self.grid, field.device).permute(2, 0, 1)

    def _target_cells(self, field: torch.Tensor) -> torch.Tensor:
        return field.permute(1, 2, 0)
