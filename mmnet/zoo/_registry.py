"""The model registry: architecture names (``family_backbone``) and pretrained weights (``arch.tag``, timm's scheme).

A matcher family registers each architecture once with `register_model`; a name holding ``{backbone}`` stands
for one architecture per registered backbone (``mmnet_{backbone}``, ``scot_{backbone}``), so a backbone added
later with `mmnet.register_backbone` is a model of every such family at once. The family's factories are
callables or ``"module:attribute"`` strings, imported only when a model of that family is built: this module
and `list_models` never import a family, and no family imports the factory that builds it.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownModelError
from ..models.backbones import list_backbones
from ._pretrained import PretrainedCfg

Factory = Callable[..., Any] | str


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture (or family of architectures, one per backbone).

    name: ``"cats_resnet101"``, or a pattern with ``{backbone}`` such as ``"mmnet_{backbone}"``.
    matcher: ``(name, *, pretrained, **kwargs) -> BaseMatcher``; `name` is the architecture, ``arch.tag``, or a
        folder / hub id whose config.json names this architecture.
    model: ``(name, *, pretrained, **kwargs) -> nn.Module``, the trainable network (None for training-free
        matchers).
    description: one line for ``mmnet models``.
    """

    name: str
    matcher: Factory
    model: Factory | None = None
    description: str = ""

    def architectures(self) -> list[str]:
        if "{backbone}" not in self.name:
            return [self.name]
        return [self.name.format(backbone=b) for b in list_backbones()]


_MODELS: list[ModelEntry] = []
_PRETRAINED: dict[str, PretrainedCfg] = {}


def register_model(name: str, *, matcher: Factory, model: Factory | None = None, description: str = "") -> ModelEntry:
    """Register one architecture (``{backbone}`` in `name`: one per backbone); see `ModelEntry` for the factories."""
    entry = ModelEntry(name, matcher, model, description)
    _MODELS[:] = [e for e in _MODELS if e.name != name] + [entry]
    return entry


def register_pretrained(name: str, cfg: PretrainedCfg) -> None:
    """Register weights under ``arch.tag`` (the architecture must be registered)."""
    arch, _, tag = name.partition(".")
    if not tag:
        raise ValueError(f"pretrained names are 'arch.tag', got {name!r}")
    get_model_entry(arch)
    _PRETRAINED[name] = cfg


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Architecture names (``pretrained=False``) or ``arch.tag`` weight names (``pretrained=True``), sorted."""
    names = list(_PRETRAINED) if pretrained else _architectures()
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def _architectures() -> dict[str, ModelEntry]:
    return {arch: entry for entry in _MODELS for arch in entry.architectures()}


def get_model_entry(name: str) -> ModelEntry:
    """The entry of an architecture (``arch`` or ``arch.tag``); `UnknownModelError` listing the known ones."""
    arch = name.partition(".")[0]
    entries = _architectures()
    if arch not in entries:
        raise UnknownModelError(f"unknown model {arch!r}; available: {', '.join(sorted(entries))}")
    return entries[arch]


def is_registered(name: str) -> bool:
    """True for a registered ``arch.tag``, or an ``arch`` / ``arch.tag`` of a registered architecture."""
    return name in _PRETRAINED or name.partition(".")[0] in _architectures()


def pretrained_tags(arch: str) -> list[str]:
    """The ``arch.tag`` names of `arch`'s weights in registration order (the first is the architecture's default)."""
    return [n for n in _PRETRAINED if n.partition(".")[0] == arch]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The cfg of ``arch.tag``, or of the first registered tag of ``arch`` when no tag is given."""
    if "." not in name:
        tags = pretrained_tags(name)
        if not tags:
            get_model_entry(name)
            raise UnknownModelError(
                f"no pretrained weights are registered for {name!r}; registered weights: "
                f"{', '.join(sorted(_PRETRAINED)) or 'none'}"
            )
        name = tags[0]
    if name not in _PRETRAINED:
        raise UnknownModelError(
            f"unknown pretrained weights {name!r}; registered: {', '.join(sorted(_PRETRAINED)) or 'none'}"
        )
    return _PRETRAINED[name]


def resolve_factory(factory: Factory) -> Callable[..., Any]:
    """A factory callable, importing ``"module:attribute.path"`` strings."""
    if callable(factory):
        return factory
    module, _, path = factory.partition(":")
    value: Any = importlib.import_module(module)
    for part in path.split("."):
        value = getattr(value, part)
    return value
