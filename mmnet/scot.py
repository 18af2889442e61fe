"""Deprecated alias of `mmnet.matching.scot`, `mmnet.models.scot` and `mmnet.eval.scot_layers` (goes next release)."""

from ._lazy import moved

__getattr__ = moved(__name__, "mmnet.matching.scot", "mmnet.models.scot", "mmnet.eval.scot_layers")

if __name__ == "__main__":  # the old `python -m mmnet.scot select-layers ...`
    import sys
    import warnings

    from .cli import main

    warnings.warn("`python -m mmnet.scot select-layers` is now `mmnet scot-layers`", DeprecationWarning, stacklevel=1)
    sys.exit(main(["scot-layers", *sys.argv[2:]]))
