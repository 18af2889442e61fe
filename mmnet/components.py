"""Deprecated alias of `mmnet.models.components`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.models.components")
