"""mmnet: semantic correspondence with MMNet, SCOT and more matcher families on timm backbones.

Layers (docs/architecture.md): `mmnet.models` (networks) <- `mmnet.zoo` (names, weights, checkpoints) <-
`mmnet.matching` (`BaseMatcher` and one matcher per family), with `mmnet.data`, `mmnet.eval` and `mmnet.train`
beside them. Public names are imported on first use: ``import mmnet`` alone imports neither torch nor timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .errors import CheckpointError, DatasetError, InputError, MMNetError, UnknownModelError, WeightsNotFoundError
from .version import __version__

if TYPE_CHECKING:
    from .allocator import keep_freed_memory
    from .matching.base import BaseMatcher, FlowResult, MatchResult, warp_image
    from .matching.mmnet import Matcher
    from .matching.readouts import ReadoutConfig
    from .matching.scot import ScotMatcher
    from .models.backbones import BackboneSpec, list_backbones, register_backbone
    from .models.components import SEM, CorrelationHead, CrossScaleFusion, LocalSelfAttention, MatchingComplement
    from .models.mmnet import MMNet, MMNetConfig
    from .train.loss import mmnet_loss
    from .zoo import (
        PretrainedCfg,
        create_matcher,
        create_model,
        from_pretrained,
        list_models,
        register_model,
        register_pretrained,
        save_pretrained,
    )

_EXPORTS = {
    "keep_freed_memory": "mmnet.allocator",
    **dict.fromkeys(["BaseMatcher", "FlowResult", "MatchResult", "warp_image"], "mmnet.matching.base"),
    "Matcher": "mmnet.matching.mmnet",
    "ReadoutConfig": "mmnet.matching.readouts",
    "ScotMatcher": "mmnet.matching.scot",
    **dict.fromkeys(["BackboneSpec", "list_backbones", "register_backbone"], "mmnet.models.backbones"),
    **dict.fromkeys(
        ["SEM", "CorrelationHead", "CrossScaleFusion", "LocalSelfAttention", "MatchingComplement"],
        "mmnet.models.components",
    ),
    **dict.fromkeys(["MMNet", "MMNetConfig"], "mmnet.models.mmnet"),
    "mmnet_loss": "mmnet.train.loss",
    **dict.fromkeys(
        [
            "PretrainedCfg",
            "create_matcher",
            "create_model",
            "from_pretrained",
            "list_models",
            "register_model",
            "register_pretrained",
            "save_pretrained",
        ],
        "mmnet.zoo",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "SEM",
    "BackboneSpec",
    "BaseMatcher",
    "CheckpointError",
    "CorrelationHead",
    "CrossScaleFusion",
    "DatasetError",
    "FlowResult",
    "InputError",
    "LocalSelfAttention",
    "MMNet",
    "MMNetConfig",
    "MMNetError",
    "MatchResult",
    "Matcher",
    "MatchingComplement",
    "PretrainedCfg",
    "ReadoutConfig",
    "ScotMatcher",
    "UnknownModelError",
    "WeightsNotFoundError",
    "__version__",
    "create_matcher",
    "create_model",
    "from_pretrained",
    "keep_freed_memory",
    "list_backbones",
    "list_models",
    "mmnet_loss",
    "register_backbone",
    "register_model",
    "register_pretrained",
    "save_pretrained",
    "warp_image",
]
