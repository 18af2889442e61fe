"""`LpmflowMatcher`: LPMFlow keypoint transfer and dense flow in original image pixels, with two readouts.

LPMFlow outputs a dense source -> target flow on a 128 x 128 source grid (ViT-B/16; 8g x 8g in general), in
cells of that grid. Readouts (``preset``):

- ``"exact"`` (formerly ``"default"``): images resized straight to the ViT's input (256 x 256, antialiased
  bilinear, aspect ignored); each point's exact position on the flow grid (pixel-centre convention,
  docs/conventions.md), the flow interpolated bilinearly there, the target position mapped back to the target's
  original pixels with the same convention. No truncation.
- ``"official"``: the official test: images resized to 512 x 512 (antialiased bilinear, like its PIL resize; the
  model then halves them without antialias), points mapped into the 512 frame by ``x * 512 / W`` and truncated
  to integers (clamped to [0, 511]), the flow up-sampled to 512 x 512 (bilinear, ``align_corners=False``) and
  multiplied by 4, ``prediction = point + flow[point]``, mapped to the target's pixels by ``x * W / 512``.

Both give a score in [0, 1] per point: the soft-argmax probability of the finest matching map (32 x 32 cells)
within the 3 x 3 target cells around its most likely cell, interpolated like the flow. PCK is computed by
`mmnet.eval` in original pixels against the target keypoints (the official code's SPair threshold uses the
source box; see docs/lpmflow.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..errors import CheckpointError, InputError
from ..models.lpmflow import LPMFlow, LpmflowConfig
from ..version import __version__
from ..zoo.hub import CONFIG_NAME, WEIGHTS_NAME, Source, load_state, read_weights
from .flowfield import PRESETS, RENAMED, FlowFieldMatcher, is_path, open_family_checkpoint
from .geometry import pixel_grid
from .images import PreprocessConfig
from .readouts import check_preset, window_mass

PREFIX = "lpmflow_"
OFFICIAL_INPUT_SIZE = (512, 512)


def create_lpmflow(
    name: str, pretrained: bool = False, pretrained_backbone: bool | str = False, **config: Any
) -> LPMFlow:
    """The registry's LPMFlow factory: ``lpmflow_<vit>[.tag]`` -> `LPMFlow` (see `mmnet.create_model`).

    ``pretrained_backbone=True`` loads the ViT's self-supervised timm weights (``vit_base_patch16_224.dino`` for
    ``lpmflow_vit_base_patch16``; network or a filled hub cache), or a tag string such as ``"mae"``.
    ``config`` overrides `LpmflowConfig` fields of a fresh model, e.g. ``encoder_depth=4``.
    """
    arch, _, tag = str(name).partition(".")
    if pretrained or tag or is_path(name):
        if config or pretrained_backbone:
            raise InputError("config overrides and pretrained_backbone cannot be combined with pretrained weights")
        return load_lpmflow(name)
    if not arch.startswith(PREFIX):
        raise InputError(f"LPMFlow architectures are named lpmflow_<vit backbone>, got {name!r}")
    return LPMFlow(LpmflowConfig(backbone=arch.removeprefix(PREFIX), **config), pretrained_backbone=pretrained_backbone)


def save_lpmflow(
    model: LPMFlow,
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    readout: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """``model.safetensors`` + ``config.json`` (architecture, `LpmflowConfig`, preprocess, readout) in `directory`.

    `readout` defaults to the model's own (``{"preset": ...}``); `extra` is copied into config.json. Each file is
    written under a temporary name and renamed into place, weights first.
    """
    if not isinstance(model, LPMFlow):
        raise InputError(f"model must be an LPMFlow, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype!r}")
    readout = dict(model.readout if readout is None else readout)
    check_preset(readout.get("preset", "exact"), PRESETS, RENAMED, warn=False)
    reserved = {"architecture", "model", "preprocess", "readout", "mmnet_version"} & set(extra or {})
    if reserved:
        raise InputError(f"extra must not override {', '.join(sorted(reserved))}")
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    config = {
        "architecture": model.architecture,
        "model": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "readout": readout,
        "mmnet_version": __version__,
        **(extra or {}),
    }
    for name, write in (
        (WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt", "mmnet_version": __version__})),
        (CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2) + "\n")),
    ):
        tmp = directory / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, directory / name)
    return directory


def load_lpmflow(
    name_or_path: str | Path | Source,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> LPMFlow:
    """An `LPMFlow` from a registered name (``lpmflow_vit_base_patch16.spair_official``), folder, safetensors file
    or hub id; strict loading, eval mode, CPU."""
    config_path, weights_path, config = open_family_checkpoint(
        name_or_path,
        PREFIX,
        "an LPMFlow model (lpmflow_<vit>)",
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    try:
        model_config = LpmflowConfig.from_dict(config["model"])
    except (InputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    with torch.device("meta"):
        model = LPMFlow(model_config)
    state = read_weights(weights_path)
    model = model.to_empty(device="cpu")
    model.reset_buffers()
    load_state(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, str(weights_path))
    model.preprocess = PreprocessConfig.from_dict({**model.preprocess.to_dict(), **config.get("preprocess", {})})
    model.readout = dict(config.get("readout", {}))
    return model.eval()


class LpmflowMatcher(FlowFieldMatcher[LPMFlow]):
    """Semantic correspondence with an LPMFlow model (`mmnet.models.lpmflow.LPMFlow`).

    Args:
        model: an `LPMFlow` (e.g. ``mmnet.create_model("lpmflow_vit_base_patch16")`` or `load_lpmflow`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        preset: None (default): the checkpoint's readout (``"official"`` for converted checkpoints, else
            ``"exact"``); ``"exact"`` or ``"official"`` (see the module docstring).
        input_size: (H, W) the images are resized to before the model (default: 256 x 256, or 512 x 512 with the
            official preset); the ViT always sees its own size.
        amp: autocast on CUDA; off by default (beta = 0.02 amplifies rounding in the matching maps 50 times).
    """

    min_input_side = 16
    official_input_size = OFFICIAL_INPUT_SIZE
    _new_model = staticmethod(create_lpmflow)
    _load_model = staticmethod(load_lpmflow)

    @property
    def grid(self) -> tuple[int, int]:
        return self.model.flow_size

    def _run(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow (B, 2, G, G) in cells of the flow grid and a score map (B, G, G)."""
        src, tgt = self._inputs(sources), self._inputs(targets)
        with self.autocast():
            out = self.model(src, tgt)
        flow, corr = out.flow.float(), out.corr.float()
        fine = 2 * self.model.grid
        prob = self.model.soft_argmax.probabilities(corr)
        mass = window_mass(prob, (fine, fine)).view(-1, 1, fine, fine)
        mass = F.interpolate(mass, size=self.grid, mode="bilinear", align_corners=False)[:, 0]
        return flow, mass

    def _shift(self, field: torch.Tensor) -> torch.Tensor:
        return field

    def _target_cells(self, field: torch.Tensor) -> torch.Tensor:
        return pixel_grid(self.grid, field.device) + field.permute(1, 2, 0)
