"""Reading images of any kind into RGB tensors, and the resize + normalisation a model expects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..checks import check_bool, check_float, check_keys, check_size, describe
from ..errors import InputError

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class PreprocessConfig:
    """Input size (H, W) the image is resized to (aspect ignored, as in training) and its normalisation.

    ``antialias=False`` reproduces the official code's plain bilinear down-sizing.
    """

    size: tuple[int, int] = (224, 320)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    antialias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", check_size("size", self.size))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 3:
                raise InputError(f"{name} must be 3 numbers (one per RGB channel), got {describe(value)}")
            low = 0.0 if name == "std" else None
            object.__setattr__(
                self,
                name,
                tuple(check_float(f"{name}[{i}]", v, min=low, min_inclusive=False) for i, v in enumerate(value)),
            )
        check_bool("antialias", self.antialias)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        if not isinstance(data, dict):
            raise InputError(f"preprocess must be a JSON object, got {describe(data)}")
        check_keys("preprocess key(s)", data, [f.name for f in fields(cls)])
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array / top * 255).round().clip(0, 255).astype(np.uint8))
    if image.mode == "RGBA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, image)
    return image.convert("RGB")


#: Float images may stray this far outside [0, 1] (resampling, rounding) and are clamped; beyond it they are refused.
FLOAT_TOLERANCE = 1 / 255
URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "data:")


def _scale(values: np.ndarray | torch.Tensor, kind: str) -> torch.Tensor:
    """uint8 / uint16 / float values -> float32 in [0, 1] by the documented rule; anything else is refused."""
    tensor = torch.from_numpy(np.require(values, requirements=["C", "W"])) if isinstance(values, np.ndarray) else values
    dtype = tensor.dtype
    if dtype == torch.uint8:
        return tensor.float() / 255
    if dtype == getattr(torch, "uint16", None):
        return tensor.to(torch.int32).float() / 65535
    if dtype.is_floating_point:
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise InputError(f"image {kind} contains NaN or infinite values")
        lo, hi = float(tensor.min()), float(tensor.max())
        if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
            hint = " (it looks like 0-255 values: divide by 255 or pass uint8)" if hi <= 255 and lo >= 0 else ""
            raise InputError(f"a float image {kind} must hold values in [0, 1], got range [{lo:g}, {hi:g}]{hint}")
        return tensor.clamp(0, 1)
    raise InputError(
        f"image {kind} dtype {str(dtype).removeprefix('torch.')} is not supported: use uint8 "
        "(0-255), uint16 (0-65535) or float in [0, 1]"
    )


def _array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Numpy images are channels-LAST: (H, W) or (H, W, C) with C in 1, 3, 4 (a (3, H, 3) array is H=3, W=H)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        hint = (
            " (channels first? numpy images are (H, W, C): use array.transpose(1, 2, 0))"
            if array.ndim == 3 and array.shape[0] in (1, 3, 4)
            else ""
        )
        raise InputError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {array.shape}{hint}"
        )
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
        scaled = torch.from_numpy(np.ascontiguousarray(array)).float() / 65535
    else:
        scaled = _scale(array, "array")
    scaled = scaled[..., :3] if scaled.shape[-1] == 4 else scaled
    tensor = scaled.permute(2, 0, 1)
    return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
        return image
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"image {path} is too large to open safely: {exc} If the file is trusted, raise the "
            "limit with `PIL.Image.MAX_IMAGE_PIXELS = <pixels>` (None disables it)."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc


def load_image(image: ImageLike) -> torch.Tensor:
    """Any supported image -> float RGB tensor (3, H, W) in [0, 1].

    Accepts a path (EXIF orientation applied; URLs are not fetched), a PIL image of any mode (grayscale, RGBA on
    white, palette, 16-bit), a numpy array, channels LAST, (H, W[, 1|3|4]) of uint8 (/255), uint16 (/65535) or
    float in [0, 1], or a tensor, channels FIRST, (3, H, W) / (1, H, W) / (H, W) of uint8 (/255) or float in
    [0, 1]. Other integer types, float values outside [0, 1] and NaN/inf are refused (docs/conventions.md).
    """
    if isinstance(image, str) and image.strip().lower().startswith(URL_PREFIXES):
        raise InputError(
            f"image {image[:80]!r} is a URL: mmnet does not download images; save the file and pass "
            "its path (or a PIL image, array or tensor)"
        )
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise InputError(f"image file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
        image = _open(path)
    if isinstance(image, Image.Image):
        try:
            rgb = _pil_to_rgb(image)
        except Image.DecompressionBombError as exc:
            raise InputError(f"image is too large: {exc}") from None
        tensor = _array_to_tensor(np.asarray(rgb))
    elif isinstance(image, np.ndarray):
        tensor = _array_to_tensor(image)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        tensor = tensor[None] if tensor.ndim == 2 else tensor
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
            hint = (
                " (channels last? tensors are (C, H, W): use tensor.permute(2, 0, 1))"
                if tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4)
                else ""
            )
            raise InputError(f"an image tensor must be (3, H, W), (1, H, W) or (H, W); got {tuple(image.shape)}" + hint)
        tensor = _scale(tensor, "tensor")
        tensor = tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor
    else:
        raise InputError(f"unsupported image type {type(image).__name__}; use a path, PIL image, array or tensor")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise InputError(f"image has zero size: {tuple(tensor.shape[-2:])}")
    return tensor


def resize(images: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size): bilinear, aspect ignored, ``align_corners=False`` (the resize of `prepare`)."""
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ``(images - mean) / std`` per channel (the normalisation of `prepare`)."""
    return (images - torch.tensor(mean, device=images.device).view(1, 3, 1, 1)) / torch.tensor(
        std, device=images.device
    ).view(1, 3, 1, 1)


def prepare(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> normalised (B, 3, *config.size), bilinear, aspect ignored.

    The one preprocessing path: inference (every matcher) and training (`mmnet.train` pair sources) both resize
    and normalise here, after `load_image`."""
    return normalise(resize(images, config.size, config.antialias), config.mean, config.std)


#: EXIF orientations (tag 0x0112) that turn the stored image by 90 degrees (width and height swap).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as `load_image` returns it (EXIF orientation applied), read from the header only."""
    path = Path(path).expanduser()
    try:
        with Image.open(path) as opened:
            h, w = opened.height, opened.width
            orientation = opened.getexif().get(0x0112)
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {path} is too large to open safely: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    return (w, h) if orientation in _TRANSPOSING_ORIENTATIONS else (h, w)
