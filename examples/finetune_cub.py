"""Fine-tune MMNet (EfficientNet-Lite2 backbone) on CUB-200-2011 pairs, mixed with synthetic warps of photos.

This is the recipe of the released `mmnet_efficientnet_lite2.cub_photos` weights (see its model card).

    python examples/finetune_cub.py --cub /data/cub-200-2011-cls001-050 --photos /data/photos --out runs/cub

`--cub` is the folder holding CUB_200_2011/ (or CUB_200_2011 itself) and `pairs/`; `--pairs` is a training
pair list in the format `mmnet.data.CUB` reads (CUB's own files are sampled from when it is omitted).
"""

import argparse

from mmnet.train.cli import main

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--cub", required=True)
parser.add_argument("--pairs", default="trn_pairs_cub_cls001-050_sameclass_seed0.csv")
parser.add_argument("--photos", nargs="*", default=[])
parser.add_argument("--out", default="runs/cub")
parser.add_argument("--steps", type=int, default=1800)
args, rest = parser.parse_known_args()

argv = [
    "--dataset",
    "cub",
    "--dataset-root",
    args.cub,
    "--split",
    "trn",
    "--pairs",
    args.pairs,
    "--train-backbone",
    "last2",
    "--lr",
    "5e-4",
    "--backbone-lr-mult",
    "0.2",
    "--warmup",
    "100",
    "--steps",
    str(args.steps),
    "--batch-size",
    "4",
    "--max-kps",
    "20",
    "--val-dataset",
    "cub",
    "--val-root",
    args.cub,
    "--val-pairs",
    "test_pairs_cub_cls001-050_sameclass_seed0.csv",
    "--val-every",
    "300",
    "--val-limit",
    "50",
    "--out",
    args.out,
    "--release",
    f"{args.out}/release",
]
if args.photos:
    argv += ["--photos", *args.photos, "--synthetic-ratio", "0.3"]
raise SystemExit(main(argv + rest))
