"""Model names, pretrained tags and the factory.

Architectures are ``mmnet_<backbone>`` for every registered backbone; pretrained weights are ``arch.tag``
(timm's scheme). A tag's `PretrainedCfg` says where the weights live and what they were measured to do.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .backbones import list_backbones
from .errors import UnknownModelError
from .model import MMNet, MMNetConfig

PREFIX = "mmnet_"


@dataclass(frozen=True)
class PretrainedCfg:
    """Where one set of MMNet weights lives and what it is.

    The weights are a folder holding ``config.json`` + ``model.safetensors``: ``hub_id`` (+ ``revision``) on
    the Hugging Face hub, or ``local_dir`` on disk (absolute, or relative to the installed package).
    """

    hub_id: str | None = None
    revision: str | None = None
    local_dir: str | None = None
    sha256: str | None = None
    input_size: tuple[int, int] = (224, 320)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    license: str = "unknown"
    datasets: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


_PRETRAINED: dict[str, PretrainedCfg] = {}


def register_pretrained(name: str, cfg: PretrainedCfg) -> None:
    """Register weights under ``arch.tag`` (the arch must exist)."""
    arch, _, tag = name.partition(".")
    if not tag:
        raise ValueError(f"pretrained names are 'arch.tag', got {name!r}")
    _check_arch(arch)
    _PRETRAINED[name] = cfg


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Architecture names (``pretrained=False``) or ``arch.tag`` weight names (``pretrained=True``)."""
    names = list(_PRETRAINED) if pretrained else [PREFIX + b for b in list_backbones()]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The cfg of ``arch.tag``, or of the first tag of ``arch`` when no tag is given."""
    if "." not in name:
        tags = [n for n in sorted(_PRETRAINED) if n.startswith(name + ".")]
        if not tags:
            _check_arch(name)
            raise UnknownModelError(f"no pretrained weights are registered for {name!r}; registered weights: "
                                    f"{', '.join(sorted(_PRETRAINED)) or 'none'}")
        name = tags[0]
    if name not in _PRETRAINED:
        raise UnknownModelError(f"unknown pretrained weights {name!r}; registered: "
                                f"{', '.join(sorted(_PRETRAINED)) or 'none'}")
    return _PRETRAINED[name]


def is_registered(name: str) -> bool:
    return name in _PRETRAINED or name.partition(".")[0] in list_models()


def _check_arch(arch: str) -> str:
    if not arch.startswith(PREFIX) or arch[len(PREFIX):] not in list_backbones():
        raise UnknownModelError(f"unknown model {arch!r}; available: {', '.join(list_models())}")
    return arch[len(PREFIX):]


def create_model(name: str, pretrained: bool = False, pretrained_backbone: bool = False,
                 **config: Any) -> MMNet:
    """Build an MMNet.

    Args:
        name: ``mmnet_<backbone>`` or ``mmnet_<backbone>.<tag>`` (a tag implies ``pretrained=True``).
        pretrained: load the registered MMNet weights (the first tag when none is named).
        pretrained_backbone: start from ImageNet backbone weights (ignored when full weights are loaded).
        config: `MMNetConfig` overrides for a fresh model, e.g. ``channels=32``.
    """
    arch, _, tag = name.partition(".")
    backbone = _check_arch(arch)
    if pretrained or tag:
        if config:
            raise ValueError("config overrides cannot be combined with pretrained weights")
        from .hub import from_pretrained

        return from_pretrained(name)
    return MMNet(MMNetConfig(backbone=backbone, **config), pretrained_backbone=pretrained_backbone)
