"""Deprecated alias of `mmnet.models.mmnet`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.models.mmnet")
