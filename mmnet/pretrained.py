"""The registered MMNet weights (``arch.tag``): the one place where pretrained tags are declared."""

from __future__ import annotations

import os
from pathlib import Path

from .registry import PretrainedCfg, register_pretrained

__all__ = ["PretrainedCfg", "register_pretrained"]


# -- The authors' MMNet checkpoints (ResNet-101-FCN), converted locally: see docs/official-checkpoints.md -------------
# They are not redistributable (the official repository has no licence), so each tag points at the folder that
# `mmnet convert-official` writes into; until then loading the tag raises WeightsNotFoundError with these notes.
# Metrics are the paper's (MMNet, ICCV 2021, FCN-ResNet101), reported, not reproduced by mmnet.

OFFICIAL_HOME = Path(os.environ.get("MMNET_HOME", "~/.cache/mmnet")).expanduser() / "official"


def _register_official(tag: str, filename: str, dataset: str, reported: dict[str, float]) -> None:
    name = f"mmnet_fcn_resnet101.{tag}"
    folder = OFFICIAL_HOME / name
    register_pretrained(name, PretrainedCfg(
        local_dir=str(folder),
        license="unknown (no licence upstream; do not redistribute)",
        datasets=(dataset,),
        metrics={"reported": reported, "source": "MMNet paper (ICCV 2021), FCN-ResNet101", "reproduced": False},
        notes=f"convert the authors' checkpoint first: download {filename} (Google Drive link in the README of "
              f"github.com/wintersun661/MMNet), then run `mmnet convert-official {filename} --backbone "
              f"fcn-resnet101 --out {folder}` (set MMNET_HOME before importing mmnet to change the folder); "
              "the converted config keeps the official readout (level 2, argmax, corner, 224x320 input)"))


_register_official("pfpascal_official", "ckp_pascal_fcnres101.pth", "pfpascal",
                   {"pfpascal_pck@0.05": 81.1, "pfpascal_pck@0.10": 91.6, "pfpascal_pck@0.15": 95.9})
_register_official("spair_official", "ckp_spair_fcnres101.pth", "spair", {"spair_pck@0.10": 50.4})
