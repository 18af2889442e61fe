"""mmnet: semantic correspondence with Multi-scale Matching Networks on timm backbones.

Layers: `mmnet.backbones` -> `mmnet.components` -> `mmnet.model` -> `mmnet.matcher`, with `mmnet.data`,
`mmnet.eval` and `mmnet.loss` beside them.
"""

from . import pretrained  # noqa: F401  (registers the released weights)
from .backbones import BackboneSpec, list_backbones, register_backbone
from .components import SEM, CorrelationHead, CrossScaleFusion, LocalSelfAttention, MatchingComplement
from .errors import CheckpointError, DatasetError, InputError, MMNetError, UnknownModelError, WeightsNotFoundError
from .hub import from_pretrained, save_pretrained
from .loss import mmnet_loss
from .matcher import FlowResult, Matcher, MatchResult, ReadoutConfig, warp_image
from .model import MMNet, MMNetConfig
from .registry import PretrainedCfg, create_model, list_models, register_pretrained
from .scot import ScotMatcher
from .version import __version__

__all__ = [
    "SEM",
    "BackboneSpec",
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
    "create_model",
    "from_pretrained",
    "list_backbones",
    "list_models",
    "mmnet_loss",
    "register_backbone",
    "register_pretrained",
    "save_pretrained",
    "warp_image",
]
