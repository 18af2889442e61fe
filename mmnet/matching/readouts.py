"""How score maps become positions: `ReadoutConfig`, its presets, and the official test's settings (one place)."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from ..checks import check_bool, check_choice, check_float, check_int, check_keys
from ..errors import InputError
from .geometry import Convention, argmax_readout, soft_argmax_readout

#: The official MMNet test: resized to H x W = 224 x 320 (aspect ignored), plain bilinear, ImageNet statistics.
OFFICIAL_INPUT_SIZE = (224, 320)
#: The official readout: level 2 (stride 8), source to target, hard argmax, cell corners.
OFFICIAL_READOUT: dict[str, Any] = {"level": 2, "method": "argmax", "convention": "corner"}
#: Readout methods; ``"ot"`` is `mmnet.matching.transport` followed by the soft-argmax window.
METHODS = ("softargmax", "argmax", "ot")


@dataclass(frozen=True)
class ReadoutConfig:
    """How scores become positions.

    level: which level's complemented scores to read (coarse to fine; -1 = finest, 2 = the official choice).
    method: ``"softargmax"`` (sub-cell mean in a `window` x `window` patch around the argmax), ``"argmax"``, or
        ``"ot"``: SCOT's optimal transport (and optionally Hough voting) over all cells of the level, then
        soft-argmax in the `window` (`mmnet.matching.transport`).
    convention: ``"center"`` or ``"corner"`` (official) grid/pixel convention, see `mmnet.matching.geometry`.
    ot_epsilon: entropic regularisation of the ``"ot"`` readout, in the model's score units (1 = the softmax
        temperature the model was trained with; smaller is closer to a one-to-one assignment).
    ot_iterations: at most this many Sinkhorn updates (stops earlier at an L1 row-marginal error of 1e-3).
    ot_exponent: power of the plan (rescaled by the number of source cells), as SCOT's `exponent`.
    ot_masses: ``"uniform"`` or ``"confidence"`` (a cell's mass is the peak of its row / column softmax).
    ot_hough: multiply the plan by SCOT's regularised Hough votes of each match's offset.
    The ``ot_*`` fields are ignored by the other methods.
    """

    level: int = -1
    method: Literal["softargmax", "argmax", "ot"] = "softargmax"
    window: int = 5
    convention: Convention = "center"
    ot_epsilon: float = 1.0
    ot_iterations: int = 100
    ot_exponent: float = 1.0
    ot_masses: Literal["uniform", "confidence"] = "uniform"
    ot_hough: bool = False

    def __post_init__(self) -> None:
        check_int("level", self.level)
        check_choice("method", self.method, METHODS)
        check_int("window", self.window, min=1)
        if self.window % 2 == 0:
            raise InputError(f"window must be an odd integer >= 1 (a patch centred on the argmax), got {self.window}")
        check_choice("convention", self.convention, ("center", "corner"))
        object.__setattr__(self, "ot_epsilon", check_float("ot_epsilon", self.ot_epsilon, min=0.0, min_inclusive=False))
        check_int("ot_iterations", self.ot_iterations, min=1)
        object.__setattr__(
            self, "ot_exponent", check_float("ot_exponent", self.ot_exponent, min=0.0, min_inclusive=False)
        )
        check_choice("ot_masses", self.ot_masses, ("uniform", "confidence"))
        check_bool("ot_hough", self.ot_hough)

    @classmethod
    def from_dict(cls, data: Any) -> ReadoutConfig:
        """The "readout" object of a config.json; unknown keys and wrong values raise `InputError`."""
        if not isinstance(data, dict):
            raise InputError(f"readout must be a JSON object, got {type(data).__name__}")
        check_keys("readout key(s)", data, [f.name for f in fields(cls)])
        return cls(**data)


#: MMNet's named readouts. Leaving the preset out (``preset=None``) uses the checkpoint's own readout (its
#: config.json), which is what a released checkpoint was validated with.
PRESETS: dict[str, ReadoutConfig] = {
    "finest": ReadoutConfig(),  # the finest level, soft-argmax, cell centres
    "official": ReadoutConfig(**OFFICIAL_READOUT),
}
#: Old preset names, accepted for one release with a `DeprecationWarning`: ``"default"`` was never the default
#: (that is the checkpoint's readout); it meant the finest level for MMNet, the exact-position readout for
#: CATs and LPMFlow.
RENAMED_PRESETS = {"default": "finest"}


def check_preset(
    preset: Any, choices: Collection[str], renamed: Mapping[str, str] | None = None, warn: bool = True
) -> str | None:
    """A matcher's `preset` argument -> a name in `choices`, or None for the checkpoint's own readout.

    A name in `renamed` (old -> new) gives the new one, with a `DeprecationWarning` when `warn`; anything else
    raises `InputError` listing the choices.
    """
    if preset is None:
        return None
    renamed = RENAMED_PRESETS if renamed is None else renamed
    if isinstance(preset, str) and preset in renamed:
        if warn:
            warnings.warn(
                f"preset={preset!r} is deprecated and will be removed in the next release: it means "
                f"preset={renamed[preset]!r}; leave the preset out (None) for the checkpoint's own "
                "readout",
                DeprecationWarning,
                stacklevel=3,
            )
        return renamed[preset]
    if not isinstance(preset, str) or preset not in choices:
        raise InputError(
            f"unknown preset {preset!r}: preset must be None (the checkpoint's readout) or one of "
            f"{', '.join(map(repr, choices))}"
        )
    return preset


def read_scores(scores: torch.Tensor, readout: ReadoutConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Score maps (B, N, h, w) -> grid xy (B, N, 2) and confidences (B, N) in [0, 1], by `readout.method`."""
    if readout.method == "argmax":
        return argmax_readout(scores)
    if readout.method in ("softargmax", "ot"):  # "ot": `scores` are the log final scores of the transport
        return soft_argmax_readout(scores, readout.window)
    raise InputError(f"unknown readout method {readout.method!r}")


def window_mass(prob: torch.Tensor, size: tuple[int, int], radius: int = 1) -> torch.Tensor:
    """(B, Nq, Nr) probabilities over an (h, w) grid -> (B, Nq): the mass within `radius` cells of each argmax
    (a confidence in [0, 1] for soft-argmax readouts: CATs, LPMFlow)."""
    h, w = size
    best = prob.argmax(dim=-1)
    by, bx = torch.div(best, w, rounding_mode="floor"), best % w
    ys = torch.arange(h, device=prob.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=prob.device).view(1, 1, 1, w)
    near = ((ys - by[..., None, None]).abs() <= radius) & ((xs - bx[..., None, None]).abs() <= radius)
    return (prob.view(*prob.shape[:2], h, w) * near).sum(dim=(-2, -1))
