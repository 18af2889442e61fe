"""Deprecated alias of `mmnet.zoo._factory`, `mmnet.zoo._registry`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.zoo._factory", "mmnet.zoo._registry")
