"""Fine-tune MMNet on PF-PASCAL and/or SPair-71k training pairs (one run on their mixture).

    python examples/finetune_pfpascal_spair.py --pf-pascal /data/PF-PASCAL --spair /data/SPair-71k --out runs/pascal

Give either folder or both (in the layouts `mmnet.data.PFPascal` / `mmnet.data.SPair` read). PF-PASCAL rows
flagged `flip` are used mirrored, as the loader provides. Starts from `--init` weights when given (e.g.
`mmnet_efficientnet_lite2.cub_photos`), else from the ImageNet backbone. Validates on PF-PASCAL `val`.
"""

import argparse

import torch

from mmnet.data import load_dataset
from mmnet.train import Augment, MixedPairs, SupervisedPairs, TrainConfig, Trainer, pck_validator
from mmnet.zoo import create_model, from_pretrained, save_pretrained

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--pf-pascal")
parser.add_argument("--spair")
parser.add_argument("--init")
parser.add_argument("--out", default="runs/pascal_spair")
parser.add_argument("--steps", type=int, default=20000)
parser.add_argument("--train-backbone", default="last2")
args = parser.parse_args()
if not (args.pf_pascal or args.spair):
    parser.error("give --pf-pascal and/or --spair")

model = from_pretrained(args.init) if args.init else create_model("mmnet_efficientnet_lite2", pretrained_backbone=True)
kw = dict(
    size=model.preprocess.size, mean=model.preprocess.mean, std=model.preprocess.std, max_kps=40, augment=Augment()
)
sources = []
if args.pf_pascal:
    sources.append(SupervisedPairs(load_dataset("pf-pascal", args.pf_pascal, split="trn"), **kw))
if args.spair:
    sources.append(SupervisedPairs(load_dataset("spair", args.spair, split="trn"), **kw))
data = sources[0] if len(sources) == 1 else MixedPairs(sources, [0.5, 0.5], length=sum(map(len, sources)))
validate = (
    pck_validator(load_dataset("pf-pascal", args.pf_pascal, split="val"), alpha=0.1, limit=300)
    if args.pf_pascal
    else None
)
config = TrainConfig(
    steps=args.steps,
    batch_size=8,
    lr=5e-4,
    backbone_lr_mult=0.1,
    train_backbone=args.train_backbone,
    warmup=200,
    val_every=1000 if validate else 0,
)
Trainer(model, data, config, args.out, validate=validate).fit(resume="auto")
save_pretrained(model, f"{args.out}/release", dtype=torch.float16)
