"""Periodic validation: PCK of the model being trained on a (fixed subset of a) benchmark dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def pck_validator(
    dataset: Any,
    alpha: float = 0.1,
    limit: int | None = 100,
    threshold: str | None = None,
    alphas: Sequence[float] = (0.05, 0.1, 0.15),
    **matcher_kwargs: Any,
):
    """A `Trainer` validator: ``model -> {"pck@alpha": ..., "pck@a": ...}`` on the first `limit` pairs of
    `dataset` (an `mmnet.data` dataset) with `mmnet.eval.evaluate` and the model's matcher (`Matcher` for
    MMNet, `CatsMatcher`, `LpmflowMatcher`; `matcher_kwargs` go to it) around the model (per-pair mean, the
    dataset's default threshold unless `threshold` is given). The first entry is the one
    the trainer keeps the best checkpoint by.

    With a list of datasets the first entry is ``"mean pck@alpha"``, the mean over the datasets, followed by
    each dataset's values prefixed with its name."""
    if isinstance(dataset, (list, tuple)):
        if len(dataset) != 1:
            parts = [pck_validator(d, alpha, limit, threshold, alphas, **matcher_kwargs) for d in dataset]
            names = [getattr(d, "name", str(i)) for i, d in enumerate(dataset)]
            return _averaged(parts, names, alpha)
        dataset = dataset[0]
    from mmnet.eval.evaluate import evaluate
    from mmnet.train.families import family_of

    alphas = tuple(dict.fromkeys((alpha, *alphas)))

    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        matcher = family_of(model).make_matcher(model, device=device, **matcher_kwargs)
        result = evaluate(
            matcher, dataset, alphas=alphas, threshold=threshold, progress=False, limit=limit, name="validation"
        )
        values = result.pck(alphas)
        return {f"pck@{a:g}": round(float(v), 3) for a, v in zip(alphas, values, strict=True)}

    return validate


def _averaged(parts: Sequence[Any], names: Sequence[str], alpha: float):
    def validate(model: nn.Module) -> dict[str, float]:
        metrics = {name: part(model) for name, part in zip(names, parts, strict=True)}
        mean = sum(m[f"pck@{alpha:g}"] for m in metrics.values()) / len(metrics)
        each = {f"{name} {key}": value for name, m in metrics.items() for key, value in m.items()}
        return {f"mean pck@{alpha:g}": round(mean, 3), **each}

    return validate
