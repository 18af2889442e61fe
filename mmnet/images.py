"""Deprecated alias of `mmnet.matching.images`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.matching.images")
