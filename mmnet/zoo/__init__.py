"""The model zoo, layered as timm's: `_pretrained` (`PretrainedCfg`) <- `_registry` (names) <- `_factory`
(`create_model`, `create_matcher`, `from_pretrained`), with `hub` (checkpoint IO, no registry), `catalog` (every
registered architecture and weights), `convert` (official checkpoints) and `safe_pickle` beside them."""

from ._factory import create_matcher, create_model, from_pretrained
from ._pretrained import PretrainedCfg
from ._registry import get_pretrained_cfg, list_models, register_model, register_pretrained
from .hub import save_pretrained

__all__ = [
    "PretrainedCfg",
    "create_matcher",
    "create_model",
    "from_pretrained",
    "get_pretrained_cfg",
    "list_models",
    "register_model",
    "register_pretrained",
    "save_pretrained",
]
