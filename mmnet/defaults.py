"""The weights `mmnet match`, `mmnet flow`, `mmnet eval` and the ``matcher`` torch.hub entry use when none are named.

A module of its own (no torch, no timm) so the command line can read it before any heavy import.
"""

DEFAULT_WEIGHTS = "mmnet_efficientnet_lite2.cub_caltech101_v2"
