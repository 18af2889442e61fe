"""Deprecated alias of `mmnet.matching.geometry`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.matching.geometry")
