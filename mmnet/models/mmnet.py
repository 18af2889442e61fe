"""MMNet: multi-scale matching network assembled from `mmnet.components` on a tapped timm backbone.

Levels are ordered coarse to fine, as in the official code: with four scale groups, level 0 is the coarsest
(stride 32, or 8 for the dilated FCN backbone) and level 3 the finest (stride 4); level 2 (stride 8) is the
one the official test reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ..checks import check_bool, check_int, check_keys, describe
from ..errors import InputError
from ..matching.images import PreprocessConfig
from .backbones import Backbone, get_backbone_spec
from .components import (
    SEM,
    CorrelationHead,
    CrossScaleFusion,
    LocalSelfAttention,
    MatchingComplement,
    nearest_indices,
)


@dataclass
class MMNetConfig:
    """Everything needed to rebuild an MMNet (stored in a checkpoint's config.json).

    levels: how many of the backbone's scale groups get a matching level, coarsest first (0: all; 3 on a
    four-group backbone drops the stride-4 level, whose SEMs cost most of the head).
    """

    backbone: str = "efficientnet_lite2"
    channels: int = 21
    sem_channels: int = 32
    sem_dilations: tuple[int, ...] = (4, 8, 12)
    attention_kernel: int = 3
    detach_coarse: bool = True
    levels: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise InputError(f"backbone must be a registered backbone name, got {describe(self.backbone)}")
        check_int("channels", self.channels, min=1)
        check_int("sem_channels", self.sem_channels, min=1)
        dilations = self.sem_dilations
        if isinstance(dilations, (str, bytes)) or not isinstance(dilations, (tuple, list)) or not dilations:
            raise InputError(f"sem_dilations must be a non-empty list of integers >= 1, got {describe(dilations)}")
        self.sem_dilations = tuple(check_int("sem_dilations", d, min=1) for d in dilations)
        check_int("attention_kernel", self.attention_kernel, min=1)
        if self.attention_kernel % 2 == 0:
            raise InputError(f"attention_kernel must be an odd integer >= 1, got {self.attention_kernel}")
        check_bool("detach_coarse", self.detach_coarse)
        check_int("levels", self.levels, min=0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sem_dilations"] = list(self.sem_dilations)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MMNetConfig:
        if not isinstance(data, dict):
            raise InputError(f"the MMNet config must be a JSON object, got {describe(data)}")
        check_keys("MMNet config key(s)", data, [f.name for f in fields(cls)])
        data = dict(data)
        if isinstance(data.get("sem_dilations"), list):
            data["sem_dilations"] = tuple(data["sem_dilations"])
        return cls(**data)


class MMNet(nn.Module):
    """Multi-scale matching network.

    ``forward(src (B,3,Hs,Ws), tgt (B,3,Ht,Wt))`` returns the complemented correlation volume of every level,
    coarse to fine, each (B, hs, ws, ht, wt) in the source-to-target direction (the other direction is its
    transpose). Inference and training use `features` + `correlation_rows`, which never build the full volume.
    """

    def __init__(self, config: MMNetConfig, pretrained_backbone: bool = False) -> None:
        super().__init__()
        self.config = config
        spec = get_backbone_spec(config.backbone)
        self.backbone = Backbone(spec, pretrained=pretrained_backbone)
        if config.levels > len(self.backbone.groups):
            raise InputError(
                f"levels must be at most {len(self.backbone.groups)} for {config.backbone} (0: all), "
                f"got {config.levels}"
            )
        self.skipped_groups = len(self.backbone.groups) - (config.levels or len(self.backbone.groups))
        groups = self.backbone.groups[self.skipped_groups :]  # finest first
        c = config.channels
        self.sems = nn.ModuleList(
            nn.ModuleList(SEM(ch, config.sem_channels, c, config.sem_dilations) for ch in g.channels) for g in groups
        )
        self.attentions = nn.ModuleList(LocalSelfAttention(c, kernel_size=config.attention_kernel) for _ in groups)
        self.fusions = nn.ModuleList(
            CrossScaleFusion(c, upsample=groups[i + 1].stride != groups[i].stride) for i in range(len(groups) - 1)
        )
        self.correlation = CorrelationHead()
        self.complement = MatchingComplement(detach=config.detach_coarse)
        self.strides = tuple(g.stride for g in reversed(groups))  # coarse to fine
        self.preprocess = PreprocessConfig(mean=spec.mean, std=spec.std)
        self.readout: dict[str, Any] = {}

    @property
    def architecture(self) -> str:
        """The registered name, ``mmnet_<backbone>``."""
        return f"mmnet_{self.config.backbone}"

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def features(self, images: torch.Tensor, up_to: int = -1) -> list[torch.Tensor]:
        """Normalised images (B, 3, H, W) -> fused features of levels 0..`up_to`, coarse to fine, (B, C, h_l, w_l).

        Levels finer than `up_to` (default: all) are not computed: their SEMs and fusions are skipped. Each SEM
        runs as soon as its backbone block has produced its output (`Backbone.stream`), so the taps are never
        all held at once; the sums are taken in the same order as over a list of taps, so the result is the same.
        """
        first = self.num_levels - 1 - up_to % self.num_levels  # finest group index needed
        summed: dict[int, torch.Tensor] = {}

        def sink(group: int, block: int, tap: torch.Tensor) -> None:
            g = group - self.skipped_groups
            if g >= first:
                out = self.sems[g][block](tap)  # type: ignore[index]  # a ModuleList of ModuleLists
                summed[g] = out if g not in summed else summed[g] + out

        self.backbone.stream(images, sink)
        attended = {g: self.attentions[g](summed[g]) for g in range(first, self.num_levels)}
        fused = [attended[self.num_levels - 1]]
        for g in reversed(range(first, self.num_levels - 1)):
            fused.append(self.fusions[g](attended[g], fused[-1]))
        return fused

    def fold_batchnorm(self) -> MMNet:
        """Fold the backbone's BatchNorm layers into their convolutions for inference (in place; outputs equal up
        to float rounding, about 5 % less CPU time). The model is then inference-only: `train()` and saving it
        raise `InputError`; build a fresh model from the checkpoint to train."""
        self.eval()
        self.backbone.fold_batchnorm()
        self.folded = True
        return self

    def train(self, mode: bool = True) -> MMNet:
        if mode and getattr(self, "folded", False):
            raise InputError(
                "this MMNet has its BatchNorm folded into its convolutions for inference "
                "(Matcher.create / fold_batchnorm): it cannot be trained; load the checkpoint again"
            )
        return super().train(mode)

    def pair_features(
        self, src: torch.Tensor, tgt: torch.Tensor, up_to: int = -1, batched: bool = True
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features of both images (levels 0..`up_to`); one backbone batch when their sizes agree and `batched`
        (``batched=False`` runs them one after the other: the same features, half the activation memory)."""
        if batched and src.shape == tgt.shape:
            both = self.features(torch.cat([src, tgt]), up_to)
            return [f[: len(src)] for f in both], [f[len(src) :] for f in both]
        return self.features(src, up_to), self.features(tgt, up_to)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> list[torch.Tensor]:
        src_feats, tgt_feats = self.pair_features(src, tgt)
        volumes = [self.correlation(s, t) for s, t in zip(src_feats, tgt_feats, strict=True)]
        return self.complement(volumes)

    def correlation_rows(
        self, src_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor], cells: torch.Tensor, level: int
    ) -> list[torch.Tensor]:
        """Complemented volume rows of some source cells of `level`, at that level and every coarser one.

        cells (B, M) flat indices into level `level`'s source grid -> list over levels 0..level of (B, M, ht, wt).
        The last entry equals ``forward(...)[level].flatten(1, 2)[:, cells]``.
        """
        h, w = src_feats[level].shape[-2:]
        ys, xs = torch.div(cells, w, rounding_mode="floor"), cells % w
        raw = []
        for feats_s, feats_t in zip(src_feats[: level + 1], tgt_feats[: level + 1], strict=True):
            hl, wl = feats_s.shape[-2:]
            level_cells = nearest_indices(h, hl, cells.device)[ys] * wl + nearest_indices(w, wl, cells.device)[xs]
            raw.append(self.correlation.rows(feats_s, level_cells, feats_t))
        return self.complement.rows(raw)
