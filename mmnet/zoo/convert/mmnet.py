"""Convert the authors' MMNet checkpoints (``ckp_pascal_fcnres101.pth``, ...) into mmnet checkpoints.

The official ``.pth`` files are plain ``model.state_dict()`` pickles of the official ``MMNet`` module. About
82 % of their parameters belong to modules that the official forward never runs (see
docs/official-checkpoints.md); the rest maps one to one onto `mmnet.MMNet`:

====================================  ========================================
official key                          mmnet key
====================================  ========================================
``backbone.<timm key>``               ``backbone.body.<timm key>``
``msblock{g}_{j}.conv.*``             ``sems.{g-1}.{j-1}.conv.*``
``msblock{g}_{j}.conv{k}.*``          ``sems.{g-1}.{j-1}.branches.{k-1}.*``
``conv{g}_{j}_down.*``                ``sems.{g-1}.{j-1}.down.*``
``wa_{g}.conv_{theta,phi,g,back}.*``  ``attentions.{g-1}.{theta,phi,g,back}.*``
``conv{i}_scale.*``                   ``fusions.{i-1}.conv.*``
``feat_upsample_{i+1}.weight``        ``fusions.{i-1}.up.weight``
====================================  ========================================

Use `convert_official` (or ``mmnet convert-official``); `map_official_state_dict` is the pure key mapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, InputError, WeightsNotFoundError
from ...matching.readouts import OFFICIAL_INPUT_SIZE, OFFICIAL_READOUT
from ...models.mmnet import MMNet, MMNetConfig
from ..hub import check_weights, save_pretrained, sha256_of
from ._common import finish_conversion

#: Backbone names as the official code spells them (``--backbone_name``) -> mmnet backbone names.
OFFICIAL_BACKBONES: dict[str, str] = {
    "resnet101": "resnet101",
    "resnet50": "resnet50",
    "resnext-101": "resnext101",
    "fcn-resnet101": "fcn_resnet101",
}
#: Flattened correlation sizes of the dead ``upsample_{4,8,16}`` deconvolutions (56x80 = 4480 output cells).
_DEAD_UPSAMPLERS = {
    "upsample_4": (1120, 4480, 4, 4),
    "upsample_8": (280, 4480, 8, 8),
    "upsample_16": (70, 4480, 16, 16),
}
_STEM_SEM_CHANNELS = 64  # the dead stem SEM `msblock0` is built for 64 channels, even for the 128-channel FCN stem
_LIST = 10  # keys named per category in an error message

_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"backbone\.body\.(.+)"), lambda m: f"backbone.{m[1]}"),
    (re.compile(r"sems\.(\d+)\.(\d+)\.conv\.(\w+)"), lambda m: f"msblock{int(m[1]) + 1}_{int(m[2]) + 1}.conv.{m[3]}"),
    (
        re.compile(r"sems\.(\d+)\.(\d+)\.branches\.(\d+)\.(\w+)"),
        lambda m: f"msblock{int(m[1]) + 1}_{int(m[2]) + 1}.conv{int(m[3]) + 1}.{m[4]}",
    ),
    (re.compile(r"sems\.(\d+)\.(\d+)\.down\.(\w+)"), lambda m: f"conv{int(m[1]) + 1}_{int(m[2]) + 1}_down.{m[3]}"),
    (re.compile(r"attentions\.(\d+)\.(theta|phi|g|back)\.(\w+)"), lambda m: f"wa_{int(m[1]) + 1}.conv_{m[2]}.{m[3]}"),
    (re.compile(r"fusions\.(\d+)\.conv\.(\w+)"), lambda m: f"conv{int(m[1]) + 1}_scale.{m[2]}"),
    (re.compile(r"fusions\.(\d+)\.up\.(\w+)"), lambda m: f"feat_upsample_{int(m[1]) + 2}.{m[2]}"),
)


def official_key(key: str) -> str:
    """The official name of one mmnet state-dict key, e.g. ``sems.0.0.down.bias`` -> ``conv1_1_down.bias``."""
    for pattern, rename in _RULES:
        if match := pattern.fullmatch(key):
            return rename(match)
    raise ValueError(f"{key!r} has no counterpart in the official MMNet layout")


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape if hasattr(value, "shape") else value)


def dead_layout(template: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Keys (and shapes) that an official checkpoint holds but its forward never uses.

    `template` is an mmnet ``state_dict()`` (tensors or shapes) of the matching backbone; the dead layout
    depends on it only through the channel widths and, for the FCN backbone, the fusions without up-sampling.
    """
    channels = _shape(template["sems.0.0.down.weight"])[0]
    mid = _shape(template["sems.0.0.conv.weight"])[0]
    groups = 1 + max(int(k.split(".")[1]) for k in template if k.startswith("sems."))
    branches = 1 + max(int(k.split(".")[4]) for k in template if k.startswith("sems.0.0.branches."))
    last_channels = _shape(template[f"sems.{groups - 1}.0.conv.weight"])[1]
    dead: dict[str, tuple[int, ...]] = {"backbone.fc.weight": (1000, last_channels), "backbone.fc.bias": (1000,)}
    for g in range(groups + 1):
        dead[f"conv{g}_kernel.weight"] = (channels, channels, 3, 3)
        dead[f"conv{g}_kernel.bias"] = (channels,)
    for i in range(groups - 1):
        if f"fusions.{i}.up.weight" not in template:
            dead[f"feat_upsample_{i + 2}.weight"] = (channels, channels, 4, 4)
    for name, shape in _DEAD_UPSAMPLERS.items():
        dead[f"{name}.weight"] = shape
    for g in range(groups, 1, -1):
        dead[f"feature_upsample_{g}.weight"] = (channels, channels, 4, 4)
    dead["msblock0.conv.weight"], dead["msblock0.conv.bias"] = (mid, _STEM_SEM_CHANNELS, 3, 3), (mid,)
    for k in range(1, branches + 1):
        dead[f"msblock0.conv{k}.weight"], dead[f"msblock0.conv{k}.bias"] = (mid, mid, 3, 3), (mid,)
    dead["conv0_down.weight"], dead["conv0_down.bias"] = (channels, mid, 1, 1), (channels,)
    return dead


def official_layout(template: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(official key -> mmnet key for every used tensor, dead official key -> shape) for an mmnet state dict."""
    return {official_key(k): k for k in template}, dead_layout(template)


def guess_backbone(state: Mapping[str, Any]) -> str | None:
    """The official backbone name a checkpoint's keys point to (``None`` when they fit none)."""
    if "backbone.conv1.0.weight" in state:
        return "fcn-resnet101"
    if "backbone.layer1.0.conv2.weight" not in state:
        return None
    if "backbone.layer3.6.conv1.weight" not in state:
        return "resnet50"
    out_channels, in_per_group = _shape(state["backbone.layer1.0.conv2.weight"])[:2]
    return "resnet101" if out_channels == in_per_group else "resnext-101"


def _listing(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _LIST} more" if len(keys) > _LIST else ""
    return f"{len(keys)} [{', '.join(keys[:_LIST])}{more}]"


def map_official_state_dict(
    state: Mapping[str, torch.Tensor], template: Mapping[str, Any], backbone: str = ""
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official MMNet state dict into mmnet's layout; pure (no I/O, tensors are not copied).

    Args:
        state: the official ``state_dict`` (keys without a ``module.`` prefix).
        template: the target mmnet ``state_dict()`` (tensors or shapes), which fixes the expected layout.
        backbone: the official backbone name, only used in messages.

    Returns:
        (mapped, dropped): every used tensor under its mmnet key, and the dead official keys left out.
        Dead keys may be absent (e.g. from a file pruned earlier); every used key must be present.

    Raises:
        CheckpointError: naming the missing, unexpected and mis-shaped keys (official names).
    """
    used, dead = official_layout(template)
    mapped: dict[str, torch.Tensor] = {}
    dropped, unexpected, shapes = [], [], []
    for key, value in state.items():
        expected = _shape(template[used[key]]) if key in used else dead.get(key)
        if expected is None:
            unexpected.append(key)
            continue
        if tuple(value.shape) != expected:
            shapes.append(f"{key}: {tuple(value.shape)} in the file vs {expected} expected")
        elif key in used:
            mapped[used[key]] = value
        else:
            dropped.append(key)
    missing = [k for k in used if k not in state]
    if missing or unexpected or shapes:
        name = f"official {backbone} " if backbone else "official "
        guess = guess_backbone(state)
        hint = (
            f" The keys look like a {guess} checkpoint: pass --backbone {guess}." if guess and guess != backbone else ""
        )
        raise CheckpointError(
            f"the checkpoint does not match the {name}MMNet layout: missing {_listing(missing)}; "
            f"unexpected {_listing(unexpected)}; another shape {_listing(shapes)}.{hint}"
        )
    return mapped, dropped


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official ``.pth`` safely (``weights_only=True``, memory-mapped when possible) into a state dict.

    Accepts a bare state dict or one wrapped under ``"state_dict"`` / ``"model"``, and strips a ``module.``
    (DataParallel) prefix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint not found: {path}")
    try:
        try:  # mmap keeps the ~1 GB of dead weights on disk; the legacy (pre-1.6) format cannot be mapped
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors come in many types
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint of plain tensors ({type(exc).__name__}: {exc}). mmnet "
            "loads with weights_only=True and never unpickles arbitrary objects; if you trust the file, re-save "
            "just its state dict: torch.save(torch.load(f, weights_only=False)['state_dict'], 'plain.pth')"
        ) from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _mmnet_backbone(backbone: str) -> str:
    if backbone in OFFICIAL_BACKBONES:
        return OFFICIAL_BACKBONES[backbone]
    if backbone in OFFICIAL_BACKBONES.values():
        return backbone
    raise InputError(f"unknown official backbone {backbone!r}; choose from {', '.join(OFFICIAL_BACKBONES)}")


def _official_name(backbone: str) -> str:
    return {v: k for k, v in OFFICIAL_BACKBONES.items()}.get(backbone, backbone)


def build_official_model(backbone: str, state: Mapping[str, torch.Tensor] | None = None) -> MMNet:
    """An mmnet `MMNet` with the official configuration for `backbone` (official or mmnet spelling).

    With `state` (an official state dict) the model takes those weights, mapped and strictly loaded; it is
    built on the meta device first, so no random initialisation is spent. Preprocess and readout are set to
    the official ones (224 x 320, no antialias; level 2, argmax, corner).
    """
    config = MMNetConfig(backbone=_mmnet_backbone(backbone))
    if state is None:
        model = MMNet(config)
    else:
        with torch.device("meta"):
            model = MMNet(config)
        mapped, _ = map_official_state_dict(state, model.state_dict(), _official_name(config.backbone))
        check_weights(mapped, "the official checkpoint", model.state_dict())  # NaN/inf or integer weights
        mapped = {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()}
        model.load_state_dict(mapped, strict=True, assign=True)
        if left := [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]:
            raise CheckpointError(f"tensors not filled by the checkpoint: {left[:5]}")
    model.preprocess = replace(model.preprocess, size=OFFICIAL_INPUT_SIZE, antialias=False)
    model.readout = dict(OFFICIAL_READOUT)
    return model.eval()


@dataclass
class Conversion:
    """What `convert_official` did."""

    model: MMNet
    backbone: str
    source: Path
    sha256: str
    mapped: int
    mapped_values: int
    dropped: list[str]
    dropped_values: int
    absent_dead: list[str] = field(default_factory=list)
    out: Path | None = None

    def summary(self) -> str:
        total = self.mapped_values + self.dropped_values
        share = f"{100 * self.dropped_values / total:.1f} %" if total else "0 %"
        groups: dict[str, int] = {}
        for key in self.dropped:
            module = "backbone.fc" if key.startswith("backbone.") else key.split(".")[0]
            groups[module] = groups.get(module, 0) + 1
        lines = [
            f"source   {self.source.name} (sha256 {self.sha256})",
            f"backbone {self.backbone} -> mmnet_{_mmnet_backbone(self.backbone)}",
            f"mapped   {self.mapped} tensors, {self.mapped_values:,} values",
            f"dropped  {len(self.dropped)} dead tensors, {self.dropped_values:,} values ({share} of the file): "
            + ", ".join(groups),
        ]
        if self.absent_dead:
            lines.append(f"absent   {len(self.absent_dead)} dead keys were not in the file (harmless)")
        return "\n".join(lines)


def convert_official(
    checkpoint: str | Path,
    backbone: str = "auto",
    out: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] | None = print,
) -> Conversion:
    """Convert an official MMNet ``.pth`` file and, with `out`, write it as an mmnet checkpoint folder.

    Args:
        checkpoint: the official file, e.g. ``ckp_pascal_fcnres101.pth``.
        backbone: official name (``resnet101``, ``resnet50``, ``resnext-101``, ``fcn-resnet101``) or ``"auto"``
            to read it off the keys.
        out: folder for ``model.safetensors`` + ``config.json`` (`mmnet.save_pretrained`); nothing is written
            when None.
        dtype: storage dtype of the floating tensors (``torch.float32`` or ``torch.float16``).
        log: where the summary goes (None: silent).

    The written config records the official readout (level 2, argmax, corner) and input (224 x 320, bilinear
    without antialias, ImageNet statistics), so ``Matcher.from_pretrained(out)`` reproduces the official test,
    and the provenance (source file name and sha256) under ``"converted_from"``.
    """
    source = Path(checkpoint).expanduser()
    state = read_official(source)
    if backbone == "auto":
        guessed = guess_backbone(state)
        if guessed is None:
            raise CheckpointError(
                f"{source} does not look like an official MMNet checkpoint (no ResNet backbone "
                "keys); pass --backbone to see which keys differ"
            )
        backbone = guessed
    backbone = _official_name(_mmnet_backbone(backbone))
    try:
        model = build_official_model(backbone, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    used, dead = official_layout(model.state_dict())
    dropped = [k for k in state if k in dead]
    result = Conversion(
        model=model,
        backbone=backbone,
        source=source,
        sha256=sha256_of(source),
        mapped=len(used),
        mapped_values=sum(state[k].numel() for k in used),
        dropped=dropped,
        dropped_values=sum(state[k].numel() for k in dropped),
        absent_dead=[k for k in dead if k not in state],
    )
    converted_from = {
        "format": "official MMNet state_dict (wintersun661/MMNet)",
        "file": source.name,
        "sha256": result.sha256,
        "backbone": backbone,
        "dtype": str(dtype).removeprefix("torch."),
        "dropped_dead_keys": dropped,
        "dropped_values": result.dropped_values,
    }
    use = "mmnet.Matcher.from_pretrained({})  # official readout: level 2, argmax, corner; 224x320 input"
    finish_conversion(
        result, save_pretrained, out, converted_from, log, use, dtype=dtype, show_dtype=True, readout=model.readout
    )
    return result
