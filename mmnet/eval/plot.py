"""PCK-versus-alpha curves (Figure 4 of the MMNet paper style), several models on one figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmnet.errors import InputError
from mmnet.eval.results import CURVE_ALPHAS, EvalResult


def _matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'mmnet[viz]'") from exc
    return Figure, FigureCanvasAgg


def _label(model: str) -> str:
    """A legend entry: a registered name as is, a folder or file by its last part (a full path overflows)."""
    return Path(model).name or model if ("/" in model or "\\" in model) else model


def plot_pck_curves(
    results: Sequence[EvalResult],
    path: str | Path,
    alphas: Sequence[float] = CURVE_ALPHAS,
    mean: str = "pair",
    title: str | None = None,
) -> Path:
    """Write a PNG with PCK (percent, `mean` 'pair' or 'keypoint') against alpha for each result."""
    if not results:
        raise InputError("no results to plot")
    figure_cls, canvas_cls = _matplotlib()
    fig = figure_cls(figsize=(5.5, 4.0), dpi=120)
    canvas_cls(fig)
    ax = fig.add_subplot()
    for r in results:
        xs, ys = r.curve(alphas, mean)
        ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.5, label=_label(r.model))
    first = results[0]
    ax.set_xlabel(f"alpha (threshold {first.threshold}, frame {first.frame_name})")
    ax.set_ylabel(f"PCK (%), per-{mean} mean")
    ax.set_xlim(0.0, max(alphas))
    ax.set_ylim(0.0, 100.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{first.dataset} {first.split}, {first.n_pairs} pairs")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
