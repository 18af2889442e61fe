"""Deprecated alias of `mmnet.train.loss`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.train.loss")
