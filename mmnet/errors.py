"""Exception types raised by mmnet. Every user-facing failure is one of these."""

from __future__ import annotations


class MMNetError(Exception):
    """Base class of every error mmnet raises on purpose."""


class InputError(MMNetError, ValueError):
    """An image, keypoint list or argument that mmnet cannot use."""


class CheckpointError(MMNetError):
    """A checkpoint that is corrupted, truncated, mismatched or fails its checksum."""


class WeightsNotFoundError(MMNetError, FileNotFoundError):
    """Weights that are neither on disk, in the hub cache, nor reachable."""


class DatasetError(MMNetError, FileNotFoundError):
    """A benchmark folder whose layout is incomplete or wrong."""


class UnknownModelError(MMNetError, KeyError):
    """A model, backbone or pretrained tag name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""
