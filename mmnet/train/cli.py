"""``mmnet train`` = ``python -m mmnet.train`` (also ``torchrun ... -m mmnet.train``): train or fine-tune an MMNet,
CATs or LPMFlow model, each with its own objective, on the same data sources.

Examples::

    python -m mmnet.train --dataset cub --pairs trn_pairs_cub_cls001-050_sameclass_seed0.csv \\
        --photos photos --synthetic-ratio 0.3 --steps 2000 --out runs/cub
    python -m mmnet.train --csv my_pairs.csv --image-root my_images --init mmnet_efficientnet_lite2.cub_photos \\
        --out runs/mine --release runs/mine/release
    mmnet train --model cats_efficientnet_lite2 --dataset pf-pascal --lr 3e-5 --out runs/cats
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmnet import allocator
from mmnet.errors import InputError, MMNetError
from mmnet.train.pairs import Augment, CsvPairs, MixedPairs, SupervisedPairs, default_data_root
from mmnet.train.synthetic import SyntheticPairs, WarpConfig
from mmnet.train.trainer import TrainConfig, Trainer, init_distributed

DATASET_FOLDERS = {
    "cub": "cub-200-2011-cls001-050",
    "pf-pascal": "pf-pascal",
    "pf-willow": "pf-willow-dev",
    "spair": "spair-71k",
}


#: Help of TrainConfig-generated flags (the others are described in TrainConfig's docstring).
FLAG_HELP = {
    "objective": "the family's loss: 'default' (MMNet's loss; CATs: flow; LPMFlow: flow + RPTC) or, for cats_ "
    "models, 'flow' or 'keypoint' (default: %(default)s)",
    "flow_target": "cats_ and lpmflow_ flow loss target: 'keypoints' (exact positions) or 'official' (the official "
    "dense ground truth) (default: %(default)s)",
    "rptc_schedule": "lpmflow_ RPTC weight per epoch: 'code' (the official script) or 'supplement' (the paper's "
    "text) (default: %(default)s)",
}


def _root(name: str, root: str | None, data_root: Path) -> Path:
    if root:
        return Path(root).expanduser()
    return data_root / DATASET_FOLDERS.get(name, name)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="python -m mmnet.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default="mmnet_efficientnet_lite2",
        help="architecture of a fresh model: mmnet_<backbone>, cats_<backbone> or lpmflow_<vit>; its family "
        "picks the objective (see --objective)",
    )
    m.add_argument(
        "--init",
        help="start from these released weights of any of those families (registered name, "
        "folder or hub id); replaces --model",
    )
    m.add_argument("--no-pretrained-backbone", action="store_true", help="random backbone (tests only)")
    m.add_argument("--channels", type=int, help="feature channels of a fresh model's head (default 21, the paper's)")
    m.add_argument(
        "--levels",
        type=int,
        help="matching levels of a fresh model, coarsest first (default: one per "
        "scale group of the backbone; 3 drops the stride-4 level)",
    )
    d = p.add_argument_group("data")
    d.add_argument("--data-root", help="benchmark folder (default $MMNET_DATA or ../shared/data)")
    d.add_argument("--dataset", help="mmnet.data dataset name: cub, pf-pascal, spair, pf-willow")
    d.add_argument("--dataset-root", help="the dataset's own folder (default <data-root>/<usual folder>)")
    d.add_argument("--split", default="trn")
    d.add_argument("--pairs", help="pair list of the dataset (e.g. CUB's trn_pairs_...csv)")
    d.add_argument("--csv", help="custom csv of keypoint pairs (source_image,target_image,XA,YA,XB,YB[,flip])")
    d.add_argument("--image-root", help="folder the custom csv's image paths are relative to")
    d.add_argument(
        "--photos",
        nargs="*",
        default=[],
        help="photo folders for synthetic warped pairs (relative paths are looked up in --data-root)",
    )
    d.add_argument(
        "--synthetic-ratio",
        type=float,
        default=None,
        help="fraction of synthetic pairs when mixed with supervised ones (default 0.3; 1 when only photos are given)",
    )
    d.add_argument(
        "--source-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="sampling weights of the given sources in the order --dataset, --csv, --photos (overrides "
        "--synthetic-ratio)",
    )
    d.add_argument("--epoch-length", type=int, help="samples per epoch of a mixture (default: supervised size)")
    d.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="default 224 320")
    d.add_argument("--max-kps", type=int, default=20)
    d.add_argument("--no-augment", action="store_true")
    d.add_argument("--tps", type=float, default=0.05, help="thin-plate-spline strength of synthetic warps")
    v = p.add_argument_group("validation")
    v.add_argument(
        "--val-dataset",
        nargs="+",
        default=[],
        help="dataset(s) for periodic PCK (e.g. cub pf-willow); the best checkpoint has the best mean",
    )
    v.add_argument("--val-root", nargs="+", default=[], help="their folders (default <data-root>/<usual folder>)")
    v.add_argument("--val-split", default="test")
    v.add_argument("--val-pairs", nargs="+", default=[], help="their pair lists ('-': the dataset's own)")
    v.add_argument("--val-limit", type=int, default=100)
    v.add_argument("--val-every", type=int, default=0)
    t = p.add_argument_group("optimisation")
    for name, default in TrainConfig().to_dict().items():
        if name in ("extra", "val_every"):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            t.add_argument(flag, type=lambda s: s.lower() in {"1", "true", "yes"}, default=default, metavar="BOOL")
        else:
            t.add_argument(flag, type=type(default), default=default, help=FLAG_HELP.get(name))
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="run folder (log.csv, last.pt, best/)")
    r.add_argument(
        "--resume",
        default="auto",
        help="checkpoint to resume from; 'auto' (default): out/last.pt if it exists; 'none': start over",
    )
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    r.add_argument("--device")
    r.add_argument(
        "--release",
        help="write the final weights here (model.safetensors in fp16 + config.json, with the family's save function)",
    )
    r.add_argument("--release-best", action="store_true", help="release the best validated weights instead")
    r.add_argument(
        "--release-readout",
        metavar="JSON",
        help="readout recorded in the release, e.g. '{\"level\": 2}' (MMNet) or "
        '\'{"preset": "official"}\' (CATs, LPMFlow); default: the readout of --init (a fresh model: '
        "the family's default, {})",
    )
    r.add_argument("--no-progress", action="store_true")
    return p


def build_data(args: argparse.Namespace, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
    data_root = Path(args.data_root).expanduser() if args.data_root else default_data_root()
    augment = Augment.none() if args.no_augment else Augment()
    sources = []
    if args.dataset:
        from mmnet.data import load_dataset

        dataset = load_dataset(
            args.dataset, _root(args.dataset, args.dataset_root, data_root), split=args.split, pairs=args.pairs
        )
        sources.append(SupervisedPairs(dataset, size, mean, std, args.max_kps, augment, args.seed))
    if args.csv:
        sources.append(
            SupervisedPairs(CsvPairs(args.csv, args.image_root), size, mean, std, args.max_kps, augment, args.seed)
        )
    synthetic = None
    if args.photos:
        folders = [Path(f) if Path(f).is_dir() else data_root / f for f in args.photos]
        synthetic = SyntheticPairs(
            folders, size, mean, std, n_points=args.max_kps, warp=WarpConfig(tps=args.tps), seed=args.seed
        )
    if not sources and synthetic is None:
        raise MMNetError("no training data: give --dataset, --csv and/or --photos")
    if synthetic is None:
        if len(sources) == 1:
            return sources[0]
        return _weighted(sources, args.source_weights or [1.0] * len(sources), args)
    if not sources:
        return synthetic
    if args.source_weights:
        return _weighted([*sources, synthetic], args.source_weights, args)
    ratio = 0.3 if args.synthetic_ratio is None else args.synthetic_ratio
    weights = [(1 - ratio) / len(sources)] * len(sources) + [ratio]
    length = args.epoch_length or int(sum(map(len, sources)) / max(1e-6, 1 - ratio))
    return MixedPairs([*sources, synthetic], weights, length=length, seed=args.seed)


def _weighted(sources: list[Any], weights: Sequence[float], args: argparse.Namespace) -> MixedPairs:
    if len(weights) != len(sources):
        raise MMNetError(f"--source-weights needs {len(sources)} values (one per given source), got {len(weights)}")
    return MixedPairs(
        sources, weights, length=args.epoch_length or sum(len(s) for s in sources[:-1] or sources), seed=args.seed
    )


def build_validator(args: argparse.Namespace) -> Any:
    """The `pck_validator` of the --val-* options (None without --val-dataset or --val-every)."""
    if not args.val_dataset or not args.val_every:
        return None
    from mmnet.data import load_dataset
    from mmnet.train.validate import pck_validator

    data_root = Path(args.data_root).expanduser() if args.data_root else default_data_root()
    datasets = []
    for i, name in enumerate(args.val_dataset):
        root = args.val_root[i] if i < len(args.val_root) else None
        pairs = args.val_pairs[i] if i < len(args.val_pairs) and args.val_pairs[i] != "-" else None
        datasets.append(load_dataset(name, _root(name, root, data_root), split=args.val_split, pairs=pairs))
    return pck_validator(datasets, limit=args.val_limit)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `train` subcommand (same flags as ``python -m mmnet.train``) to an argparse subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune an MMNet (see docs/training.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_parser(p)
    p.set_defaults(func=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    allocator.command_line_default()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run(args)


def command_line(args: argparse.Namespace) -> str:
    """The ``mmnet train ...`` command of `args`: every option that differs from its default, with its real flag
    (recorded in a release's config.json; pasted into a shell, it parses to the same options)."""
    words = ["mmnet", "train"]
    for action in build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        elif isinstance(value, bool):
            words += [flag, str(value).lower()]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _release_readout(args: argparse.Namespace, family: Any) -> dict[str, Any] | None:
    """The checked --release-readout (None: keep the model's own readout)."""
    if args.release_readout is None:
        return None
    try:
        readout = json.loads(args.release_readout)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"--release-readout must be a JSON object such as '{{\"level\": 2}}', got "
            f"{args.release_readout!r} ({exc.msg})"
        ) from None
    return family.check_readout(readout)


def _check_release_options(args: argparse.Namespace) -> None:
    """Release flags that would fail only after training fail now."""
    from mmnet.checks import check_writable_dir

    if args.release:
        check_writable_dir("--release", args.release)
    if args.release_best and not (args.val_dataset and args.val_every):
        raise InputError(
            "--release-best needs validation to pick the best weights: add --val-dataset NAME and "
            "--val-every N, or drop --release-best to release the final weights"
        )
    if (args.release_best or args.release_readout) and not args.release:
        raise InputError("--release-best and --release-readout shape a release: add --release DIR")


def build_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, its training family) from --init (released weights of any family) or a fresh --model."""
    from mmnet.train.families import architecture_of, family_for_architecture

    family = family_for_architecture(architecture_of(args.init) if args.init else args.model)
    overrides = {k: getattr(args, k) for k in ("channels", "levels") if getattr(args, k) is not None}
    if overrides and family.name != "mmnet":
        raise InputError(
            f"{' and '.join('--' + k for k in overrides)} shape an mmnet_<backbone> model, not "
            f"{args.init or args.model}; drop them"
        )
    if args.init:
        model = family.load_weights(args.init)
        for key, value in overrides.items():  # a fine-tuned model keeps the architecture of --init
            if getattr(model.config, key) != value:
                raise InputError(
                    f"--{key} {value} differs from the {key} of --init {args.init} "
                    f"({getattr(model.config, key)}): a fine-tuned model keeps its architecture; "
                    f"drop --{key}"
                )
        return model, family
    from mmnet.zoo import create_model

    return create_model(args.model, pretrained_backbone=not args.no_pretrained_backbone, **overrides), family


def release(args: argparse.Namespace, model: Any, family: Any, readout: dict[str, Any] | None, steps: int) -> None:
    """Write --release with the family's save function (fp16): the final (or best) weights, the readout of the
    model (--init's) unless --release-readout says otherwise, and the command that trained it."""
    final = family.load_weights(Path(args.out) / "best") if args.release_best else model
    family.save_weights(
        final,
        args.release,
        dtype=torch.float16,
        readout=readout,
        extra={"training": {"command": command_line(args), "steps": steps}},
    )
    print(f"released {args.release}")


def run(args: argparse.Namespace) -> int:
    """Run a parsed `train` command line."""
    argv = getattr(args, "argv", None) or sys.argv[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rank, _ = init_distributed()
        config = TrainConfig(
            **{k: getattr(args, k) for k in TrainConfig().to_dict() if k not in ("extra",) if hasattr(args, k)}
        )
        config.extra = {"argv": list(argv), "command": command_line(args)}
        _check_release_options(args)
        torch.manual_seed(config.seed)
        model, family = build_model(args)
        readout = _release_readout(args, family)
        size = tuple(args.size) if args.size else tuple(model.preprocess.size)
        data = build_data(args, size, model.preprocess.mean, model.preprocess.std)
        validate = build_validator(args)
        config.val_every = args.val_every
        trainer = Trainer(
            model, data, config, args.out, validate=validate, device=args.device, progress=not args.no_progress
        )
        result = trainer.fit(resume=None if args.resume == "none" else args.resume)
        if rank == 0:
            print(json.dumps(result))
            if args.release:
                release(args, model, family, readout, result["step"])
    except MMNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
