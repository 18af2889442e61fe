"""The registered MMNet weights (``arch.tag``): the one place where pretrained tags are declared."""

from __future__ import annotations

from .registry import PretrainedCfg, register_pretrained

__all__ = ["PretrainedCfg", "register_pretrained"]
