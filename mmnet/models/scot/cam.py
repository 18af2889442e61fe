"""SCOT's saliency: class-activation maps of the backbone's pretrained ImageNet classifier."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from ...errors import WeightsNotFoundError
from ..backbones import BackboneSpec, load_pretrained_backbone


class CamHead(nn.Module):
    """Class-activation maps from the pretrained ImageNet head applied to the last tapped block."""

    def __init__(self, spec: BackboneSpec, **hub: Any) -> None:
        super().__init__()
        net: Any = timm.create_model(spec.timm_name, pretrained=False, num_classes=1000, **spec.timm_kwargs)
        if spec.packaged_weights is None and spec.timm_pretrained_tag is None:
            raise WeightsNotFoundError(f"{spec.name} has no ImageNet classifier: use saliency='norm' or 'uniform'")
        try:
            load_pretrained_backbone(net, spec, **hub)
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(
                f"no ImageNet classifier for the CAM of {spec.name}: {exc}; use saliency='norm' or 'uniform'"
            ) from exc
        parts = [m for m in (getattr(net, "conv_head", None), getattr(net, "bn2", None)) if m is not None]
        self.head = nn.Sequential(*parts) if parts else nn.Identity()
        self.classifier: nn.Linear = net.get_classifier()

    def forward(self, last: torch.Tensor) -> torch.Tensor:
        """(1, C, h, w) last block output -> (h, w) CAM of the top-2 classes, max-normalised to [0, 1]."""
        feat = self.head(last)
        top = self.classifier(feat.mean((2, 3))).topk(2, dim=1).indices[0]
        cam = torch.einsum("kc,chw->hw", self.classifier.weight[top], feat[0]).clamp(min=0)
        return cam / cam.max().clamp(min=1e-12)
