"""Pictures of correspondences (matplotlib, the optional ``mmnet[viz]`` extra).

Each function returns a matplotlib Figure; `save` writes one to disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .matching.images import ImageLike, load_image


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("mmnet.viz needs matplotlib: pip install 'mmnet[viz]'") from exc
    return plt


def _hwc(image: ImageLike) -> np.ndarray:
    return load_image(image).permute(1, 2, 0).clamp(0, 1).numpy()


def _points(points: Any) -> np.ndarray:
    array = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    return array.reshape(-1, 2).astype(np.float64)


def plot_matches(
    source: ImageLike,
    target: ImageLike,
    source_points: Any,
    target_points: Any,
    scores: Any | None = None,
    correct: Any | None = None,
    title: str | None = None,
    numbered: bool = True,
) -> Any:
    """Source and target side by side with a line per match.

    Lines are coloured by `correct` (green/red, with a legend) when given, else by `scores` (viridis, with a
    colour bar from 0 to 1), else by index. With `numbered`, each source point and its match carry the number of
    the match (1, 2, ...: the order of `source_points`, as `mmnet match` prints them).
    """
    plt = _plt()
    src, tgt = _hwc(source), _hwc(target)
    p, q = _points(source_points), _points(target_points)
    height = max(src.shape[0], tgt.shape[0])
    canvas = np.ones((height, src.shape[1] + tgt.shape[1], 3))
    canvas[: src.shape[0], : src.shape[1]] = src
    canvas[: tgt.shape[0], src.shape[1] :] = tgt
    bar = scores is not None and correct is None
    fig, ax = plt.subplots(figsize=(canvas.shape[1] / 100 + (0.9 if bar else 0), canvas.shape[0] / 100 + 0.3), dpi=150)
    ax.imshow(canvas)
    if correct is not None:
        colors = [(0.1, 0.8, 0.1) if c else (0.9, 0.1, 0.1) for c in np.asarray(correct).ravel()]
    elif scores is not None:
        colors = plt.cm.viridis(np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0, 1))
    else:
        colors = plt.cm.hsv(np.linspace(0, 1, len(p), endpoint=False))
    label = {
        "fontsize": 5,
        "color": "white",
        "fontweight": "bold",
        "textcoords": "offset points",
        "xytext": (3, 3),
        "bbox": {"boxstyle": "round,pad=0.1", "fc": "black", "alpha": 0.5, "lw": 0},
    }
    for i, ((x0, y0), (x1, y1), color) in enumerate(zip(p, q, colors, strict=True), 1):
        if numbered:
            ax.annotate(str(i), (x0, y0), **label)
        if np.isfinite([x1, y1]).all():
            ax.plot([x0, x1 + src.shape[1]], [y0, y1], color=color, linewidth=1.0)
            ax.scatter([x0, x1 + src.shape[1]], [y0, y1], color=[color], s=10, edgecolors="white", linewidths=0.5)
            if numbered:
                ax.annotate(str(i), (x1 + src.shape[1], y1), **label)
    if bar:
        mappable = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1))
        colorbar = fig.colorbar(mappable, ax=ax, fraction=0.04, pad=0.01)
        colorbar.set_label("match score (line colour)", fontsize=6)
        colorbar.ax.tick_params(labelsize=5)
    elif correct is not None:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=(0.1, 0.8, 0.1), label="correct"),
            Line2D([], [], color=(0.9, 0.1, 0.1), label="wrong"),
        ]
        ax.legend(handles=handles, fontsize=5, loc="lower right", framealpha=0.7)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.1)
    return fig


def plot_keypoints(image: ImageLike, points: Any, labels: list[str] | None = None) -> Any:
    """One image with its keypoints (and optional labels) drawn on it."""
    plt = _plt()
    array, xy = _hwc(image), _points(points)
    fig, ax = plt.subplots(figsize=(array.shape[1] / 100, array.shape[0] / 100), dpi=150)
    ax.imshow(array)
    ax.scatter(
        xy[:, 0],
        xy[:, 1],
        c=plt.cm.hsv(np.linspace(0, 1, len(xy), endpoint=False)),
        s=14,
        edgecolors="white",
        linewidths=0.6,
    )
    for (x, y), label in zip(xy, labels or [], strict=False):
        ax.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color="white")
    ax.set_axis_off()
    fig.tight_layout(pad=0.1)
    return fig


def plot_warp(source: ImageLike, target: ImageLike, warped: torch.Tensor) -> Any:
    """Source, target, and the source warped onto the target (from `Matcher.warp`), in one row."""
    plt = _plt()
    panels = [
        (_hwc(source), "source"),
        (_hwc(target), "target"),
        (warped.permute(1, 2, 0).clamp(0, 1).numpy(), "source warped onto target"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2), dpi=150)
    for ax, (array, name) in zip(axes, panels, strict=True):
        ax.imshow(array)
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    return fig


def save(fig: Any, path: str | Path) -> Path:
    """Write `fig` (PNG or any format matplotlib knows) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    _plt().close(fig)
    return path
