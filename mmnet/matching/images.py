"""Reading images of any kind into RGB tensors, and the resize + normalisation a model expects."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


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


def _array_to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    array = array[..., :3] if array.shape[-1] == 4 else array
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255
    elif array.dtype == np.uint16:
        scaled = array.astype(np.float32) / 65535
    elif np.issubdtype(array.dtype, np.floating):
        scaled = array.astype(np.float32)
    else:
        raise InputError(f"unsupported image array dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    tensor = torch.from_numpy(np.ascontiguousarray(scaled)).permute(2, 0, 1)
    return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor


def load_image(image: ImageLike) -> torch.Tensor:
    """Any supported image -> float RGB tensor (3, H, W) in [0, 1].

    Accepts a path (EXIF orientation applied), a PIL image of any mode (grayscale, RGBA on white, palette,
    16-bit), a numpy array (H, W[, 1|3|4]) of uint8, uint16 or float, or a tensor (3, H, W) / (1, H, W) /
    (H, W) (uint8, or float in [0, 1]).
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        try:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)
                image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read image {path}: {exc}") from exc
    if isinstance(image, Image.Image):
        tensor = _array_to_tensor(np.asarray(_pil_to_rgb(image)))
    elif isinstance(image, np.ndarray):
        tensor = _array_to_tensor(image)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        tensor = tensor[None] if tensor.ndim == 2 else tensor
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
            raise InputError(f"an image tensor must be (3, H, W), (1, H, W) or (H, W); got {tuple(image.shape)}")
        tensor = tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor.float()
        tensor = tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor
    else:
        raise InputError(f"unsupported image type {type(image).__name__}; use a path, PIL image, array or tensor")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise InputError(f"image has zero size: {tuple(tensor.shape[-2:])}")
    if not torch.isfinite(tensor).all():
        raise InputError("image contains non-finite values")
    return tensor


def prepare(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> normalised (B, 3, *config.size), bilinear, aspect ignored."""
    mean = torch.tensor(config.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=images.device).view(1, 3, 1, 1)
    resized = F.interpolate(images, size=config.size, mode="bilinear", align_corners=False,
                            antialias=config.antialias)
    return (resized - mean) / std
