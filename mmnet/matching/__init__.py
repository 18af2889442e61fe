"""Matchers: `BaseMatcher` and its results (`base`), coordinates (`geometry`), the one image preprocessing path
(`images`), readouts (`readouts`), and one `BaseMatcher` subclass per family (`mmnet.Matcher`, `scot.ScotMatcher`).
"""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BaseMatcher": "mmnet.matching.base",
        "FlowResult": "mmnet.matching.base",
        "MatchResult": "mmnet.matching.base",
        "warp_image": "mmnet.matching.base",
        "Matcher": "mmnet.matching.mmnet",
        "ScotMatcher": "mmnet.matching.scot",
        "ReadoutConfig": "mmnet.matching.readouts",
        "load_image": "mmnet.matching.images",
        "PreprocessConfig": "mmnet.matching.images",
    },
)
