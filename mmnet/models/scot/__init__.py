"""SCOT (Liu et al., CVPR 2020): training-free semantic correspondence by optimal transport, in the `Matcher` API.

Pipeline for one pair (every step vectorised, nothing loops over hyperpixels or keypoints):

1. Both images are resized so that their longer side is `long_side` (300, aspect kept) and run through a frozen
   backbone of the registry (`mmnet.models.backbones`).
2. **Hyperpixels**: the selected block outputs are L2-normalised along channels, bilinearly up-sampled
   (align_corners=True) to the finest selected map, concatenated and normalised again.
   **Layer ids** index the flattened list of tapped blocks, finest scale group first, in network order
   (`layer_names(backbone)` lists them). EfficientNet-Lite2: 0-2 ``blocks.1.*`` (stride 4), 3-5 ``blocks.2.*``
   (stride 8), 6-13 ``blocks.3.*``/``blocks.4.*`` (stride 16), 14-19 ``blocks.5.*``/``blocks.6.0`` (stride 32).
   ResNets: id k is the (k+1)-th bottleneck/basic block (``layer1.0`` = 0), i.e. SCOT/HPF id k+1; SCOT's id 0
   (the stem) has no counterpart and maps to 0. Our taps are post-activation block outputs (SCOT: pre-ReLU).
3. **Cost** ``C = 1 - max(cos, 0)`` between all source and target hyperpixels.
4. **Point masses** ``mu, nu``: weight 0.5 per hyperpixel, raised to 0.8/0.9/1.0 where the saliency exceeds
   0.4/0.5/0.6, normalised to sum 1. Saliency ``"cam"``: class-activation map of the two top ImageNet classes from
   the pretrained classifier head (EfficientNet-Lite: ``conv_head`` + ``bn2`` + ``classifier``; ResNet: ``fc``),
   at scale 1 only (the reference also averages scales 1.5 and 2), max-normalised; ``"norm"``: the hyperpixel
   feature norm of the last tapped block, max-normalised; ``"uniform"``: equal masses.
5. **Entropic OT** by Sinkhorn scaling, ``K = exp(-C / epsilon)``, epsilon 0.05, stopped when the L1 error of the
   row marginal is below `tol` or after `iterations` updates. ``iterations=1`` reproduces the released SCOT code
   (one pair of scaling updates from a uniform start). Standard (not log-domain) scaling; if the plan has a NaN
   or infinity, epsilon is doubled and the solve retried, as in the reference. (With this cost ``K >= e^-20``, so
   in float32 the retry only triggers for a much smaller epsilon.) The plan is rescaled by the number of source
   hyperpixels and raised to `exponent` (default 2.0, the best of 0.5/1/2/4 on CUB training pairs; the
   reference uses 0.5 for PF-PASCAL/PF-WILLOW and 1.0 for SPair).
6. **Regularised Hough matching**: every (source, target) hyperpixel match votes with its rescaled OT mass into a
   2-D offset space of about `bins` (8,192) square bins spanning (Ws + Wt) x (Hs + Ht) pixels; the vote map is
   smoothed by a 7 x 7 Gaussian; final score = OT mass x smoothed vote of the match's offset bin.
7. **Keypoint transfer** (HPF's rule): every hyperpixel owns a square box of side `box_size` (27 resized pixels,
   the best of 1-99 on CUB training pairs; HPF ties 11/19/27/35 to the receptive field) centred on it; a
   keypoint moves to the average, over the source boxes containing it, of (centre of that box's best-scoring
   target box + offset of the keypoint from the source box centre). A keypoint inside no box (only possible at
   the border for small boxes) uses the nearest box; results are clamped into the target image. Margin boxes are
   not pruned.

Dense flow applies the same rule at every source hyperpixel centre (there it is a box filter of the per-hyperpixel
displacement field) and interpolates bilinearly to every source pixel. Scores in [0, 1]: the share of a source
hyperpixel's final score held by its best target, averaged over the boxes used.

Modules: `config` (settings, default layers), `ot` (Sinkhorn, point masses), `hough` (regularised Hough matching,
box-voting transfer), `cam` (CAM saliency), `pipeline` (hyperpixels to final scores). The matcher is
`mmnet.matching.scot.ScotMatcher`; layer sets are chosen with `mmnet.eval.scot_layers` (``mmnet scot-layers``).
"""

from .cam import CamHead
from .config import DEFAULT_LAYERS, Saliency, ScotConfig
from .hough import cell_centres, hough_votes, transfer_points
from .ot import SinkhornResult, saliency_masses, sinkhorn
from .pipeline import ScotScores, hyperpixels, scot_scores

__all__ = [
    "DEFAULT_LAYERS",
    "CamHead",
    "Saliency",
    "ScotConfig",
    "ScotScores",
    "SinkhornResult",
    "cell_centres",
    "hough_votes",
    "hyperpixels",
    "saliency_masses",
    "scot_scores",
    "sinkhorn",
    "transfer_points",
]
