"""Every registered architecture and set of weights: one `register_model` call per architecture (family), one
`register_pretrained` call per ``arch.tag``. Imported by `mmnet.zoo` before any name is looked up.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._pretrained import PretrainedCfg
from ._registry import register_model, register_pretrained

# -- Architectures ----------------------------------------------------------------------------------------------------
register_model(
    "mmnet_{backbone}",
    matcher="mmnet.matching.mmnet:Matcher.create",
    model="mmnet.matching.mmnet:create_mmnet",
    description="MMNet (Zhao et al., ICCV 2021)",
)
register_model(
    "scot_{backbone}",
    matcher="mmnet.matching.scot:ScotMatcher.create",
    description="SCOT (Liu et al., CVPR 2020), training-free optimal transport",
)
for _vit in ("vit_base_patch16", "vit_small_patch16", "vit_base_patch14_dinov2"):  # mmnet.models.lpmflow.VIT_BACKBONES
    register_model(
        f"lpmflow_{_vit}",
        matcher="mmnet.matching.lpmflow:LpmflowMatcher.create",
        model="mmnet.matching.lpmflow:create_lpmflow",
        description="LPMFlow (Sun et al., CVPR 2024) on a timm ViT"
        + (" (the official architecture)" if _vit == "vit_base_patch16" else ""),
    )
register_model(
    "cats_{backbone}",
    matcher="mmnet.matching.cats:CatsMatcher.create",
    model="mmnet.matching.cats:create_cats",
    description="CATs (Cho et al., NeurIPS 2021), cost-aggregation transformer (cats_resnet101: official)",
)


# -- The authors' MMNet checkpoints (ResNet-101-FCN), converted locally: see docs/official-checkpoints.md -------------
# They are not redistributable (the official repository has no licence), so each tag points at the folder that
# `mmnet convert-official` writes into; until then loading the tag raises WeightsNotFoundError with these notes.
# Metrics are the paper's (MMNet, ICCV 2021, FCN-ResNet101), reported, not reproduced by mmnet.

OFFICIAL_HOME = Path(os.environ.get("MMNET_HOME", "~/.cache/mmnet")).expanduser() / "official"


def _register_official(tag: str, filename: str, reported: dict[str, float]) -> None:
    name = f"mmnet_fcn_resnet101.{tag}"
    folder = OFFICIAL_HOME / name
    register_pretrained(
        name,
        PretrainedCfg(
            local_dir=str(folder),
            license="unknown (no licence upstream; do not redistribute)",
            metrics={"reported": reported, "source": "MMNet paper (ICCV 2021), FCN-ResNet101", "reproduced": False},
            notes=f"convert the authors' checkpoint first: download {filename} (Google Drive link in the README of "
            f"github.com/wintersun661/MMNet), then run `mmnet convert-official {filename} --backbone "
            f"fcn-resnet101 --out {folder}` (set MMNET_HOME before importing mmnet to change the folder); "
            "the converted config keeps the official readout (level 2, argmax, corner, 224x320 input)",
        ),
    )


_register_official(
    "pfpascal_official",
    "ckp_pascal_fcnres101.pth",
    {"pfpascal_pck@0.05": 81.1, "pfpascal_pck@0.10": 91.6, "pfpascal_pck@0.15": 95.9},
)
_register_official("spair_official", "ckp_spair_fcnres101.pth", {"spair_pck@0.10": 50.4})


# -- Trained here: cub_caltech101 (below) trained 3,500 more steps, then with the student's own pseudo-labels ------
# Registered first: the default tag of mmnet_efficientnet_lite2 (and mmnet.defaults.DEFAULT_WEIGHTS).
# Model card: weights/mmnet_efficientnet_lite2.cub_caltech101_v2/README.md (campaign, ablation, commands, terms).
register_pretrained(
    "mmnet_efficientnet_lite2.cub_caltech101_v2",
    PretrainedCfg(
        local_dir="mmnet_efficientnet_lite2.cub_caltech101_v2",
        sha256="8401187f2161e4fe3cf9cfbca664886bf956e402e869cafbe92bad0ffa9a796a",
        license="other: non-commercial research only (CUB-200-2011 and ImageNet terms)",
        metrics={
            "cub_cls001-050_test_sameclass_seed0": {
                "pck@0.05": 52.6,
                "pck@0.1": 79.5,
                "pck@0.15": 88.4,
                "pairs": 5000,
                "threshold": "bbox",
                "mean": "per-pair",
            },
            "pf-willow-dev": {
                "pck@0.05": 40.2,
                "pck@0.1": 73.9,
                "pck@0.15": 85.9,
                "pairs": 270,
                "threshold": "bbox-kp",
                "mean": "per-pair",
            },
            "measured": "2026-11-30, mmnet eval defaults (original pixels, the checkpoint's ot readout), model card",
        },
        notes="mmnet_efficientnet_lite2.cub_caltech101 fine-tuned for 3,500 more steps (99 minutes of a 2-core CPU) "
        "on CUB pairs, Caltech-101 pairs pseudo-labelled by SCOT and by the student, and synthetic warps; see the "
        "model card",
    ),
)


# -- Superseded by cub_caltech101_v2; not bundled (at most two bundled weights): restore its folder from the git
# history (`git checkout f407301 -- weights/mmnet_efficientnet_lite2.cub_caltech101`) to load it again.
register_pretrained(
    "mmnet_efficientnet_lite2.cub_caltech101",
    PretrainedCfg(
        local_dir="mmnet_efficientnet_lite2.cub_caltech101",
        sha256="6259d22a10894aae119403d6d0cbdb87a9ebfeef35147e00cfec9bca7013f8f3",
        license="other: non-commercial research only (CUB-200-2011 and ImageNet terms)",
        metrics={
            "cub_cls001-050_test_sameclass_seed0": {"pck@0.1": 74.5, "pairs": 5000, "mean": "per-pair"},
            "pf-willow-dev": {"pck@0.1": 70.3, "pairs": 270, "mean": "per-pair"},
            "measured": "2026-11-30, mmnet eval defaults (the checkpoint's ot readout)",
        },
        notes="superseded by mmnet_efficientnet_lite2.cub_caltech101_v2 and no longer bundled: restore it with "
        "`git checkout f407301 -- weights/mmnet_efficientnet_lite2.cub_caltech101` in a source checkout; its "
        "training is step 3 of the cub_caltech101_v2 model card",
    ),
)


# -- Trained here: EfficientNet-Lite2 MMNet on CUB-200-2011 (classes 1-50) pairs + synthetic warps of photos ---------
# Model card: weights/mmnet_efficientnet_lite2.cub_photos/README.md (data terms, training command, evaluation commands).
register_pretrained(
    "mmnet_efficientnet_lite2.cub_photos",
    PretrainedCfg(
        local_dir="mmnet_efficientnet_lite2.cub_photos",
        sha256="a7c4fc1525b0ec6b5c95c7ec71854a975254f847641090bf50eef4c3e5fdfe16",
        license="other: non-commercial research only (CUB-200-2011 and ImageNet terms)",
        metrics={
            "cub_cls001-050_test_sameclass_seed0": {
                "pck@0.05": 51.5,
                "pck@0.1": 76.8,
                "pck@0.15": 86.1,
                "pairs": 5000,
                "threshold": "bbox",
                "mean": "per-pair",
            },
            "pf-willow-dev": {
                "pck@0.05": 32.8,
                "pck@0.1": 56.9,
                "pck@0.15": 72.7,
                "pairs": 270,
                "threshold": "bbox-kp",
                "mean": "per-pair",
            },
            "measured": "2026-11-23, mmnet eval defaults (original pixels), commands in the model card",
        },
        notes="trained on a 2-core CPU for 49 minutes (1,400 steps of 4 pairs); see the model card",
    ),
)


# -- The authors' LPMFlow checkpoints (iBOT ViT-B/16), converted locally: see docs/lpmflow.md -------------------------
# Hosted on a Baidu Netdisk share (folders spair / pfpascal / pfwillow, each model_best.pth + args.pkl, ~2.1 GB);
# not redistributable here. Metrics: reported by the authors (supplement), not reproduced by mmnet; measured with the
# official protocol, whose SPair threshold uses the source box and whose checkpoint was selected on the test split.
def _register_lpmflow(tag: str, folder_name: str, reported: dict[str, float]) -> None:
    name = f"lpmflow_vit_base_patch16.{tag}"
    folder = OFFICIAL_HOME / name
    register_pretrained(
        name,
        PretrainedCfg(
            local_dir=str(folder),
            license=(
                "Apache-2.0 file upstream (copyright line blank; code derived from GPL-3.0 CATs); do not redistribute"
            ),
            metrics={
                "reported": reported,
                "source": "LPMFlow supplement (CVPR 2024), official protocol",
                "reproduced": False,
                **({} if reported else {"note": "the paper's figure for this checkpoint was not available to mmnet"}),
            },
            notes=f"convert the authors' checkpoint first: download the '{folder_name}' folder (model_best.pth + "
            "args.pkl) from the Baidu Netdisk link in the README of github.com/YXSUNMADMAX/LPMFlow, then run "
            f"`mmnet convert-lpmflow {folder_name} --out {folder}` (set MMNET_HOME before importing mmnet to change "
            "the folder); the converted config keeps the official readout (512x512 input, truncated points)",
        ),
    )


_register_lpmflow("spair_official", "spair", {"spair_pck@0.10_bbox": 65.6})
_register_lpmflow("pfpascal_official", "pfpascal", {})
_register_lpmflow("pfwillow_official", "pfwillow", {})


# -- The authors' CATs checkpoints (ResNet-101), converted locally: see docs/cats.md ---------------------------------
# Four folders (model_best.pth + args.pkl each) on the Google Drive share linked from the official README; the code is
# GPL-3.0 and the weights state no terms, so they are not redistributed here. Metrics: reported in that README,
# measured by the official test (target -> source transfer, 256x256 frame), not reproduced by mmnet.
def _register_cats(folder_name: str, backbone: str, reported: dict[str, float]) -> None:
    name = f"cats_resnet101.{folder_name}_official"
    folder = OFFICIAL_HOME / name
    register_pretrained(
        name,
        PretrainedCfg(
            local_dir=str(folder),
            license="unknown (weights released with GPL-3.0 code, no terms of their own); do not redistribute",
            metrics={
                "reported": reported,
                "source": "README of github.com/SunghwanHong/Cost-Aggregation-transformers, official protocol",
                "backbone": backbone,
                "reproduced": False,
            },
            notes=f"convert the authors' checkpoint first: download the '{folder_name}' folder (model_best.pth + "
            "args.pkl) from the Google Drive link in the README of github.com/SunghwanHong/Cost-Aggregation-"
            f"transformers, then run `mmnet convert-official --family cats {folder_name} --out {folder}` (set "
            "MMNET_HOME before importing mmnet to change the folder); the converted config keeps the official "
            "readout (256x256 input, truncated points; preset='exact' for mmnet's)",
        ),
    )


_register_cats("spair", "fine-tuned", {"spair_pck@0.10": 49.9})
_register_cats("spair_frozen", "frozen", {"spair_pck@0.10": 42.4})
_register_cats(
    "pfpascal", "fine-tuned", {"pfpascal_pck@0.05": 75.4, "pfpascal_pck@0.10": 92.6, "pfpascal_pck@0.15": 96.4}
)
_register_cats(
    "pfpascal_frozen", "frozen", {"pfpascal_pck@0.05": 67.5, "pfpascal_pck@0.10": 89.1, "pfpascal_pck@0.15": 94.9}
)
