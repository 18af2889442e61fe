"""The `mmnet` command: every subcommand (match, flow, models, download, eval, convert-official, convert-lpmflow,
scot-layers, train).

Every subcommand is an argparse subparser whose ``func(args) -> int`` runs it. Building the parser imports neither
torch nor timm (``mmnet --help`` is instant); each ``func`` imports what it needs. ``train`` takes its options
from `mmnet.train.cli`, loaded only when the command is ``train``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import DATASETS
from .errors import MMNetError
from .eval.pck import THRESHOLDS

if TYPE_CHECKING:
    from .matching.base import BaseMatcher

DEFAULT_MODEL = "mmnet_efficientnet_lite2.cub_photos"
DTYPES = ("fp16", "fp32")
TRAIN_HELP = "train or fine-tune an MMNet (see docs/training.md)"


def parse_keypoints(text: str) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` or a path to a JSON list of [x, y] -> list of (x, y)."""
    path = Path(text)
    if path.suffix == ".json":
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"keypoint file {text!r} not found")
        try:
            points = [(float(x), float(y)) for x, y in json.loads(path.read_text())]
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"{text} must hold a JSON list of [x, y] pairs ({exc})") from None
    else:
        try:
            points = [(float(x), float(y)) for x, y in (p.split(",") for p in text.split(";") if p.strip())]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"keypoints must look like 'x,y;x,y' (got {text!r})") from exc
    if not points:
        raise argparse.ArgumentTypeError(f"no keypoints in {text!r}; give at least one as 'x,y'")
    return points


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _check_outputs(args: argparse.Namespace, *names: str) -> None:
    """Output files checked for a writable folder before any model is loaded or anything is computed."""
    from .checks import check_writable_file

    for name in names:
        if getattr(args, name, None):
            check_writable_file(f"--{name}", getattr(args, name))


def parse_frame(text: str) -> tuple[int, int] | None:
    """'original' -> None; '224x320' or '224,320' -> (224, 320) as (height, width)."""
    if text.lower() in ("original", "none", "orig"):
        return None
    try:
        h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame must be 'original' or HEIGHTxWIDTH like 224x320, got {text!r}") \
            from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"frame sides must be positive, got {text!r}")
    return h, w


def _matcher(args: argparse.Namespace) -> BaseMatcher:
    from .zoo import create_matcher

    return create_matcher(args.model, device=args.device, preset=args.preset, local_files_only=args.offline)


def _cmd_match(args: argparse.Namespace) -> int:
    _check_outputs(args, "json", "out")
    matcher = _matcher(args)
    result = matcher.match(args.source, args.target, args.kpts)
    rows = [{"source": list(s), "target": [round(float(v), 2) for v in t], "score": round(float(c), 4)}
            for s, t, c in zip(args.kpts, result.keypoints.tolist(), result.scores.tolist(), strict=True)]
    for row in rows:
        print(f"({row['source'][0]:7.1f}, {row['source'][1]:7.1f}) -> "
              f"({row['target'][0]:7.1f}, {row['target'][1]:7.1f})  score {row['score']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "matches": rows}, indent=2) + "\n")
    if args.out:
        from .viz import plot_matches, save

        save(plot_matches(args.source, args.target, args.kpts, result.keypoints, result.scores), args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_flow(args: argparse.Namespace) -> int:
    _check_outputs(args, "npy", "out")
    import numpy as np

    matcher = _matcher(args)
    result = matcher.flow(args.source, args.target)
    print(f"flow {tuple(result.flow.shape)} (dx, dy per source pixel), mean score {result.scores.mean():.3f}")
    if args.npy:
        np.save(args.npy, result.flow.numpy())
        print(f"wrote {args.npy}")
    if args.out:
        from .viz import plot_warp, save

        save(plot_warp(args.source, args.target, matcher.warp(args.source, args.target)), args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .zoo import get_pretrained_cfg, list_models
    from .zoo.hub import released_dir

    print("architectures:")
    for name in list_models(args.filter):
        print(f"  {name}")
    print("pretrained weights:")
    for name in list_models(args.filter, pretrained=True):
        cfg = get_pretrained_cfg(name)
        if cfg.local_dir:
            folder = released_dir(cfg.local_dir)
            where = str(folder) if folder.exists() else f"{folder} (not there yet)"
        else:
            where = f"hub {cfg.hub_id}"
        print(f"  {name}  [{where}; licence {cfg.license}]")
        if cfg.notes and not (cfg.local_dir and released_dir(cfg.local_dir).exists()):
            print(f"      {cfg.notes}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .zoo._factory import resolve_files

    config, _, _ = resolve_files(args.name, revision=args.revision, cache_dir=args.cache_dir)
    print(f"{args.name}: {config.parent}")
    return 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"name, hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--preset", choices=["default", "official"], default=None, help="readout preset")
    parser.add_argument("--offline", action="store_true", help="never touch the network (hub cache only)")


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval.command import run_eval

    return run_eval(args)


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    if args.family == "cats":
        from .zoo.convert.cats import convert_cats

        convert_cats(args.checkpoint, args.out, dtype=dtype)
        return 0
    from .zoo.convert.mmnet import convert_official

    convert_official(args.checkpoint, args.backbone, args.out, dtype=dtype)
    return 0


def _cmd_convert_lpmflow(args: argparse.Namespace) -> int:
    import torch

    from .zoo.convert.lpmflow import convert_lpmflow

    convert_lpmflow(args.source, args.out, dtype={"fp32": torch.float32, "fp16": torch.float16}[args.dtype])
    return 0


def _cmd_scot_layers(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .eval.scot_layers import LayerScorer, select_layers
    from .matching.scot import ScotMatcher

    torch.manual_seed(0)
    dataset = load_dataset(args.dataset, args.root, split=args.split, pairs=args.pairs)
    settings = {k: getattr(args, k) for k in ("iterations", "long_side", "exponent", "box_size", "saliency")
                if getattr(args, k) is not None}
    matcher = ScotMatcher(args.backbone, device=args.device, **settings)
    if args.score:
        scorer = LayerScorer(matcher, dataset, args.n_pairs)
        for text in args.score:
            scorer([int(v) for v in text.split(",")])
        return 0
    best, score, _ = select_layers(matcher, dataset, args.n_pairs, args.beam, args.max_depth, args.candidates)
    print(f"best layers {' '.join(map(str, best))}  PCK@0.1 {score:.2f}  "
          f"({', '.join(matcher.layer_names[i] for i in best)})")
    return 0


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval", help="PCK of one or more models on PF-PASCAL, PF-WILLOW, SPair-71k or CUB",
        description="Evaluate keypoint transfer with PCK. Datasets are read from --root (never downloaded); "
                    "see docs/evaluation.md for layouts and protocols.")
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default="test", help="trn, val or test (CUB sampling: also 'all'); default test")
    p.add_argument("--pairs", type=Path, help="pair list to use instead of the split's default")
    p.add_argument("--model", action="append", required=True, metavar="NAME_OR_PATH",
                   help="'rescale' (image-size baseline) or a registered name / folder; repeat to compare")
    p.add_argument("--alpha", type=positive_float, nargs="+", default=[0.05, 0.1, 0.15], help="default 0.05 0.1 0.15")
    p.add_argument("--threshold", choices=THRESHOLDS,
                   help="default per dataset: pf-pascal img, pf-willow bbox-kp, spair bbox, cub bbox")
    p.add_argument("--frame", type=parse_frame, default=None,
                   help="'original' (default) or HxW, e.g. 224x320 for the official MMNet resized frame")
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N pairs (N >= 1)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--preset", choices=["default", "official"], help="readout preset of MMNet models")
    p.add_argument("--offline", action="store_true", help="load weights from the local cache only")
    p.add_argument("--out", type=Path, help="write results.json, results.csv, per_pair.csv, pck_curve.png here")
    p.add_argument("--spair-size", choices=["large", "small"], default="large", help="SPair-71k Layout size")
    p.add_argument("--num-pairs", type=positive_int, default=1000, help="CUB without --pairs: pairs to sample")
    p.add_argument("--seed", type=non_negative_int, default=0, help="CUB without --pairs: sampling seed")
    p.add_argument("--any-class", action="store_true", help="CUB without --pairs: pairs across species")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)


def _add_convert(sub: Any) -> None:
    p = sub.add_parser(
        "convert-official", help="convert an official MMNet .pth checkpoint into an mmnet checkpoint folder",
        description="Map the authors' MMNet checkpoint (e.g. ckp_pascal_fcnres101.pth) onto mmnet, drop its dead "
                    "weights, and write model.safetensors + config.json with the official readout.")
    p.add_argument("checkpoint", help="the official .pth file (MMNet), or the folder holding model_best.pth + "
                   "args.pkl (CATs, --family cats)")
    p.add_argument("--family", default="mmnet", choices=["mmnet", "cats"],
                   help="whose checkpoint: mmnet (default) or cats (docs/cats.md)")
    p.add_argument("--backbone", default="auto", help="MMNet only: backbone as the official code spells it: "
                   "resnet101, resnet50, resnext-101 or fcn-resnet101 (default: read it off the keys)")
    p.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="storage dtype (default fp32)")
    p.set_defaults(func=_cmd_convert)


def _add_convert_lpmflow(sub: Any) -> None:
    p = sub.add_parser(
        "convert-lpmflow", help="convert an official LPMFlow checkpoint (model_best.pth + args.pkl)",
        description="Map the authors' LPMFlow checkpoint onto mmnet (weights_only loading, args.pkl through a "
                    "restricted unpickler, aliases checked, dead keys dropped) and write model.safetensors + "
                    "config.json with the official readout (docs/lpmflow.md).")
    p.add_argument("source", help="the official folder (model_best.pth + args.pkl) or the .pth file")
    p.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="storage dtype (default fp32)")
    p.set_defaults(func=_cmd_convert_lpmflow)


def _add_scot_layers(sub: Any) -> None:
    p = sub.add_parser("scot-layers", help="beam search for a SCOT layer set on validation pairs",
                       description="HPF's beam search over SCOT layer ids, scored by PCK@0.1 (docs/benchmarks.md).")
    p.add_argument("--backbone", default="efficientnet_lite2")
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--pairs", help="pair list (e.g. the CUB training pairs)")
    p.add_argument("--n-pairs", type=positive_int, default=50)
    p.add_argument("--beam", type=positive_int, default=4)
    p.add_argument("--max-depth", type=positive_int, default=8)
    p.add_argument("--candidates", type=int, nargs="+")
    p.add_argument("--iterations", type=positive_int, help="Sinkhorn updates (max; default 100)")
    p.add_argument("--long-side", type=positive_int, help="resize target of the longer side (default 300)")
    p.add_argument("--exponent", type=positive_float, help="power of the rescaled OT plan (default 2)")
    p.add_argument("--box-size", type=positive_float, help="transfer box side, resized pixels (default 27)")
    p.add_argument("--saliency", choices=["cam", "norm", "uniform"])
    p.add_argument("--score", type=str, nargs="+", metavar="IDS",
                   help="only score these comma-separated layer sets (e.g. 13,14,19 3,12) instead of searching")
    p.add_argument("--device")
    p.set_defaults(func=_cmd_scot_layers)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; the `train` options are loaded only when `command` is ``"train"``."""
    from .version import __version__

    parser = argparse.ArgumentParser(prog="mmnet", description="Semantic correspondence with MMNet.")
    parser.add_argument("--version", action="version", version=f"mmnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    match = sub.add_parser("match", help="transfer keypoints from a source image to a target image")
    match.add_argument("source")
    match.add_argument("target")
    match.add_argument("--kpts", required=True, type=parse_keypoints, help="'x,y;x,y' or a JSON file of [x, y]")
    match.add_argument("--out", help="write a side-by-side picture of the matches (PNG)")
    match.add_argument("--json", help="write the matches as JSON")
    _add_model_args(match)
    match.set_defaults(func=_cmd_match)

    flow = sub.add_parser("flow", help="dense flow from every source pixel to the target")
    flow.add_argument("source")
    flow.add_argument("target")
    flow.add_argument("--npy", help="write the (2, H, W) flow as .npy")
    flow.add_argument("--out", help="write the source warped onto the target (PNG)")
    _add_model_args(flow)
    flow.set_defaults(func=_cmd_flow)

    models = sub.add_parser("models", help="list architectures and pretrained weights")
    models.add_argument("filter", nargs="?", default="*", help="glob pattern, e.g. '*lite*'")
    models.set_defaults(func=_cmd_models)

    download = sub.add_parser("download", help="fetch weights into the hub cache for offline use")
    download.add_argument("name")
    download.add_argument("--revision")
    download.add_argument("--cache-dir")
    download.set_defaults(func=_cmd_download)

    _add_eval(sub)
    _add_convert(sub)
    _add_convert_lpmflow(sub)
    _add_scot_layers(sub)
    if command == "train":
        from .train.cli import add_parser

        add_parser(sub)
    else:
        sub.add_parser("train", help=TRAIN_HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMNetError as exc:
        print(f"mmnet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
