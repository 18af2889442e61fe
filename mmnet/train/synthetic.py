"""Self-supervised pairs from any folder of photos: a photo and a randomly warped copy of it.

The warp is a random homography (rotation, scale, shear, translation and perspective from jittered
corners), optionally followed by a thin-plate spline on a coarse control grid. It is defined as a backward
map T: target pixel -> source pixel, so the warped image is ``grid_sample(source, T(grid))`` and the
ground-truth matches are ``(T(p), p)`` for random target points p whose T(p) lands inside the source: exact,
no inversion needed. With probability 0.5 the roles swap (the warped copy becomes the source).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmnet.checks import check_int
from mmnet.errors import InputError
from mmnet.matching.images import load_image, normalise, resize
from mmnet.train.pairs import Sample, check_max_kps, colour_jitter, pad_keypoints, preprocess_config, sample_rng

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class WarpConfig:
    """Strength of the random warps (fractions of the image size unless said otherwise)."""

    rotation: float = 20.0  # degrees, uniform in +-
    scale: tuple[float, float] = (0.75, 1.25)
    shear: float = 0.1
    translation: float = 0.1
    perspective: float = 0.1  # corner jitter
    tps: float = 0.05  # std of the TPS control-point shifts; 0 disables the TPS
    tps_grid: int = 3
    crop: tuple[float, float] = (0.6, 1.0)  # area fraction of the random crop taken before the warp
    flip: float = 0.5
    jitter: float = 0.8
    jitter_strength: float = 0.3
    swap: float = 0.5


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 H with dst ~ H @ src for four (4, 2) point correspondences (direct linear transform)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    h = np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h: np.ndarray | torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(..., 2) xy -> H applied, (..., 2)."""
    h = torch.as_tensor(h, dtype=torch.float64)
    p = points.to(torch.float64)
    homog = torch.cat([p, torch.ones_like(p[..., :1])], -1) @ h.T
    return (homog[..., :2] / homog[..., 2:]).to(points.dtype)


def _tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    return 0.5 * r2 * torch.log(r2.clamp(min=1e-12))


class ThinPlateSpline:
    """A 2-D thin-plate spline through control points `ctrl` (M, 2) with values `values` (M, 2)."""

    def __init__(self, ctrl: torch.Tensor, values: torch.Tensor) -> None:
        m = len(ctrl)
        ctrl, values = ctrl.double(), values.double()
        k = _tps_kernel(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
        p = torch.cat([torch.ones(m, 1, dtype=torch.float64), ctrl], 1)
        a = torch.zeros(m + 3, m + 3, dtype=torch.float64)
        a[:m, :m], a[:m, m:], a[m:, :m] = k, p, p.T
        b = torch.cat([values, torch.zeros(3, 2, dtype=torch.float64)])
        self.ctrl, self.coef = ctrl, torch.linalg.solve(a, b)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        p = points.double()
        k = _tps_kernel(((p[..., None, :] - self.ctrl) ** 2).sum(-1))
        m = len(self.ctrl)
        out = k @ self.coef[:m] + self.coef[m] + p @ self.coef[m + 1 :]
        return out.to(points.dtype)


@dataclass
class RandomWarp:
    """One sampled backward map T: target pixel xy -> source pixel xy, for images of size (H, W)."""

    homography: np.ndarray
    tps: ThinPlateSpline | None
    size: tuple[int, int]

    @classmethod
    def sample(cls, size: Sequence[int], rng: np.random.Generator, config: WarpConfig) -> RandomWarp:
        h, w = size
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
        angle = math.radians(rng.uniform(-config.rotation, config.rotation))
        scale = rng.uniform(*config.scale)
        shear = rng.uniform(-config.shear, config.shear)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        affine = scale * rot @ np.array([[1, shear], [0, 1]])
        shift = rng.uniform(-config.translation, config.translation, 2) * [w, h]
        moved = (corners - centre) @ affine.T + centre + shift
        moved += rng.uniform(-config.perspective, config.perspective, (4, 2)) * [w, h]
        homography = homography_from_points(corners, moved)
        tps = None
        if config.tps > 0:
            g = config.tps_grid
            gx, gy = np.meshgrid(np.linspace(0, w - 1, g), np.linspace(0, h - 1, g))
            ctrl = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))
            shifts = torch.from_numpy(rng.normal(0, config.tps, (g * g, 2)) * [w, h])
            tps = ThinPlateSpline(ctrl, shifts)
        return cls(homography, tps, (int(h), int(w)))

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Target pixel xy (..., 2) -> source pixel xy (..., 2)."""
        out = points if self.tps is None else points + self.tps(points)
        return apply_homography(self.homography, out)

    def warp_image(self, image: torch.Tensor) -> torch.Tensor:
        """Source (C, H, W) -> target (C, H, W); pixels whose preimage is outside the source are 0."""
        h, w = self.size
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
        )
        src = self(torch.stack([xs, ys], -1))
        grid = torch.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], -1).float()
        return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    """Every image file under the folders (recursive), sorted."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(f"photo folder not found: {folder}")
        files.extend(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images (*{', *'.join(sorted(IMAGE_SUFFIXES))}) found under {list(folders)}")
    return sorted(files)


class SyntheticPairs:
    """Pairs (photo, randomly warped photo) with the warp's matches as keypoints.

    `n_points` target points are drawn uniformly; those whose preimage falls inside the source (at least
    `min_points`, else the warp is redrawn) become keypoints, padded to `n_points` rows. Photos are read by
    `load_image` (EXIF orientation applied, RGBA on white: as a matcher reads them) and resized and normalised
    with `prepare`'s steps (`resize`, then `normalise` after the warp and the colour jitter).
    """

    def __init__(
        self,
        folders: Sequence[str | Path] | str | Path,
        size: Sequence[int] = (224, 320),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        n_points: int = 20,
        min_points: int = 4,
        warp: WarpConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.preprocess = preprocess_config(size, mean, std)
        self.n_points = check_max_kps("n_points", n_points)
        self.min_points = check_int("min_points", min_points, min=0)
        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        self.files = list_images(folders)
        self.size, self.mean, self.std = self.preprocess.size, self.preprocess.mean, self.preprocess.std
        self.warp, self.seed, self.epoch = warp or WarpConfig(), seed, 0

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def base_image(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """The photo, mirrored and cropped at random, resized to `size`, (3, H, W) in [0, 1]."""
        image = load_image(self.files[index])
        if rng.random() < self.warp.flip:
            image = image.flip(-1)
        height, width = image.shape[-2:]
        area = rng.uniform(*self.warp.crop)
        cw, ch = int(width * math.sqrt(area)), int(height * math.sqrt(area))
        x0, y0 = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        return resize(image[None, :, y0 : y0 + ch, x0 : x0 + cw], self.size, self.preprocess.antialias)[0]

    def sample_pair(
        self, index: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, RandomWarp]:
        """(source image, warped image in [0, 1], source points, warped points, warp) before jitter/swap."""
        image = self.base_image(index, rng)
        h, w = self.size
        for _ in range(10):
            warp = RandomWarp.sample(self.size, rng, self.warp)
            tgt_pts = torch.from_numpy(rng.uniform([0, 0], [w - 1, h - 1], (self.n_points, 2))).float()
            src_pts = warp(tgt_pts)
            inside = (src_pts[:, 0] >= 0) & (src_pts[:, 0] <= w - 1) & (src_pts[:, 1] >= 0) & (src_pts[:, 1] <= h - 1)
            if int(inside.sum()) >= self.min_points:
                break
        return image, warp.warp_image(image), src_pts[inside], tgt_pts[inside], warp

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.seed, self.epoch, index, salt=3)
        src, tgt, src_pts, tgt_pts, _ = self.sample_pair(index, rng)
        if rng.random() < self.warp.swap:
            src, tgt, src_pts, tgt_pts = tgt, src, tgt_pts, src_pts
        out = []
        for image in (src, tgt):
            if rng.random() < self.warp.jitter:
                image = colour_jitter(image, rng, self.warp.jitter_strength)
            out.append(normalise(image[None], self.mean, self.std)[0])
        valid = np.ones(len(src_pts), bool)
        s, t, v = pad_keypoints(src_pts.numpy(), tgt_pts.numpy(), valid, self.n_points)
        return {"src": out[0], "tgt": out[1], "src_kps": s, "tgt_kps": t, "valid": v}
