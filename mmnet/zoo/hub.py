"""Checkpoint IO: ``model.safetensors`` + ``config.json`` in a folder, on disk or on the Hugging Face hub.

Loading is strict (every tensor present, none left over, shapes equal), verifies the sha256 when it is known,
and builds the model without ImageNet backbone weights since the checkpoint overwrites them. This module knows
folders, files and hub ids only: registered names are resolved by `mmnet.zoo` into a `PretrainedCfg` first.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checks import describe
from ..errors import CheckpointError, InputError, UnknownModelError, WeightsNotFoundError
from ..matching.images import PreprocessConfig
from ..models.mmnet import MMNet, MMNetConfig
from ..version import __version__
from ._pretrained import PretrainedCfg

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HUB_PREFIX = "hf-hub:"


def _write_atomic(path: Path, write: Any) -> None:
    """`write(tmp_path)` into a temporary file beside `path`, then rename it over `path` (readers never see a
    half-written file), with the permissions of an ordinary new file (0666 minus the umask, usually 0644)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(
    model: MMNet,
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    readout: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` (floats stored as `dtype`) and ``config.json`` into `directory`.

    `readout` records the recommended `Matcher` settings (default: the model's own, so a load -> save round
    trip keeps its predictions); `extra` is copied into config.json as is. Each file is written to a temporary
    name and renamed into place, weights first, so a reader sees either the old or the new checkpoint.
    """
    if not isinstance(model, MMNet):
        raise InputError(f"model must be an MMNet, got {describe(model)}")
    if getattr(model, "folded", False):
        raise InputError(
            "this MMNet has its BatchNorm folded for inference (Matcher.create / fold_batchnorm): "
            "save the checkpoint it was loaded from instead"
        )
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise InputError(f"dtype must be a floating torch dtype (torch.float32, float16, bfloat16), got {dtype!r}")
    readout = dict(getattr(model, "readout", {}) or {}) if readout is None else dict(readout)
    from ..matching.readouts import ReadoutConfig

    ReadoutConfig.from_dict(readout)  # an InputError now rather than a CheckpointError at the next load
    reserved = {"architecture", "model", "preprocess", "readout", "mmnet_version"} & set(extra or {})
    if reserved:
        raise InputError(f"extra must not override {', '.join(sorted(reserved))}")
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InputError(f"directory {str(directory)!r} is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    check_weights(state, "the model")
    config = {
        "architecture": model.architecture,
        "model": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "readout": readout,
        "mmnet_version": __version__,
        **(extra or {}),
    }
    text = json.dumps(config, indent=2) + "\n"
    _write_atomic(
        directory / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt", "mmnet_version": __version__})
    )
    _write_atomic(directory / CONFIG_NAME, lambda p: p.write_text(text))
    return directory


def check_weights(state: dict[str, torch.Tensor], origin: str, expected: dict[str, torch.Tensor] | None = None) -> None:
    """Every floating tensor finite; where `expected` is floating, the stored tensor is floating too."""
    for key, value in state.items():
        if (
            expected is not None
            and key in expected
            and expected[key].is_floating_point()
            and not value.is_floating_point()
        ):
            raise CheckpointError(
                f"{origin}: tensor {key!r} is stored as {str(value.dtype).removeprefix('torch.')}"
                ", but the model needs floating-point weights"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{origin}: tensor {key!r} holds {bad} NaN or infinite value(s); the checkpoint "
                "is damaged (or training diverged)"
            )


@dataclass(frozen=True)
class Source:
    """Where to read a checkpoint from: a local file or folder, or a hub repo (+ revision)."""

    local: Path | None = None
    hub_id: str | None = None
    revision: str | None = None
    sha256: str | None = None


def _offline(local_files_only: bool) -> bool:
    return local_files_only or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def released_dir(local_dir: str) -> Path:
    """A weights folder: absolute, or inside `mmnet.weights` (installed) / the checkout's `weights/`."""
    path = Path(local_dir)
    if path.is_absolute():
        return path
    try:
        return Path(str(importlib.resources.files("mmnet.weights"))) / path
    except ModuleNotFoundError:  # running from a source checkout (e.g. torch.hub source="local"): <repo>/weights
        return Path(__file__).resolve().parents[2] / "weights" / path


def source_of(cfg: PretrainedCfg, name: str) -> Source:
    """Where the registered weights `name` with `cfg` are: their folder when it exists, else their hub repo."""
    if cfg.local_dir is not None and (local := released_dir(cfg.local_dir)).exists():
        return Source(local=local, sha256=cfg.sha256)
    if cfg.hub_id is None:
        raise WeightsNotFoundError(
            f"{name}: the registered weights are not on disk and have no hub id ({cfg.notes or 'see docs/'})"
        )
    return Source(hub_id=cfg.hub_id, revision=cfg.revision, sha256=cfg.sha256)


def parse_source(path_or_id: str | Path) -> Source:
    """A file or folder on disk, or a hub repo id (``org/name`` or ``hf-hub:org/name``)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return Source(local=path)
    name = str(path_or_id)
    if name.startswith(HUB_PREFIX):
        return Source(hub_id=name[len(HUB_PREFIX) :])
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return Source(hub_id=name)
    raise UnknownModelError(
        f"{name!r} is neither a file, a folder, a registered model nor a hub repo id ('org/name' or 'hf-hub:org/name')"
    )


def _download(source: Source, filename: str, cache_dir: str | Path | None, local_files_only: bool) -> Path:
    offline = _offline(local_files_only)
    try:
        return Path(
            hf_hub_download(
                source.hub_id or "", filename, revision=source.revision, cache_dir=cache_dir, local_files_only=offline
            )
        )
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, HTTP, OS)
        where = f"{source.hub_id}@{source.revision or 'main'}/{filename}"
        mode = (
            "offline mode (HF_HUB_OFFLINE or local_files_only) is on and it is not in the cache"
            if offline
            else f"{type(exc).__name__}: {exc}"
        )
        raise WeightsNotFoundError(
            f"could not get {where}: {mode}. To fix: (1) run once with network access to fill the cache "
            f"(`mmnet download {source.hub_id}`), (2) copy a filled hub cache and point cache_dir / HF_HUB_CACHE "
            f"at it, or (3) pass the local folder holding {CONFIG_NAME} and {WEIGHTS_NAME}."
        ) from exc


def resolve_files(
    source: Source | str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[Path, Path, str | None]:
    """(config.json, model.safetensors, expected sha256 or None) for a `Source`, folder, file or hub id."""
    if not isinstance(source, Source):
        source = parse_source(source)
    if source.local is not None:
        folder = source.local if source.local.is_dir() else source.local.parent
        weights = source.local if source.local.is_file() else folder / WEIGHTS_NAME
        config = folder / CONFIG_NAME
        for needed in (config, weights):
            if not needed.is_file():
                raise WeightsNotFoundError(
                    f"{needed} is missing: a checkpoint folder holds {CONFIG_NAME} and "
                    f"{WEIGHTS_NAME} (written by mmnet.save_pretrained)"
                )
        return config, weights, source.sha256
    if revision is not None:
        source = Source(hub_id=source.hub_id, revision=revision, sha256=None)
    config = _download(source, CONFIG_NAME, cache_dir, local_files_only)
    weights = _download(source, WEIGHTS_NAME, cache_dir, local_files_only)
    return config, weights, source.sha256


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict; not JSON, not an object, or without a "model" object: `CheckpointError`."""
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not an mmnet config ({type(exc).__name__}: {exc})") from exc
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f'{path} is not an mmnet config (expected a JSON object with a "model" entry)')
    for key in ("model", "preprocess", "readout"):
        if key in config and not isinstance(config[key], dict):
            raise CheckpointError(f'{path}: "{key}" must be a JSON object, got {describe(config[key])}')
    if "architecture" in config and not isinstance(config["architecture"], str):
        raise CheckpointError(f'{path}: "architecture" must be a string, got {describe(config["architecture"])}')
    return config


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Strict load with an error that lists missing, unexpected and mis-shaped tensors."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{origin} does not fit the model: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(shapes)} with another shape {shapes[:5]}"
        )
    model.load_state_dict(state, strict=True)


def open_checkpoint(
    source: Source | str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[Path, Path, dict[str, Any]]:
    """Find a checkpoint's files, check the registered sha256 of its weights and read its config.json:
    -> (config path, weights path, config). Every family's loader starts here."""
    config_path, weights_path, sha256 = resolve_files(
        source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    if sha256 is not None and (actual := sha256_of(weights_path)) != sha256:
        raise CheckpointError(
            f"{weights_path} has sha256 {actual}, expected {sha256}: the file is corrupted or "
            "not the registered one; delete it and download or convert it again"
        )
    return config_path, weights_path, read_config(config_path)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors`` -> its tensors; `CheckpointError` for a corrupted or truncated file."""
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupted or truncated ({exc})") from exc


def load_mmnet(
    source: Source | str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> MMNet:
    """Load an MMNet from a `Source`, a folder, a safetensors file or a hub repo id (`mmnet.from_pretrained` also
    takes registered names).

    The model comes back in eval mode on the CPU, with its `preprocess` (and recommended `readout`) from the
    checkpoint's config.json.
    """
    config_path, weights_path, config = open_checkpoint(
        source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    from ..matching.readouts import ReadoutConfig

    try:
        model_config = MMNetConfig.from_dict(config["model"])
        readout = dict(config.get("readout", {}))
        ReadoutConfig.from_dict(readout)
        model = MMNet(model_config, pretrained_backbone=False)
        preprocess = PreprocessConfig.from_dict({**model.preprocess.to_dict(), **config.get("preprocess", {})})
    except (TypeError, ValueError) as exc:  # InputError is a ValueError
        raise CheckpointError(f"{config_path}: {exc}") from exc
    state = read_weights(weights_path)
    check_weights(state, str(weights_path), model.state_dict())
    load_state(model, state, str(weights_path))
    model.preprocess = preprocess
    model.readout = readout
    return model.eval()
