"""Evaluation results: per-pair distances kept, every PCK aggregate derived from them, JSON/CSV writers."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmnet.eval.pck import pck_correct
from mmnet.version import __version__

CURVE_ALPHAS = tuple(np.round(np.linspace(0.0, 0.2, 41), 3))
MAX_TABLE_CATEGORIES = 30


@dataclass(frozen=True, eq=False)
class PairScore:
    """One evaluated pair: `distances` (N_valid,) and threshold length `length` (L) in evaluation-frame pixels."""

    index: int
    src: str
    tgt: str
    category: str
    distances: np.ndarray
    length: float
    flags: dict[str, int] = field(default_factory=dict)

    @property
    def n_kps(self) -> int:
        return len(self.distances)


def _fmt_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def _num(value: float) -> float | None:
    """A JSON-safe number: None for NaN (a group without a counted pair)."""
    return None if np.isnan(value) else round(float(value), 4)


class EvalResult:
    """PCK of one model on one dataset. All PCK values are percentages.

    Per-pair mean: each pair's fraction of correct keypoints, averaged over pairs (pairs without a valid
    keypoint are excluded and listed in `excluded`). Per-keypoint mean: all correct keypoints over all
    keypoints, so pairs with more keypoints weigh more.
    """

    def __init__(
        self,
        pairs: Sequence[PairScore],
        *,
        alphas: Sequence[float],
        threshold: str,
        frame: tuple[int, int] | None,
        dataset: str,
        split: str,
        model: str,
        seconds: float = 0.0,
    ) -> None:
        self.pairs = list(pairs)
        self.alphas = tuple(float(a) for a in alphas)
        self.threshold, self.frame = threshold, frame
        self.dataset, self.split, self.model, self.seconds = dataset, split, model, seconds
        self._counts = np.array([p.n_kps for p in self.pairs], dtype=np.int64)
        self._ends = np.cumsum(self._counts)
        self._dist = np.concatenate([p.distances for p in self.pairs]) if self.pairs else np.zeros(0)
        self._length = np.repeat([p.length for p in self.pairs], self._counts) if self.pairs else np.zeros(0)

    @property
    def excluded(self) -> list[int]:
        """Dataset indices of the pairs left out of every mean (no valid keypoint)."""
        return [p.index for p in self.pairs if p.n_kps == 0]

    @property
    def n_pairs(self) -> int:
        """Pairs that count (at least one valid keypoint)."""
        return int((self._counts > 0).sum())

    @property
    def n_kps(self) -> int:
        return int(self._counts.sum())

    def correct_counts(self, alphas: Sequence[float]) -> np.ndarray:
        """(A, P) number of correct keypoints per pair."""
        cum = np.cumsum(pck_correct(self._dist, self._length, alphas), axis=1)
        cum = np.concatenate([np.zeros((len(alphas), 1)), cum], axis=1)
        return cum[:, self._ends] - cum[:, self._ends - self._counts]

    def pck(
        self, alphas: Sequence[float] | np.ndarray | None = None, mean: str = "pair", select: np.ndarray | None = None
    ) -> np.ndarray:
        """(A,) PCK in percent at `alphas` (default: the evaluated ones) with `mean` 'pair' or 'keypoint',
        over the pairs where `select` (P,) is True (default all); NaN when no pair counts."""
        alphas = self.alphas if alphas is None else tuple(alphas)
        keep = self._counts > 0 if select is None else (self._counts > 0) & np.asarray(select, bool)
        if not keep.any():
            return np.full(len(alphas), np.nan)
        correct = self.correct_counts(alphas)[:, keep]
        if mean == "pair":
            return 100.0 * (correct / self._counts[keep]).mean(axis=1)
        if mean in ("keypoint", "kp", "point"):
            return 100.0 * correct.sum(axis=1) / self._counts[keep].sum()
        raise ValueError(f"mean must be 'pair' or 'keypoint', not {mean!r}")

    def summary(self, select: np.ndarray | None = None) -> dict[str, Any]:
        """{n_pairs, n_keypoints, pck_per_pair, pck_per_keypoint} over the pairs where `select` (P,) is True."""
        select = np.ones(len(self.pairs), bool) if select is None else np.asarray(select, bool)
        keep = select & (self._counts > 0)
        return {
            "n_pairs": int(keep.sum()),
            "n_keypoints": int(self._counts[keep].sum()),
            "pck_per_pair": self._by_alpha(self.pck(select=select)),
            "pck_per_keypoint": self._by_alpha(self.pck(mean="keypoint", select=select)),
        }

    def _by_alpha(self, values: np.ndarray) -> dict[str, float | None]:
        return {_fmt_alpha(a): _num(v) for a, v in zip(self.alphas, values, strict=True)}

    def by_category(self) -> dict[str, dict[str, Any]]:
        """category -> {n_pairs, n_keypoints, pck_per_pair, pck_per_keypoint}."""
        cats = np.array([p.category for p in self.pairs])
        return {c: self.summary(cats == c) for c in sorted(set(cats.tolist()))}

    def by_flag(self) -> dict[str, dict[str, dict[str, Any]]]:
        """flag -> value -> group summary (SPair-71k difficulty levels); empty when the pairs carry no flags."""
        names = sorted({k for p in self.pairs for k in p.flags})
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name in names:
            values = np.array([p.flags.get(name, -1) for p in self.pairs])
            out[name] = {str(v): self.summary(values == v) for v in sorted(set(values.tolist()))}
        return out

    def curve(self, alphas: Sequence[float] = CURVE_ALPHAS, mean: str = "pair") -> tuple[np.ndarray, np.ndarray]:
        """(alphas, PCK in percent) for a PCK-versus-alpha plot."""
        return np.asarray(alphas, dtype=np.float64), self.pck(alphas, mean)

    @property
    def frame_name(self) -> str:
        return "original" if self.frame is None else f"{self.frame[0]}x{self.frame[1]}"

    def to_dict(self) -> dict[str, Any]:
        alphas, pair_curve = self.curve()
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "threshold": self.threshold,
            "frame": self.frame_name,
            "alphas": list(self.alphas),
            "unit": "percent",
            "n_pairs": self.n_pairs,
            "n_pairs_evaluated": len(self.pairs),
            "n_keypoints": self.n_kps,
            "excluded_pairs": self.excluded,
            "seconds": round(self.seconds, 3),
            "pck_per_pair": self._by_alpha(self.pck()),
            "pck_per_keypoint": self._by_alpha(self.pck(mean="keypoint")),
            "by_category": self.by_category(),
            "by_flag": self.by_flag(),
            "curve": {
                "alpha": alphas.tolist(),
                "pck_per_pair": [_num(v) for v in pair_curve],
                "pck_per_keypoint": [_num(v) for v in self.pck(alphas, "keypoint")],
            },
        }

    def table(self) -> str:
        """A plain-text report: overall per-pair and per-keypoint PCK, then per category and per flag."""
        head = "".join(f"{'PCK@' + _fmt_alpha(a):>10}" for a in self.alphas)

        def row(label: str, values: Any) -> str:
            return f"{label:<34}" + "".join(f"{'-':>10}" if v is None or np.isnan(v) else f"{v:>10.1f}" for v in values)

        lines = [
            f"{self.dataset} {self.split} | model {self.model} | {self.n_pairs} pairs, {self.n_kps} keypoints"
            f" | threshold {self.threshold}, frame {self.frame_name}",
            f"{'':<34}{head}",
            row("per-pair mean", self.pck()),
            row("per-keypoint mean", self.pck(mean="kp")),
        ]
        cats = self.by_category()
        if 1 < len(cats) <= MAX_TABLE_CATEGORIES:
            lines.append("per category (per-pair mean):")
            lines += [row(f"  {c[:24]} ({g['n_pairs']})", g["pck_per_pair"].values()) for c, g in cats.items()]
        elif len(cats) > MAX_TABLE_CATEGORIES:
            lines.append(f"{len(cats)} categories: see by_category in the JSON report")
        for flag, groups in self.by_flag().items():
            lines.append(f"by {flag} (per-pair mean):")
            lines += [row(f"  {flag}={v} ({g['n_pairs']})", g["pck_per_pair"].values()) for v, g in groups.items()]
        if self.pairs and self.seconds:
            lines.append(f"time: {self.seconds:.1f} s ({1000 * self.seconds / len(self.pairs):.1f} ms per pair)")
        if self.excluded:
            shown = ", ".join(map(str, self.excluded[:10])) + (" ..." if len(self.excluded) > 10 else "")
            lines.append(
                f"excluded from the means: {len(self.excluded)} pair(s) without a valid keypoint (index {shown})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"EvalResult(model={self.model!r}, dataset={self.dataset!r}, pairs={self.n_pairs}, "
            f"pck_per_pair={self._by_alpha(self.pck())})"
        )

    def save_json(self, path: str | Path) -> Path:
        return write_json([self], path)

    def save_csv(self, path: str | Path) -> Path:
        return write_csv([self], path)

    def save_per_pair_csv(self, path: str | Path) -> Path:
        return write_per_pair_csv([self], path)


def write_json(results: Sequence[EvalResult], path: str | Path) -> Path:
    """All results (one per model) in one JSON file."""
    path = Path(path)
    payload = {"mmnet_version": __version__, "results": [r.to_dict() for r in results]}
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def write_csv(results: Sequence[EvalResult], path: str | Path) -> Path:
    """Long format: one row per model, group (all / category / flag value) and alpha."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            [
                "model",
                "dataset",
                "split",
                "threshold",
                "frame",
                "group",
                "n_pairs",
                "n_keypoints",
                "alpha",
                "pck_per_pair",
                "pck_per_keypoint",
            ]
        )
        for r in results:
            groups = {"all": r.summary()}
            groups |= {f"category={c}": g for c, g in r.by_category().items()}
            groups |= {f"{f}={v}": g for f, vs in r.by_flag().items() for v, g in vs.items()}
            for name, g in groups.items():
                for a in map(_fmt_alpha, r.alphas):
                    out.writerow(
                        [
                            r.model,
                            r.dataset,
                            r.split,
                            r.threshold,
                            r.frame_name,
                            name,
                            g["n_pairs"],
                            g["n_keypoints"],
                            a,
                            g["pck_per_pair"][a],
                            g["pck_per_keypoint"][a],
                        ]
                    )
    return path


def write_per_pair_csv(results: Sequence[EvalResult], path: str | Path) -> Path:
    """One row per model and pair: keypoint count, L, mean error and correct counts / PCK per alpha."""
    path = Path(path)
    flags = sorted({k for r in results for p in r.pairs for k in p.flags})
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        alpha_cols = (
            [f"{kind}@{_fmt_alpha(a)}" for a in results[0].alphas for kind in ("correct", "pck")] if results else []
        )
        out.writerow(
            [
                "model",
                "index",
                "source",
                "target",
                "category",
                *flags,
                "n_keypoints",
                "threshold_px",
                "mean_error_px",
                *alpha_cols,
            ]
        )
        for r in results:
            correct = r.correct_counts(r.alphas)
            for j, p in enumerate(r.pairs):
                n = p.n_kps
                per_alpha = [v for c in correct[:, j] for v in (int(c), round(100.0 * c / n, 4) if n else "")]
                out.writerow(
                    [
                        r.model,
                        p.index,
                        p.src,
                        p.tgt,
                        p.category,
                        *(p.flags.get(f, "") for f in flags),
                        n,
                        round(p.length, 4) if n else "",
                        round(float(p.distances.mean()), 4) if n else "",
                        *per_alpha,
                    ]
                )
    return path
