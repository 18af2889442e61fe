"""Deprecated alias of `mmnet.zoo.convert.mmnet`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.zoo.convert.mmnet")
