"""Deprecated alias of `mmnet.matching.mmnet`, `.base` and `.readouts`; it goes in the next release."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.matching.mmnet", "mmnet.matching.base", "mmnet.matching.readouts")
