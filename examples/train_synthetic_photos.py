"""Self-supervised MMNet training from any folder of unlabelled photos (random homography + TPS warps).

    python examples/train_synthetic_photos.py /path/to/photos [more folders] --out runs/photos --steps 5000

Each pair is a photo and a warped, colour-jittered copy; the warp gives exact keypoint matches. No labels.
"""

import argparse

import torch

from mmnet.train import SyntheticPairs, TrainConfig, Trainer, WarpConfig
from mmnet.zoo import create_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("folders", nargs="+")
parser.add_argument("--out", default="runs/photos")
parser.add_argument("--steps", type=int, default=5000)
parser.add_argument("--tps", type=float, default=0.05)
parser.add_argument("--threads", type=int, default=0)
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

model = create_model("mmnet_efficientnet_lite2", pretrained_backbone=True)
data = SyntheticPairs(
    args.folders,
    size=model.preprocess.size,
    mean=model.preprocess.mean,
    std=model.preprocess.std,
    n_points=20,
    warp=WarpConfig(tps=args.tps),
)
config = TrainConfig(steps=args.steps, batch_size=4, lr=5e-4, train_backbone="last2", backbone_lr_mult=0.2, warmup=100)
Trainer(model, data, config, args.out).fit(resume="auto")

from mmnet.zoo import save_pretrained  # noqa: E402

save_pretrained(model, f"{args.out}/release", dtype=torch.float16)
print(f"weights in {args.out}/release; evaluate with: mmnet eval --model {args.out}/release ...")
