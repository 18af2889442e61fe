"""`create_model`, `create_matcher` and `from_pretrained`: names to objects, through the registry and hub IO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UnknownModelError
from ..models.mmnet import MMNet
from . import catalog, hub  # noqa: F401  (catalog registers the architectures and weights)
from ._registry import get_model_entry, get_pretrained_cfg, is_registered, resolve_factory
from .hub import Source, load_mmnet, read_config, source_of


def _source(name_or_path: str | Path) -> Source | str | Path:
    """A registered name's `Source`; a file, folder or hub id as it is (an existing path wins over a name)."""
    name = str(name_or_path)
    if not Path(name).expanduser().exists() and is_registered(name):
        return source_of(get_pretrained_cfg(name), name)
    return name_or_path


def resolve_files(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[Path, Path, str | None]:
    """(config.json, model.safetensors, expected sha256 or None) of a registered name, folder, file or hub id,
    downloaded into the hub cache when needed."""
    return hub.resolve_files(
        _source(name_or_path), revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
    """Build the trainable network of a registered architecture.

    Args:
        name: ``arch`` or ``arch.tag`` (a tag implies ``pretrained=True``), e.g. ``"mmnet_resnet50"``.
        pretrained: load the registered weights (the first tag when none is named).
        kwargs: the family's options; for MMNet ``pretrained_backbone=True`` (ImageNet backbone) and
            `MMNetConfig` overrides of a fresh model, e.g. ``channels=32``.
    """
    entry = get_model_entry(name)
    if entry.model is None:
        raise UnknownModelError(
            f"{name!r} is a training-free matcher with no network to train; use mmnet.create_matcher({name!r})"
        )
    return resolve_factory(entry.model)(name, pretrained=pretrained, **kwargs)


def create_matcher(name_or_path: str | Path, pretrained: bool = True, **kwargs: Any) -> Any:
    """A ready matcher (a `BaseMatcher` of the right family) for a registered name, hub repo id, folder or file.

    Registered names (``arch`` or ``arch.tag``) pick the family from the registry; a folder or hub id picks it
    from the ``architecture`` in its config.json. ``pretrained=True`` loads the registered weights (the first
    tag of an ``arch``; for a training-free family, the backbone's ImageNet weights) and says which weights exist
    when there are none. kwargs go to the family's matcher (e.g. ``device``, ``preset``, ``revision``,
    ``cache_dir``, ``local_files_only``).
    """
    arch = str(name_or_path)
    if Path(arch).expanduser().exists() or not is_registered(arch):
        options = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only") if k in kwargs}
        config, _, _ = hub.resolve_files(name_or_path, **options)
        arch = str(read_config(config).get("architecture", ""))
    return resolve_factory(get_model_entry(arch).matcher)(name_or_path, pretrained=pretrained, **kwargs)


def from_pretrained(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> MMNet:
    """Load an MMNet from a registered name (``arch.tag``), a hub repo id, a folder or a safetensors file.

    The model comes back in eval mode on the CPU, with its `preprocess` (and recommended `readout`) from the
    checkpoint's config.json.
    """
    return load_mmnet(_source(name_or_path), revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
