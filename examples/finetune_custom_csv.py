"""Fine-tune released MMNet weights on your own annotated pairs.

    python examples/finetune_custom_csv.py my_pairs.csv --image-root my_images --out runs/mine

The csv has a header and one row per pair: `source_image,target_image,XA,YA,XB,YB[,flip]`, where XA/YA are
';'-separated x/y pixel coordinates in the source image and XB/YB the matching ones in the target image
(same count; `nan` or an empty entry marks a point missing in one image); `flip=1` uses the pair mirrored.
Coordinates are in the frame an image viewer shows (EXIF orientation applied, as `mmnet match` reads them).
Image paths are relative to --image-root (default: the csv's folder). Example row:

    source_image,target_image,XA,YA,XB,YB
    cars/a.jpg,cars/b.jpg,10;52.5;80,33;40;41,14;60;95,30;38;44
"""

import argparse

import torch

from mmnet.train import Augment, CsvPairs, SupervisedPairs, TrainConfig, Trainer
from mmnet.zoo import from_pretrained, save_pretrained

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("csv")
parser.add_argument("--image-root")
parser.add_argument("--init", default="mmnet_efficientnet_lite2.cub_photos")
parser.add_argument("--out", default="runs/custom")
parser.add_argument("--steps", type=int, default=500)
parser.add_argument("--lr", type=float, default=1e-4)
args = parser.parse_args()

model = from_pretrained(args.init)
data = SupervisedPairs(
    CsvPairs(args.csv, args.image_root),
    size=model.preprocess.size,
    mean=model.preprocess.mean,
    std=model.preprocess.std,
    max_kps=50,
    augment=Augment(),
)
config = TrainConfig(steps=args.steps, batch_size=min(4, len(data)), lr=args.lr, warmup=20, train_backbone="frozen")
Trainer(model, data, config, args.out).fit(resume="auto")
# keep the readout the released weights were tuned with (e.g. level 2 for the cub_photos weights): without it the
# release would read the finest level and predictions would move although the weights barely changed
save_pretrained(model, f"{args.out}/release", dtype=torch.float16, readout=model.readout)
print(f"weights in {args.out}/release; use them with mmnet.Matcher.from_pretrained('{args.out}/release')")
