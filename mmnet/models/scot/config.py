"""SCOT settings and the default layer set of each backbone (ids: see `mmnet.models.scot`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...checks import check_choice, check_float, check_int, describe
from ...errors import InputError

Saliency = Literal["cam", "norm", "uniform"]

# Default layer sets (ids in our scheme, see `mmnet.models.scot`).
DEFAULT_LAYERS: dict[str, tuple[int, ...]] = {
    # chosen by `mmnet scot-layers` on 100 CUB training pairs (docs/benchmarks.md)
    "efficientnet_lite2": (13, 14, 16),  # blocks.4.3, blocks.5.0, blocks.5.2
    "efficientnet_lite0": (9, 13, 14),  # blocks.4.2, blocks.5.3, blocks.6.0
    # untested: Lite1 has Lite2's block layout, so Lite2's ids
    "efficientnet_lite1": (13, 14, 16),
    # untested here (random weights only): the reference's published ids translated (SCOT id k -> k - 1, stem -> 0)
    "resnet18": (1, 4, 5, 6, 7),  # no published set: a guess in the spirit of the ResNet-50 one
    "resnet50": (1, 6, 10, 11, 12),  # HPF PF-PASCAL R50 (2,7,11,12,13)
    "resnet101": (1, 21, 23, 24, 26, 27, 28),  # SCOT PF-PASCAL/PF-WILLOW R101 (2,22,24,25,27,28,29)
    "resnext101": (1, 21, 23, 24, 26, 27, 28),  # same block layout as ResNet-101
    "fcn_resnet101": (1, 3, 4, 17, 18, 19, 23, 31),  # SCOT/HPF FCN (2,4,5,18,19,20,24,32)
}


@dataclass(frozen=True)
class ScotConfig:
    """SCOT settings (see `mmnet.models.scot` for each step).

    layers: layer ids (flattened tapped blocks, finest group first). long_side: resize target of the longer side.
    epsilon: entropic regularisation. iterations: maximum Sinkhorn updates (1 = the released code). tol: stop when
    the L1 row-marginal error is below it. exponent: power of the rescaled plan. saliency: point masses.
    bins: RHM offset bins. kernel, sigma: the Gaussian smoothing the vote map (bins). box_size: transfer box side in
    resized pixels (27, one of HPF's receptive-field box sizes 11/19/27/35; best of 1-99 on CUB training pairs).
    """

    layers: tuple[int, ...]
    long_side: int = 300
    epsilon: float = 0.05
    iterations: int = 100
    tol: float = 1e-3
    exponent: float = 2.0
    saliency: Saliency = "cam"
    bins: int = 8192
    kernel: int = 7
    sigma: float = 1.0
    box_size: float = 27.0

    def __post_init__(self) -> None:
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, (tuple, list)) or not self.layers:
            raise InputError(f"layers must be a non-empty list of layer ids, got {describe(self.layers)}")
        object.__setattr__(self, "layers", tuple(check_int("layers", i, min=0) for i in self.layers))
        check_int("long_side", self.long_side, min=16)
        check_float("epsilon", self.epsilon, min=0.0, min_inclusive=False)
        check_int("iterations", self.iterations, min=1)
        check_float("tol", self.tol, min=0.0)
        check_float("exponent", self.exponent, min=0.0, min_inclusive=False)
        check_choice("saliency", self.saliency, ("cam", "norm", "uniform"))
        check_int("bins", self.bins, min=1)
        check_int("kernel", self.kernel, min=1)
        if self.kernel % 2 == 0:
            raise InputError(f"kernel must be an odd integer >= 1, got {self.kernel}")
        check_float("sigma", self.sigma, min=0.0, min_inclusive=False)
        check_float("box_size", self.box_size, min=0.0, min_inclusive=False)
