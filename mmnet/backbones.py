"""Deprecated alias of `mmnet.models.backbones`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.models.backbones")
