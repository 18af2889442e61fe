"""SCOT layer selection: HPF's beam search over layer sets, scored by PCK on validation pairs (`mmnet scot-layers`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from mmnet.eval.pck import score_pair
from mmnet.matching.geometry import tensor_hw
from mmnet.matching.images import load_image
from mmnet.matching.scot import ScotMatcher, transfer_keypoints
from mmnet.models.scot import scot_scores


class LayerScorer:
    """PCK@`alpha` of SCOT layer sets on the first `n_pairs` pairs of `dataset` (backbone features computed once).

    All settings except the layers come from `matcher.config`; ``scorer(layers)`` returns the per-pair mean PCK
    in %, cached in ``scorer.scored``.
    """

    def __init__(
        self,
        matcher: ScotMatcher,
        dataset: Any,
        n_pairs: int = 50,
        alpha: float = 0.1,
        threshold: str | None = None,
        log: Any = print,
    ) -> None:
        self.matcher, self.alpha, self.log = matcher, alpha, log
        self.threshold = threshold or dataset.default_threshold
        self.scored: dict[tuple[int, ...], float] = {}
        self.start = time.perf_counter()
        self.cache = []
        with torch.inference_mode():
            for i in range(min(n_pairs, len(dataset))):
                src, tgt, rec = dataset.load(i)
                if not rec.n_valid:
                    continue
                s_img, t_img = load_image(src), load_image(tgt)
                points = torch.as_tensor(rec.src_kps[rec.valid], dtype=torch.float32)
                self.cache.append(
                    (
                        matcher.features(s_img),
                        matcher.features(t_img),
                        points,
                        tensor_hw(s_img),
                        tensor_hw(t_img),
                        rec,
                    )
                )
        log(f"features of {len(self.cache)} pairs in {time.perf_counter() - self.start:.0f} s")

    def __call__(self, layers: Sequence[int]) -> float:
        layers = tuple(sorted(set(layers)))
        if layers not in self.scored:
            cfg = replace(self.matcher.config, layers=layers)
            hits = []
            with torch.inference_mode():
                for s, t, points, s_size, t_size, rec in self.cache:
                    pair = scot_scores(s, t, cfg)
                    pred = transfer_keypoints(pair, points, s_size, t_size, cfg.box_size).keypoints.numpy()
                    dist, length = score_pair(pred, rec, self.threshold)
                    hits.append(float(np.mean(dist <= self.alpha * length)))
            self.scored[layers] = 100 * float(np.mean(hits))
            self.log(
                f"  {layers}: PCK@{self.alpha:g} {self.scored[layers]:.2f}  ({time.perf_counter() - self.start:.0f} s)"
            )
        return self.scored[layers]


def select_layers(
    matcher: ScotMatcher,
    dataset: Any,
    n_pairs: int = 50,
    beam: int = 4,
    max_depth: int = 8,
    candidates: Sequence[int] | None = None,
    alpha: float = 0.1,
    threshold: str | None = None,
    log: Any = print,
) -> tuple[tuple[int, ...], float, list[tuple[tuple[int, ...], float]]]:
    """Beam search for the layer set with the best PCK@`alpha` on the first `n_pairs` pairs of `dataset`.

    As HPF: every single candidate layer is scored; the `beam` best sets are extended by one candidate layer
    deeper than the set's base (first) layer; the `beam` best new sets form the next beam, up to `max_depth` layers;
    the search stops early when a depth brings no improvement. All other settings come from `matcher.config`.
    Returns (best set, its PCK in %, every scored set best first).
    """
    scorer = LayerScorer(matcher, dataset, n_pairs, alpha, threshold, log)
    candidates = sorted(set(range(len(matcher.layer_names)) if candidates is None else candidates))
    singles: list[tuple[int, ...]] = [(c,) for c in candidates]
    frontier = sorted(singles, key=scorer, reverse=True)[:beam]
    best = frontier[0]
    for depth in range(2, max_depth + 1):
        new = {tuple(sorted((*s, c))) for s in frontier for c in candidates if c > s[0] and c not in s}
        if not new:
            break
        frontier = sorted(new, key=scorer, reverse=True)[:beam]
        log(f"depth {depth}: best {frontier[0]} {scorer.scored[frontier[0]]:.2f}")
        if scorer.scored[frontier[0]] <= scorer.scored[best]:
            break
        best = frontier[0]
    return best, scorer.scored[best], sorted(scorer.scored.items(), key=lambda kv: -kv[1])
