"""Training and fine-tuning MMNet, CATs and LPMFlow: pair sources (benchmark datasets, custom csv lists, synthetic
warps of any photo folder, mixtures) and a trainer with exact resume and DDP that takes each family's objective
(`mmnet.train.families`). Command line: ``mmnet train`` or ``python -m mmnet.train``."""

from mmnet.train.families import TrainFamily, family_of
from mmnet.train.pairs import (
    Augment,
    CsvPairs,
    MixedPairs,
    SupervisedPairs,
    collate,
    default_data_root,
)
from mmnet.train.synthetic import RandomWarp, SyntheticPairs, ThinPlateSpline, WarpConfig
from mmnet.train.trainer import (
    TrainConfig,
    Trainer,
    configure_trainable,
    init_distributed,
    lr_factor,
    make_optimizer,
    param_groups,
)
from mmnet.train.validate import pck_validator

__all__ = [
    "Augment",
    "CsvPairs",
    "MixedPairs",
    "RandomWarp",
    "SupervisedPairs",
    "SyntheticPairs",
    "ThinPlateSpline",
    "TrainConfig",
    "TrainFamily",
    "Trainer",
    "WarpConfig",
    "collate",
    "configure_trainable",
    "default_data_root",
    "family_of",
    "init_distributed",
    "lr_factor",
    "make_optimizer",
    "param_groups",
    "pck_validator",
]
