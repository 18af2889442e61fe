"""Convert the authors' LPMFlow checkpoints (``model_best.pth`` + ``args.pkl``) into mmnet checkpoints.

The official training script saves ``{'epoch', 'state_dict', 'optimizer', 'scheduler', 'best_loss'}`` (about
2.1 GB, two thirds of it AdamW state); its test script loads ``state_dict`` strictly (424 keys for ViT-B/16).
`official_layout` lists every one of those keys, in file order, with its shape and what happens to it:

========  ==========================================================================================
role      meaning
========  ==========================================================================================
mapped    copied to the mmnet key (385 tensors for ViT-B/16)
resized   the backbone's 14 x 14 position table, resized once to 16 x 16 the DINO way
training  the top-level ``pos_embed_src``, added to the source tokens in training only; kept
alias     ``encoder.pos_embed_{src,trg}``, ``encoder.cls_pos_embed_{src,trg}``: views of
          ``encoder.pos_embed`` in the official model (one memory); checked equal, stored once
index     relative-position index buffers; regenerated from their formula and checked equal
dead      never read by the official forward (28 keys, 3.17 M values): dropped
========  ==========================================================================================

The file is read with ``weights_only=True`` and ``args.pkl`` with a restricted unpickler (an
``argparse.Namespace`` of plain values, nothing else). The architecture is read off the tensor shapes;
``args.pkl`` is optional and only cross-checked. Use `convert_lpmflow` or ``mmnet convert-lpmflow``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ...errors import CheckpointError, WeightsNotFoundError
from ...models.lpmflow import (
    LPMFlow,
    LpmflowConfig,
    dino_resize_pos_embed,
    larl_relative_index,
    swin_relative_index,
)
from ._common import finish_conversion

Role = Literal["mapped", "resized", "training", "alias", "index", "dead"]
OFFICIAL_SOURCE = "YXSUNMADMAX/LPMFlow @ 8ac9737 (model_best.pth + args.pkl)"
CHECKPOINT_NAME = "model_best.pth"
ARGS_NAME = "args.pkl"


@dataclass(frozen=True)
class OfficialKey:
    """One key of the official state dict: its shape, its role, and the mmnet key (or the aliased/regenerated
    tensor it must equal)."""

    key: str
    shape: tuple[int, ...]
    role: Role
    target: str | None = None


def _native_backbone(model: LPMFlow) -> dict[str, tuple[int, ...]]:
    """Shapes of the timm ViT's state dict at its native image size (as the official file stores it)."""
    import timm

    spec = model.backbone.spec
    with torch.device("meta"):
        native = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_kwargs)
    return {k: tuple(v.shape) for k, v in native.state_dict().items()}


def official_layout(model: LPMFlow) -> list[OfficialKey]:
    """Every key of the official state dict for `model`'s configuration, in the order of the official file."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    g, dim = model.grid, model.backbone.dim
    patch = model.backbone.patch
    out: list[OfficialKey] = []

    def add(key: str, role: Role, target: str | None = None, shape: tuple[int, ...] | None = None) -> None:
        if shape is None:
            if target is None or target not in ours:
                raise AssertionError(f"no mmnet tensor {target!r} for official {key!r}")
            shape = ours[target]
        out.append(OfficialKey(key, tuple(shape), role, target))

    def linear(official: str, mine: str, role: Role = "mapped") -> None:
        add(f"{official}.weight", role, f"{mine}.weight")
        add(f"{official}.bias", role, f"{mine}.bias")

    add("x_normal", "mapped", "soft_argmax.grid_x")
    add("y_normal", "mapped", "soft_argmax.grid_y")
    add("masked_tokens", "dead", shape=(g * g + 1, dim))
    add("pos_embed_src", "training", "train_source_pos")
    for key, shape in _native_backbone(model).items():
        add(
            f"feature_extraction.backbone.{key}",
            "resized" if key == "pos_embed" else "mapped",
            f"backbone.body.{key}",
            shape,
        )

    e = "encoder"
    add(f"{e}.cls_token", "dead", shape=(1, 1, dim))
    add(f"{e}.pos_embed", "mapped", f"{e}.pos_embed")
    add(f"{e}.pos_embed_trg", "alias", f"{e}.pos_embed[:, 1:]", (1, g * g, dim))
    add(f"{e}.pos_embed_src", "alias", f"{e}.pos_embed[:, 1:]", (1, g * g, dim))
    add(f"{e}.cls_pos_embed_src", "alias", f"{e}.pos_embed[:, :1]", (1, 1, dim))
    add(f"{e}.cls_pos_embed_trg", "alias", f"{e}.pos_embed[:, :1]", (1, 1, dim))
    add(f"{e}.trg_segment_pos_embed", "mapped", f"{e}.tgt_segment")
    add(f"{e}.src_segment_pos_embed", "mapped", f"{e}.src_segment")
    add(f"{e}.patch_embed.proj.weight", "dead", shape=(dim, 3, patch, patch))
    add(f"{e}.patch_embed.proj.bias", "dead", shape=(dim,))
    for i in range(len(model.encoder.blocks)):
        o, m = f"{e}.blocks.{i}", f"{e}.blocks.{i}"
        linear(f"{o}.norm1", f"{m}.norm1")
        add(f"{o}.attn.relative_position_bias_table", "mapped", f"{m}.attn.rel_table")
        add(f"{o}.attn.relative_position_index", "index", f"larl:{g}", (2 * g * g, 2 * g * g))
        linear(f"{o}.attn.qkv", f"{m}.attn.qkv")
        linear(f"{o}.attn.proj", f"{m}.attn.proj")
        linear(f"{o}.norm2", f"{m}.norm2")
        linear(f"{o}.mlp.fc1", f"{m}.mlp.fc1")
        linear(f"{o}.mlp.fc2", f"{m}.mlp.fc2")
        add(f"{o}.spatial_attention.weight", "dead", shape=(1, 1, dim))
    linear(f"{e}.norm", f"{e}.norm")

    coarse, fine = g * g + 1, 4 * g * g + 1
    for n in (1, 2, 3):
        o, m = f"decoder_s{n}.last_block.0", f"decoder{n}"
        for side, mine in (("src", "src"), ("trg", "tgt")):
            for suffix, tokens in (("", coarse), ("_up", fine)):
                key = f"{m}.tables.{mine}_{tokens}"
                if key in ours:
                    add(f"{o}.pos_embed_{side}{suffix}", "mapped", key)
                else:
                    add(f"{o}.pos_embed_{side}{suffix}", "dead", shape=(1, tokens, dim))
        # the official order is src, trg, src_up, trg_up
        out[-4:] = [out[-4], out[-2], out[-3], out[-1]]
        linear(f"{o}.sattn.qkv", f"{m}.self_qkv")
        linear(f"{o}.sattn.proj", f"{m}.self_proj")
        linear(f"{o}.cattn.qkv", f"{m}.cross_qkv")
        linear(f"{o}.cattn.proj", f"{m}.cross_proj")
        linear(f"{o}.norm1", f"{m}.norm1")
        linear(f"{o}.norm2", f"{m}.norm2")
        for dead in ("norm3", "norm4"):
            add(f"{o}.{dead}.weight", "dead", shape=(dim,))
            add(f"{o}.{dead}.bias", "dead", shape=(dim,))
        linear(f"{o}.mlp.fc1", f"{m}.mlp.fc1")
        linear(f"{o}.mlp.fc2", f"{m}.mlp.fc2")

    def swin(official: str, mine: str, window: int) -> None:
        b = f"{official}.0.transformer.layers.0.blocks.0"
        linear(f"{b}.norm1", f"{mine}.norm1")
        add(f"{b}.attn.relative_position_bias_table", "mapped", f"{mine}.attn.rel_table")
        add(f"{b}.attn.relative_position_index", "index", f"swin:{window}", (window * window, window * window))
        linear(f"{b}.attn.qkv", f"{mine}.attn.qkv")
        linear(f"{b}.attn.proj", f"{mine}.attn.proj")
        linear(f"{b}.norm2", f"{mine}.norm2")
        linear(f"{b}.mlp.fc1", f"{mine}.mlp.fc1")
        linear(f"{b}.mlp.fc2", f"{mine}.mlp.fc2")
        linear(f"{official}.0.transformer.norm", f"{mine}.norm")
        add(f"{official}.1.fc.0.weight", "mapped", f"{mine}.channel.fc.0.weight")
        add(f"{official}.1.fc.2.weight", "mapped", f"{mine}.channel.fc.2.weight")

    for i, w in enumerate(model.config.refine_windows):
        swin(f"SRBranches.refine_swin_decoder_{w}", f"refiner.stages.{i}", w)
    linear("SRBranches.refine2.0", "refiner.head.0")
    linear("SRBranches.refine2.2", "refiner.head.2")
    for i in range(len(model.upsampler.stages)):
        swin(f"SRBranch_feat.refine_swin_decoder_1_{i + 1}", f"upsampler.stages.{i}", model.config.upsampler_window)
    linear("refine_proj_query_feat.0", "source_proj.0")
    return out


def _regenerated(target: str) -> torch.Tensor:
    kind, _, n = target.partition(":")
    return larl_relative_index(int(n)) if kind == "larl" else swin_relative_index(int(n))


def _listing(items: list[str], limit: int = 6) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@dataclass
class MappingReport:
    """What `map_official_state_dict` did, by role (official keys)."""

    roles: dict[str, list[str]] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        order = ("mapped", "resized", "training", "alias", "index", "dead")
        lines = [
            f"{role:9}{len(self.roles.get(role, [])):4d} keys, {self.values.get(role, 0):>12,} values"
            for role in order
            if self.roles.get(role)
        ]
        if self.absent:
            lines.append(f"absent   {len(self.absent):4d} optional keys not in the file: {_listing(self.absent)}")
        return "\n".join(lines)


def map_official_state_dict(
    state: Mapping[str, torch.Tensor], model: LPMFlow
) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Official state dict -> mmnet state dict for `model` (pure: no I/O).

    Every mapped key must be present with its shape; aliases and index buffers, when present, must equal the
    tensor they stand for; dead keys are dropped; the training-only table is kept (zeros when absent).

    Raises:
        CheckpointError: naming missing, unexpected and mis-shaped keys, unequal aliases or index tables.
    """
    layout = official_layout(model)
    known = {k.key: k for k in layout}
    missing, shapes, unequal = [], [], []
    unexpected = [k for k in state if k not in known]
    mapped: dict[str, torch.Tensor] = {}
    report = MappingReport()
    grid = (model.grid, model.grid)
    for entry in layout:
        value = state.get(entry.key)
        target = entry.target or ""  # every role that maps a tensor names its target
        if value is None:
            if entry.role in ("mapped", "resized"):
                missing.append(entry.key)
            else:
                report.absent.append(entry.key)
                if entry.role == "training":
                    mapped[target] = torch.zeros(entry.shape)
            continue
        if tuple(value.shape) != entry.shape:
            shapes.append(f"{entry.key}: {tuple(value.shape)} in the file vs {entry.shape} expected")
            continue
        report.roles.setdefault(entry.role, []).append(entry.key)
        report.values[entry.role] = report.values.get(entry.role, 0) + value.numel()
        if entry.role in ("mapped", "training"):
            mapped[target] = value
        elif entry.role == "resized":
            mapped[target] = dino_resize_pos_embed(value.float(), grid)
        elif entry.role == "index" and not torch.equal(value.long(), _regenerated(target)):
            unequal.append(f"{entry.key} differs from the {target.split(':')[0]} index formula")
    owner = state.get("encoder.pos_embed")
    if owner is not None and tuple(owner.shape) == known["encoder.pos_embed"].shape:
        for entry in layout:
            if entry.role == "alias" and entry.key in state and tuple(state[entry.key].shape) == entry.shape:
                part = owner[:, 1:] if (entry.target or "").endswith("1:]") else owner[:, :1]
                if not torch.equal(state[entry.key], part):
                    unequal.append(f"{entry.key} != {entry.target}")
    if missing or unexpected or shapes or unequal:
        raise CheckpointError(
            f"the state dict does not match the official LPMFlow layout for backbone {model.config.backbone!r}: "
            f"missing {_listing(missing)}; unexpected {_listing(unexpected)}; another shape {_listing(shapes)}; "
            f"unequal {_listing(unequal)}. An official model_best.pth of ViT-B/16 LPMFlow has "
            f"{len(layout)} keys; re-download it if it is truncated."
        )
    mapped = {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()}
    return mapped, report


# -- architecture from the file ------------------------------------------------------------------------------------


def infer_config(state: Mapping[str, torch.Tensor], args: Mapping[str, Any] | None = None) -> LpmflowConfig:
    """The `LpmflowConfig` of an official state dict, read off its shapes and cross-checked with ``args.pkl``."""
    try:
        heads = int(state["encoder.blocks.0.attn.relative_position_bias_table"].shape[0])
        dim = int(state["encoder.norm.weight"].shape[0])
        hidden = int(state["encoder.blocks.0.mlp.fc1.weight"].shape[0])
        proj = int(state["refine_proj_query_feat.0.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"not an official LPMFlow state dict: no {exc.args[0]!r} (see docs/lpmflow.md)") from exc
    depth = len({m.group(1) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))})
    window_key = re.compile(r"SRBranches\.refine_swin_decoder_(\d+)\.0\.transformer\.norm\.weight")
    windows = [int(m.group(1)) for k in state if (m := window_key.fullmatch(k))]  # file order: coarse to fine
    tables = [
        k
        for k in state
        if re.fullmatch(
            r"SRBranches\.refine_swin_decoder_\d+\.0\.transformer\.layers\.0\."
            r"blocks\.0\.attn\.relative_position_bias_table",
            k,
        )
    ]
    refine_heads = int(state[tables[0]].shape[1]) if tables else 8
    if args:
        for name, ours in (("num_heads", heads), ("mlp_ratio", hidden / dim)):
            if name in args and args[name] is not None and float(args[name]) != float(ours):
                raise CheckpointError(
                    f"args.pkl says {name}={args[name]!r} but the weights have {ours}: the two "
                    "files do not belong together"
                )
    if dim != 768:
        raise CheckpointError(
            f"the official LPMFlow backbone is ViT-B/16 (width 768); this file has width {dim} "
            "(pass config= for another architecture)"
        )
    return LpmflowConfig(
        backbone="vit_base_patch16",
        heads=heads,
        encoder_depth=depth,
        mlp_ratio=hidden / dim,
        proj_dim=proj,
        refine_windows=tuple(windows) or (16, 8, 4),
        refine_heads=refine_heads,
    )


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """``model_best.pth`` -> its state dict, read with ``weights_only=True`` (optimizer state is skipped)."""
    from .mmnet import read_official  # the shared safe reader (wrapper dicts, module. prefix, mmap)

    return read_official(path)


def read_args(path: str | Path) -> dict[str, Any]:
    """``args.pkl`` through the restricted unpickler (an argparse.Namespace of plain values only)."""
    from ..safe_pickle import load_namespace

    return load_namespace(path)


def _locate(source: str | Path) -> tuple[Path, Path | None]:
    path = Path(source).expanduser()
    if path.is_dir():
        checkpoint = path / CHECKPOINT_NAME
        if not checkpoint.is_file():
            raise WeightsNotFoundError(
                f"{path} holds no {CHECKPOINT_NAME}: pass the folder the authors' test.py "
                f"takes as --pretrained (with {CHECKPOINT_NAME} and {ARGS_NAME}) or the .pth"
            )
    elif path.is_file():
        checkpoint = path
    else:
        raise WeightsNotFoundError(f"not found: {path} (pass the official folder or its {CHECKPOINT_NAME})")
    args = checkpoint.parent / ARGS_NAME
    return checkpoint, args if args.is_file() else None


def build_official_model(
    state: Mapping[str, torch.Tensor], config: LpmflowConfig | None = None
) -> tuple[LPMFlow, MappingReport]:
    """An `LPMFlow` holding an official state dict's weights (built on the meta device, loaded strictly)."""
    config = config or infer_config(state)
    with torch.device("meta"):
        model = LPMFlow(config)
    mapped, report = map_official_state_dict(state, model)
    model.load_state_dict(mapped, strict=True, assign=True)
    model.reset_buffers()  # index buffers are regenerated, not loaded
    if left := [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]:
        raise CheckpointError(f"tensors not filled by the checkpoint: {left[:5]}")
    return model.eval(), report


@dataclass
class LpmflowConversion:
    """What `convert_lpmflow` did."""

    model: LPMFlow
    source: Path
    sha256: str
    report: MappingReport
    args: dict[str, Any] | None
    out: Path | None = None

    def summary(self) -> str:
        head = [
            f"source   {self.source} (sha256 {self.sha256})",
            f"args     {'args.pkl read (restricted unpickler)' if self.args is not None else 'no args.pkl'}",
            f"model    lpmflow_{self.model.config.backbone}: {self.model.config.heads} heads, "
            f"{self.model.config.encoder_depth} encoder blocks",
        ]
        return "\n".join([*head, self.report.summary()])


OFFICIAL_READOUT = {"preset": "official"}


def convert_lpmflow(
    source: str | Path,
    out: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    config: LpmflowConfig | None = None,
    log: Callable[[str], None] | None = print,
) -> LpmflowConversion:
    """Convert an official LPMFlow checkpoint and, with `out`, write ``model.safetensors`` + ``config.json``.

    Args:
        source: the folder passed to the official ``test.py --pretrained`` (``model_best.pth`` + ``args.pkl``),
            or the ``.pth`` file (``args.pkl`` is then looked for beside it).
        out: output folder; nothing is written when None.
        dtype: storage dtype of floating tensors (``torch.float32`` or ``torch.float16``).
        config: the architecture, when it is not the official ViT-B/16 one (default: read off the shapes).
        log: where the summary goes (None: silent).
    """
    from ...matching.lpmflow import save_lpmflow
    from ..hub import sha256_of

    checkpoint, args_path = _locate(source)
    args = read_args(args_path) if args_path is not None else None
    state = read_checkpoint(checkpoint)
    try:
        config = config or infer_config(state, args)
        model, report = build_official_model(state, config)
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from exc
    result = LpmflowConversion(model, checkpoint, sha256_of(checkpoint), report, args)
    converted_from = {
        "format": OFFICIAL_SOURCE,
        "file": checkpoint.name,
        "sha256": result.sha256,
        "args": {k: v for k, v in (args or {}).items() if isinstance(v, (str, int, float, bool, type(None)))},
        "dtype": str(dtype).removeprefix("torch."),
        "dropped_dead_keys": report.roles.get("dead", []),
        "aliases_checked": report.roles.get("alias", []),
        "note": "backbone position table resized 14x14 -> 16x16 once (DINO bicubic, scale (16.1/14))",
    }
    use = "mmnet.create_matcher({})  # official readout; preset='exact' for the library's"
    finish_conversion(result, save_lpmflow, out, converted_from, log, use, dtype=dtype, readout=dict(OFFICIAL_READOUT))
    return result


__all__ = [
    "LpmflowConversion",
    "MappingReport",
    "OfficialKey",
    "build_official_model",
    "convert_lpmflow",
    "infer_config",
    "map_official_state_dict",
    "official_layout",
    "read_args",
    "read_checkpoint",
]
