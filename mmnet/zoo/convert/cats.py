"""Convert the authors' CATs checkpoints (a folder with ``model_best.pth`` + ``args.pkl``) into mmnet checkpoints.

``model_best.pth`` is read with ``torch.load(weights_only=True)`` (it is a dict with ``state_dict``, ``optimizer``,
``scheduler``, ``epoch``, ``best_loss``; only ``state_dict`` is used) and ``args.pkl`` with a restricted unpickler
that accepts nothing but an ``argparse.Namespace`` of plain values (`mmnet.safe_pickle.load_namespace`).

Key mapping (official -> mmnet; everything else official is dead and dropped, and listed by `convert_cats`):

==================================================  ===================================================
official key                                        mmnet key (`mmnet.models.cats.CATs`)
==================================================  ===================================================
``x_normal``, ``y_normal``                          ``softargmax.grid_x``, ``softargmax.grid_y``
``feature_extraction.backbone.<timm key>``          ``backbone.body.<timm key>`` (up to the deepest tap)
``proj.{l}.*``                                      ``proj.{l}.*``
``decoder.pos_embed_x``, ``decoder.pos_embed_y``    ``aggregator.pos_x``, ``aggregator.pos_y``
``decoder.blocks.{k}.attn.*``                       ``aggregator.blocks.{k}.intra_attn.*``
``decoder.blocks.{k}.norm1.*``                      ``aggregator.blocks.{k}.intra_norm.*``
``decoder.blocks.{k}.mlp2.*`` / ``norm4.*``         ``aggregator.blocks.{k}.intra_mlp.*`` / ``intra_mlp_norm.*``
``decoder.blocks.{k}.attn_multiscale.*``            ``aggregator.blocks.{k}.inter_attn.*``
``decoder.blocks.{k}.norm3.*``                      ``aggregator.blocks.{k}.inter_norm.*``
``decoder.blocks.{k}.mlp.*`` / ``norm2.*``          ``aggregator.blocks.{k}.inter_mlp.*`` / ``inter_mlp_norm.*``
``decoder.proj.*``                                  ``aggregator.proj.*``
==================================================  ===================================================

Dead: ``decoder.norm.*`` (never called), the ResNet ``fc.*``, ``layer4.*`` (computed, never used) and every
``layer3`` block after the deepest tap (PF-PASCAL ids: ``layer3.21``, ``layer3.22``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

from ...errors import CheckpointError, InputError, WeightsNotFoundError
from ...models.cats import HYPERPIXELS, CATs, CatsConfig, parse_hyperpixels
from ..safe_pickle import load_namespace
from ._common import finish_conversion
from .mmnet import read_official

BACKBONE_PREFIX = "feature_extraction.backbone."
_BLOCK_NAMES = {
    "intra_attn": "attn",
    "intra_norm": "norm1",
    "intra_mlp": "mlp2",
    "intra_mlp_norm": "norm4",
    "inter_attn": "attn_multiscale",
    "inter_norm": "norm3",
    "inter_mlp": "mlp",
    "inter_mlp_norm": "norm2",
}
_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"softargmax\.grid_(x|y)"), lambda m: f"{m[1]}_normal"),
    (re.compile(r"backbone\.body\.(.+)"), lambda m: BACKBONE_PREFIX + m[1]),
    (re.compile(r"proj\.(\d+)\.(\w+)"), lambda m: f"proj.{m[1]}.{m[2]}"),
    (re.compile(r"aggregator\.pos_(x|y)"), lambda m: f"decoder.pos_embed_{m[1]}"),
    (
        re.compile(r"aggregator\.blocks\.(\d+)\.(\w+)\.(.+)"),
        lambda m: f"decoder.blocks.{m[1]}.{_BLOCK_NAMES[m[2]]}.{m[3]}",
    ),
    (re.compile(r"aggregator\.proj\.(\w+)"), lambda m: f"decoder.proj.{m[1]}"),
)
#: The published checkpoints (README of SunghwanHong/Cost-Aggregation-transformers); numbers as reported there.
PUBLISHED: dict[str, dict[str, Any]] = {
    "spair": {"benchmark": "spair", "backbone": "fine-tuned", "reported": {"spair_pck@0.10": 49.9}},
    "spair_frozen": {"benchmark": "spair", "backbone": "frozen", "reported": {"spair_pck@0.10": 42.4}},
    "pfpascal": {
        "benchmark": "pfpascal",
        "backbone": "fine-tuned",
        "reported": {"pfpascal_pck@0.05": 75.4, "pfpascal_pck@0.10": 92.6, "pfpascal_pck@0.15": 96.4},
    },
    "pfpascal_frozen": {
        "benchmark": "pfpascal",
        "backbone": "frozen",
        "reported": {"pfpascal_pck@0.05": 67.5, "pfpascal_pck@0.10": 89.1, "pfpascal_pck@0.15": 94.9},
    },
}
_LIST = 10


def official_key(key: str) -> str:
    """The official name of one mmnet CATs state-dict key, e.g. ``aggregator.pos_x`` -> ``decoder.pos_embed_x``."""
    for pattern, rename in _RULES:
        if match := pattern.fullmatch(key):
            return rename(match)
    raise InputError(f"{key!r} has no counterpart in the official CATs layout")


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape if hasattr(value, "shape") else value)


def official_layout(
    config: CatsConfig, template: Mapping[str, Any] | None = None
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(official key -> mmnet key for every used tensor, dead official key -> shape) for a ResNet-101 CATs.

    `template` is the mmnet ``state_dict()`` (tensors or shapes) of `config`; built on the meta device when None.
    """
    if template is None:
        with torch.device("meta"):
            template = CATs(config).state_dict()
    used = {official_key(k): k for k in template}
    with torch.device("meta"):  # the whole official ResNet-101, classifier included
        full = timm.create_model("resnet101", pretrained=False, num_classes=1000).state_dict()
    dead = {BACKBONE_PREFIX + k: _shape(v) for k, v in full.items() if BACKBONE_PREFIX + k not in used}
    width = config.feature_size**2 + config.proj_dim
    dead["decoder.norm.weight"], dead["decoder.norm.bias"] = (width,), (width,)
    return used, dead


def _listing(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _LIST} more" if len(keys) > _LIST else ""
    return f"{len(keys)} [{', '.join(keys[:_LIST])}{more}]"


def map_official_state_dict(
    state: Mapping[str, torch.Tensor], config: CatsConfig, template: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official CATs state dict into mmnet's layout; pure (no I/O, tensors not copied).

    Returns (mapped, dropped): every used tensor under its mmnet key, and the dead official keys left out. Every
    used key must be present; dead keys may be absent. Raises `CheckpointError` naming the missing, unexpected and
    mis-shaped keys (official names).
    """
    used, dead = official_layout(config, template)
    if template is None:
        with torch.device("meta"):
            template = CATs(config).state_dict()
    mapped: dict[str, torch.Tensor] = {}
    dropped, unexpected, shapes = [], [], []
    for key, value in state.items():
        expected = _shape(template[used[key]]) if key in used else dead.get(key)
        if expected is None:
            unexpected.append(key)
        elif tuple(value.shape) != expected:
            shapes.append(f"{key}: {tuple(value.shape)} in the file vs {expected} expected")
        elif key in used:
            mapped[used[key]] = value
        else:
            dropped.append(key)
    missing = [k for k in used if k not in state]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"the checkpoint does not match the official CATs layout for hyperpixels {list(config.hyperpixels)}, "
            f"depth {config.depth}: missing {_listing(missing)}; unexpected {_listing(unexpected)}; another shape "
            f"{_listing(shapes)}. Check that args.pkl belongs to this model_best.pth."
        )
    return mapped, dropped


def config_from_args(args: Mapping[str, Any]) -> CatsConfig:
    """A `CatsConfig` from the official ``args.pkl`` values (``hyperpixel``, ``depth``, ``feature_size``, ...)."""
    if "hyperpixel" not in args:
        raise CheckpointError(
            f"args.pkl has no 'hyperpixel' entry (it has {sorted(args)}); is it a CATs train.py argument file?"
        )
    try:
        return CatsConfig(
            backbone="resnet101",
            hyperpixels=parse_hyperpixels(args["hyperpixel"]),
            feature_size=int(args.get("feature_size", 16)),
            proj_dim=int(args.get("feature_proj_dim", 128)),
            depth=int(args.get("depth", 1)),
            num_heads=int(args.get("num_heads", 6)),
            mlp_ratio=float(args.get("mlp_ratio", 4.0)),
        )
    except (InputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"args.pkl holds values mmnet cannot use: {exc}") from exc


def config_from_state(state: Mapping[str, torch.Tensor]) -> CatsConfig:
    """Infer the config from the keys alone (no ``args.pkl``): depth and levels are exact, the hyperpixel ids are
    guessed from the first projection's width (64: SPair ids, 256 with 7 levels: PF-PASCAL ids)."""
    if "decoder.pos_embed_x" not in state or "proj.0.weight" not in state:
        raise CheckpointError("the state dict has no decoder.pos_embed_x / proj.0.weight: not an official CATs model")
    levels = _shape(state["decoder.pos_embed_x"])[1]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.blocks."))
    first = _shape(state["proj.0.weight"])[1]
    if first == 64 and levels == len(HYPERPIXELS["spair"]):
        ids = HYPERPIXELS["spair"]
    elif first == 256 and levels == len(HYPERPIXELS["pfpascal"]):
        ids = HYPERPIXELS["pfpascal"]
    else:
        raise CheckpointError(
            f"cannot infer the hyperpixel ids ({levels} levels, first tap {first} channels) "
            "without args.pkl: put the args.pkl of this checkpoint next to model_best.pth"
        )
    return CatsConfig(
        backbone="resnet101",
        hyperpixels=ids,
        depth=depth,
        feature_size=_shape(state["decoder.pos_embed_x"])[3],
        proj_dim=_shape(state["proj.0.weight"])[0],
    )


def build_official_model(config: CatsConfig, state: Mapping[str, torch.Tensor]) -> CATs:
    """A `CATs` holding the official `state` (mapped, strictly loaded; built on the meta device, no random init)."""
    with torch.device("meta"):
        model = CATs(config)
    mapped, _ = map_official_state_dict(state, config, model.state_dict())
    mapped = {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()}
    model.load_state_dict(mapped, strict=True, assign=True)
    grid = model.softargmax
    grid.grid_x.requires_grad_(config.trainable_grid)
    grid.grid_y.requires_grad_(config.trainable_grid)
    if left := [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]:
        raise CheckpointError(f"tensors not filled by the checkpoint: {left[:5]}")
    return model.eval()


@dataclass
class CatsConversion:
    """What `convert_cats` did."""

    model: CATs
    config: CatsConfig
    source: Path
    sha256: str
    args_source: str
    mapped: int
    mapped_values: int
    dropped: list[str]
    dropped_values: int
    absent_dead: list[str] = field(default_factory=list)
    out: Path | None = None

    def summary(self) -> str:
        total = self.mapped_values + self.dropped_values
        groups: dict[str, int] = {}
        for key in self.dropped:
            name = key.removeprefix(BACKBONE_PREFIX)
            module = (
                "decoder.norm"
                if key.startswith("decoder.")
                else ".".join(name.split(".")[:2])
                if name.startswith("layer3")
                else name.split(".")[0]
            )
            groups[module] = groups.get(module, 0) + 1
        lines = [
            f"source   {self.source.name} (sha256 {self.sha256})",
            f"config   hyperpixels {list(self.config.hyperpixels)}, depth {self.config.depth} ({self.args_source})",
            f"mapped   {self.mapped} tensors, {self.mapped_values:,} values",
            f"dropped  {len(self.dropped)} dead tensors, {self.dropped_values:,} values "
            f"({100 * self.dropped_values / max(total, 1):.1f} % of the state dict): "
            + ", ".join(f"{k} ({v})" for k, v in groups.items()),
        ]
        if self.absent_dead:
            lines.append(f"absent   {len(self.absent_dead)} dead keys were not in the file (harmless)")
        return "\n".join(lines)


def convert_cats(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] | None = print,
) -> CatsConversion:
    """Convert an official CATs checkpoint folder and, with `out`, write ``model.safetensors`` + ``config.json``.

    Args:
        folder: the folder holding ``model_best.pth`` and ``args.pkl`` (or the ``.pth`` file itself; its
            ``args.pkl`` is looked for next to it; without one the config is inferred from the keys).
        out: output folder; nothing is written when None.
        dtype: storage dtype of the floating tensors (float32 or float16).
        log: where the summary goes (None: silent).

    The trained soft-argmax grid and the backbone BatchNorm statistics (which drift during "frozen" training) are
    kept as they are in the file.
    """
    from ...matching.cats import save_cats

    path = Path(folder).expanduser()
    weights = path / "model_best.pth" if path.is_dir() else path
    if not weights.is_file():
        raise WeightsNotFoundError(
            f"{weights} not found: pass the folder holding model_best.pth and args.pkl "
            "(as downloaded from the CATs README), or the .pth file itself"
        )
    state = read_official(weights)
    args_path = weights.parent / "args.pkl"
    if args_path.is_file():
        config, args_source = config_from_args(load_namespace(args_path)), "from args.pkl"
    else:
        config, args_source = config_from_state(state), "inferred from the keys: no args.pkl"
    try:
        model = build_official_model(config, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{weights}: {exc}") from exc
    from ..hub import sha256_of

    used, dead = official_layout(config, model.state_dict())
    dropped = [k for k in state if k in dead]
    result = CatsConversion(
        model=model,
        config=config,
        source=weights,
        sha256=sha256_of(weights),
        args_source=args_source,
        mapped=len(used),
        mapped_values=sum(state[k].numel() for k in used),
        dropped=dropped,
        dropped_values=sum(state[k].numel() for k in dropped),
        absent_dead=[k for k in dead if k not in state],
    )
    model.readout = {"preset": "official"}
    converted_from = {
        "format": "official CATs checkpoint (SunghwanHong/Cost-Aggregation-transformers)",
        "file": weights.name,
        "sha256": result.sha256,
        "args": args_source,
        "dtype": str(dtype).removeprefix("torch."),
        "dropped_dead_keys": dropped,
        "dropped_values": result.dropped_values,
    }
    use = "mmnet.create_matcher({})  # official readout (256x256, truncated points); preset='exact' for mmnet's"
    finish_conversion(result, save_cats, out, converted_from, log, use, dtype=dtype)
    return result
