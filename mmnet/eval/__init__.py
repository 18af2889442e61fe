"""PCK evaluation: explicit protocols, an `evaluate` loop over any matcher, baselines and reports."""

from mmnet.eval.baselines import BaselineMatch, RescaleMatcher
from mmnet.eval.evaluate import evaluate
from mmnet.eval.pck import THRESHOLDS, keypoint_distances, pck_correct, score_pair, threshold_length
from mmnet.eval.results import EvalResult, PairScore, write_csv, write_json, write_per_pair_csv

__all__ = [
    "THRESHOLDS",
    "BaselineMatch",
    "EvalResult",
    "PairScore",
    "RescaleMatcher",
    "evaluate",
    "keypoint_distances",
    "pck_correct",
    "score_pair",
    "threshold_length",
    "write_csv",
    "write_json",
    "write_per_pair_csv",
]
