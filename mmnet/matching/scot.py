"""`ScotMatcher`: SCOT (`mmnet.models.scot`) behind the `BaseMatcher` API, on any registered backbone."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checks import check_bool, check_int, check_keys, describe
from ..errors import InputError
from ..models.backbones import Backbone, get_backbone_spec
from ..models.scot import DEFAULT_LAYERS, CamHead, ScotConfig, ScotScores, cell_centres, scot_scores, transfer_points
from .base import BaseMatcher, FlowResult, MatchResult, cells_to_flow
from .geometry import inside_image, pixel_grid, rescale_points, tensor_hw
from .images import PreprocessConfig, prepare

Features = tuple[list[torch.Tensor], torch.Tensor | None, tuple[int, int]]


class ScotMatcher(BaseMatcher):
    """SCOT keypoint transfer and dense flow with any registered backbone; the `BaseMatcher` API.

    Args:
        backbone: a registered backbone name (``"efficientnet_lite2"``, ``"resnet101"``, ...) or a `Backbone`.
        layers: layer ids (default: `DEFAULT_LAYERS`); see `mmnet.models.scot` for the id scheme.
        pretrained: load ImageNet weights into the backbone (False: random weights, for tests only).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        **settings: `ScotConfig` fields (long_side, epsilon, iterations, tol, exponent, saliency, bins, ...).
            saliency defaults to ``"cam"`` with pretrained weights, else ``"uniform"``.
    """

    def __init__(
        self,
        backbone: str | Backbone = "efficientnet_lite2",
        layers: Sequence[int] | None = None,
        *,
        pretrained: bool = True,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        **settings: Any,
    ) -> None:
        check_keys("SCOT setting(s)", settings, [f.name for f in fields(ScotConfig) if f.name != "layers"])
        check_bool("pretrained", pretrained)
        check_bool("local_files_only", local_files_only)
        if not isinstance(backbone, (str, Backbone)):
            raise InputError(f"backbone must be a registered backbone name or a Backbone, got {describe(backbone)}")
        if layers is not None and (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence)):
            raise InputError(f"layers must be a list of layer ids, got {describe(layers)}")
        ScotConfig(layers=(0,), **{"saliency": "uniform", **settings})  # every setting checked before any loading
        super().__init__(device)
        hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only}
        if isinstance(backbone, str):
            backbone = Backbone(get_backbone_spec(backbone), pretrained=pretrained, **hub)
        self.backbone = backbone.eval().to(self.device)
        self.spec = backbone.spec
        self.layer_names = [b for g in backbone.groups for b in g.blocks]
        layers = tuple(
            DEFAULT_LAYERS.get(self.spec.name, (len(self.layer_names) - 1,))
            if layers is None
            else (check_int("layers", i) for i in layers)
        )
        if not layers or any(not 0 <= i < len(self.layer_names) for i in layers):
            raise InputError(
                f"layer ids must be in [0, {len(self.layer_names) - 1}] for {self.spec.name}; got {layers}"
            )
        settings.setdefault("saliency", "cam" if pretrained else "uniform")
        self.config = ScotConfig(layers=tuple(sorted(set(layers))), **settings)
        self.cam = CamHead(self.spec, **hub).eval().to(self.device) if self.config.saliency == "cam" else None
        self.name = f"scot_{self.spec.name}"

    @classmethod
    def create(
        cls,
        name: str | Path,
        *,
        pretrained: bool = True,
        preset: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> ScotMatcher:
        """The registry's matcher factory: ``"scot_<backbone>"`` -> a ScotMatcher (ImageNet weights when
        `pretrained`); kwargs go to `ScotMatcher`.

        SCOT has no checkpoint and one readout: `preset` must be None (``"default"`` is accepted for one more
        release, with a DeprecationWarning). `revision`, `cache_dir` and
        `local_files_only` apply to the backbone's ImageNet weights from the Hugging Face hub exactly as in
        `Matcher.from_pretrained` (an offline miss fails at once); packaged weights need no network.
        """
        if preset == "default":
            warnings.warn(
                "preset='default' is deprecated and will be removed in the next release: SCOT has one "
                "readout; leave the preset out",
                DeprecationWarning,
                stacklevel=2,
            )
        elif preset is not None:
            raise InputError(f"SCOT has no preset {preset!r}: it has one readout; leave the preset out")
        return cls(
            str(name).removeprefix("scot_"),
            pretrained=pretrained,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            **kwargs,
        )

    def _resized(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        s = self.config.long_side / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))

    def features(self, image: torch.Tensor) -> Features:
        """(3, H, W) in [0, 1] -> flat block outputs, saliency map (or None) and the resized (H', W')."""
        size = self._resized((int(image.shape[1]), int(image.shape[2])))
        cfg = PreprocessConfig(size=size, mean=self.spec.mean, std=self.spec.std)
        feats = [f for group in self.backbone(prepare(image[None].to(self.device), cfg)) for f in group]
        sal = None
        if self.cam is not None:  # saliency "cam"
            sal = self.cam(feats[-1])
        elif self.config.saliency == "norm":
            sal = feats[-1][0].norm(dim=0)
            sal = sal / sal.max().clamp(min=1e-12)
        return feats, sal, size

    def _scores(self, source: torch.Tensor, target: torch.Tensor) -> ScotScores:
        return scot_scores(self.features(source), self.features(target), self.config)

    def _match(
        self, sources: list[torch.Tensor], targets: list[torch.Tensor], points: list[torch.Tensor]
    ) -> list[MatchResult]:
        """One pair at a time: SCOT's images keep their own aspect ratio."""
        return [
            transfer_keypoints(self._scores(s, t), p, tensor_hw(s), tensor_hw(t), self.config.box_size)
            for s, t, p in zip(sources, targets, points, strict=True)
        ]

    def _flow(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> list[FlowResult]:
        """The keypoint-transfer rule at every source hyperpixel centre (a box filter of the displacement field),
        interpolated bilinearly to each pixel; one pair at a time."""
        return [
            dense_flow(self._scores(s, t), tensor_hw(s), tensor_hw(t), self.config.box_size)
            for s, t in zip(sources, targets, strict=True)
        ]


def _best(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top, best = score.max(dim=1)
    return best, top / score.sum(dim=1).clamp(min=1e-30)


def _clamp(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamp (..., 2) pixel xy into an (H, W) image, [-0.5, W - 0.5] x [-0.5, H - 0.5]."""
    return torch.stack([points[..., 0].clamp(-0.5, size[1] - 0.5), points[..., 1].clamp(-0.5, size[0] - 0.5)], -1)


def transfer_keypoints(
    pair: ScotScores, points: torch.Tensor, src_size: tuple[int, int], tgt_size: tuple[int, int], box_size: float
) -> MatchResult:
    """Source keypoints (K, 2) in original source pixels -> MatchResult in original target pixels (points outside
    the source image: NaN, score 0)."""
    if len(points) == 0:
        return MatchResult(torch.zeros(0, 2), torch.zeros(0))
    inside = inside_image(points, src_size)
    best, conf = _best(pair.score)
    resized = rescale_points(points.to(pair.score.device), src_size, pair.src_size)
    out, scores = transfer_points(
        resized, best, conf, pair.src_grid, pair.tgt_grid, pair.src_size, pair.tgt_size, box_size
    )
    out = _clamp(rescale_points(out, pair.tgt_size, tgt_size), tgt_size).cpu()
    scores = scores.clamp(0, 1).cpu()
    return MatchResult(out.masked_fill(~inside[:, None], float("nan")), scores.masked_fill(~inside, 0.0))


def dense_flow(pair: ScotScores, src_size: tuple[int, int], tgt_size: tuple[int, int], box_size: float) -> FlowResult:
    """FlowResult (2, Hs, Ws) at the original source size (see `ScotMatcher._flow`)."""
    (h, w), device = pair.src_grid, pair.score.device
    best, conf = _best(pair.score)
    xs, ys = cell_centres(pair.src_grid, pair.src_size, device)
    xt, yt = cell_centres(pair.tgt_grid, pair.tgt_size, device)
    src_c = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    tgt_c = torch.stack(torch.meshgrid(xt, yt, indexing="xy"), -1).reshape(-1, 2)
    cells = torch.cat([tgt_c[best] - src_c, conf[:, None]], 1).T.reshape(1, 3, h, w)
    ry = int(box_size / 2 // (pair.src_size[0] / h))
    rx = int(box_size / 2 // (pair.src_size[1] / w))
    pooled = F.avg_pool2d(cells, (2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx), count_include_pad=False)
    # per-cell target position in original target pixels, and score
    target = src_c + pooled[0, :2].reshape(2, -1).T
    target = _clamp(rescale_points(target, pair.tgt_size, tgt_size), tgt_size).T.reshape(2, h, w)
    cell_map = torch.cat([target, pooled[0, 2:]], 0)
    return cells_to_flow(cell_map, rescale_points(pixel_grid(src_size, device), src_size, (h, w)))


def layer_names(backbone: str) -> list[str]:
    """The tapped block of each layer id for a registered backbone (builds it with random weights)."""
    net = Backbone(get_backbone_spec(backbone), pretrained=False)
    return [b for g in net.groups for b in g.blocks]
