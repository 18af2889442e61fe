"""The `mmnet` command: every subcommand (match, flow, models, download, eval, convert-official, convert-lpmflow,
scot-layers, train).

Every subcommand is an argparse subparser whose ``func(args) -> int`` runs it. Building the parser imports neither
torch nor timm (``mmnet --help`` is instant); each ``func`` imports what it needs. ``train`` takes its options
from `mmnet.train.cli`, loaded only when the command is ``train``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import allocator
from .defaults import DEFAULT_WEIGHTS
from .errors import InputError, MMNetError

if TYPE_CHECKING:
    from .matching.base import BaseMatcher

DTYPES = ("fp16", "fp32")
TRAIN_HELP = "train or fine-tune an MMNet (see docs/training.md)"
#: Kept in step with `mmnet.data.DATASETS` and `mmnet.eval.pck.THRESHOLDS` (tested), so that building the
#: parser imports neither numpy nor torch.
DATASET_NAMES = ("pf-pascal", "pf-willow", "spair", "cub")
THRESHOLD_NAMES = ("img", "bbox", "bbox-kp")
PRESET_HELP = (
    "readout: leave out for the checkpoint's own (what it was validated with); finest: MMNet's finest "
    "level; exact: CATs/LPMFlow at exact positions; official: the authors' test"
)
PRESET_CHOICES = ("finest", "exact", "official", "default")
THREADS_HELP = (
    "CPU threads for torch (default: $MMNET_THREADS, else torch's default); 1 is often fastest on a busy machine"
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples printed as written; every option's help line ends with its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default in (None, False, argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
            or (isinstance(default, list) and not default)
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})".replace("%", "%%") if "%" not in text else text


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _numbers(text: str) -> list[tuple[float, float]]:
    points = []
    for part in text.split(";"):
        if not part.strip():
            continue
        values = part.replace(" ", "").split(",")
        if len(values) != 2:
            raise ValueError(part)
        points.append((float(values[0]), float(values[1])))
    return points


def _pairs(data: Any, where: str) -> list[tuple[float, float]]:
    try:
        return [(float(x), float(y)) for x, y in data]
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{where} must be a JSON list of [x, y] pairs ({exc})") from None


def parse_keypoints(text: str) -> list[tuple[float, float]] | dict[str, list[tuple[float, float]]]:
    """``--kpts``: ``"x,y;x,y"`` numbers, or a JSON file in either layout of ``examples/``.

    - ``[[x, y], ...]`` (``examples/keypoints_astronaut.json``) -> a list of (x, y);
    - ``{"<image file name>": [[x, y], ...], ...}`` (``examples/keypoints.json``; other keys such as ``"about"``
      and ``"names"`` are ignored) -> a dict; the points of the source image are picked by its file name
      (`keypoints_for`).
    """
    path = Path(text)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"keypoint file {text!r} not found")
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(
                f"{text} must hold a JSON list of [x, y] pairs, or an object mapping "
                f"image file names to such lists; it is not valid JSON ({exc})"
            ) from None
        if isinstance(data, dict):
            named = {
                k: _pairs(v, f"{text}[{k!r}]")
                for k, v in data.items()
                if isinstance(v, list) and v and all(isinstance(p, list) for p in v)
            }
            if not named:
                raise argparse.ArgumentTypeError(
                    f"{text} must hold a JSON list of [x, y] pairs, or an object mapping image file names to such "
                    "lists (see examples/keypoints.json)"
                )
            return named
        points = _pairs(data, text)
    else:
        try:
            points = _numbers(text)
        except ValueError:
            if any(c.isalpha() for c in text):
                raise argparse.ArgumentTypeError(
                    "--kpts takes pixel numbers, each point as x,y and points separated by ';' (for example "
                    f"91,98;136,98), or a .json file; {text!r} has letters in it"
                ) from None
            raise argparse.ArgumentTypeError(
                f"keypoints must be pairs of numbers separated by ';', each pair 'x,y' (for example 91,98;136,98); "
                f"got {text!r}"
            ) from None
    if not points:
        raise argparse.ArgumentTypeError(f"no keypoints in {text!r}; give at least one pair, for example 91,98")
    return points


def keypoints_for(
    points: list[tuple[float, float]] | dict[str, list[tuple[float, float]]], source: str
) -> list[tuple[float, float]]:
    """The source image's points: a list as it is; from a name -> points object, the entry of the source's file
    name (`InputError` naming the entries there are)."""
    if isinstance(points, list):
        return points
    name = Path(source).name
    if name not in points:
        raise InputError(
            f"--kpts: the keypoint file has points for {', '.join(sorted(points))}, none for the source "
            f"image {name!r} (entries are picked by the source's file name)"
        )
    if not points[name]:
        raise InputError(f"--kpts: the keypoint file has an empty list for {name!r}")
    return points[name]


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
        raise argparse.ArgumentTypeError(
            f"frame must be 'original' or HEIGHTxWIDTH like 224x320, got {text!r}"
        ) from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"frame sides must be positive, got {text!r}")
    return h, w


def _prepare(args: argparse.Namespace, outputs: Sequence[str] = (), figure: str | None = None) -> None:
    """Everything that can fail cheaply, before any model loads: output folders, matplotlib for a picture, the
    device, then the CPU thread count."""
    _check_outputs(args, *outputs)
    if figure and getattr(args, figure, None) and importlib.util.find_spec("matplotlib") is None:
        raise InputError(
            f"--{figure} draws a picture and needs matplotlib: pip install 'mmnet[viz]' (or leave out --{figure})"
        )
    import torch

    if getattr(args, "device", None) is not None:
        from .matching.base import resolve_device

        resolve_device(args.device)
    threads = getattr(args, "threads", None)
    if threads is None and os.environ.get("MMNET_THREADS"):
        try:
            threads = positive_int(os.environ["MMNET_THREADS"])
        except argparse.ArgumentTypeError as exc:
            raise InputError(f"MMNET_THREADS {exc}") from None
    if threads:
        torch.set_num_threads(threads)


def _matcher(args: argparse.Namespace) -> BaseMatcher:
    from .zoo import create_matcher

    return create_matcher(args.model, device=args.device, preset=args.preset, local_files_only=args.offline)


def _cmd_match(args: argparse.Namespace) -> int:
    points = keypoints_for(args.kpts, args.source)
    _prepare(args, ("json", "out"), figure="out")
    matcher = _matcher(args)
    result = matcher.match(args.source, args.target, points)
    rows: list[dict[str, Any]] = [
        {"source": list(s), "target": [round(float(v), 2) for v in t], "score": round(float(c), 4)}
        for s, t, c in zip(points, result.keypoints.tolist(), result.scores.tolist(), strict=True)
    ]
    for i, row in enumerate(rows, 1):
        print(
            f"{i:>2}  ({row['source'][0]:7.1f}, {row['source'][1]:7.1f}) -> "
            f"({row['target'][0]:7.1f}, {row['target'][1]:7.1f})  score {row['score']:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "matches": rows}, indent=2) + "\n")
    if args.out:
        from .viz import plot_matches, save

        save(plot_matches(args.source, args.target, points, result.keypoints, result.scores, numbered=True), args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_flow(args: argparse.Namespace) -> int:
    _prepare(args, ("npy", "out"), figure="out")
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


#: What each kind of `mmnet models` row is.
KINDS = {
    "trained": "trained weights, ready to match",
    "backbone-only": "training-free matcher on an ImageNet backbone, ready to match",
    "conversion": "the authors' weights: download and convert once (mmnet models --details NAME says how)",
    "retired": "superseded weights no longer shipped (mmnet models --details NAME says how to restore them)",
    "architecture": "a network to train (create_model / torch.hub, pretrained=False); no weights of its own",
}


def model_rows() -> list[tuple[str, str, str]]:
    """(name, kind, what) for every name `from_pretrained`, `create_matcher`, `create_model` and torch.hub
    accept: registered weights (``arch.tag``), training-free matchers, and architectures to train."""
    from .zoo import get_pretrained_cfg, list_models
    from .zoo._registry import get_model_entry, pretrained_tags
    from .zoo.hub import released_dir

    rows = []
    weights = list_models(pretrained=True)
    for name in weights:
        cfg = get_pretrained_cfg(name)
        entry = get_model_entry(name)
        on_disk = cfg.local_dir is not None and released_dir(cfg.local_dir).exists()
        bundled = cfg.local_dir is not None and not Path(cfg.local_dir).is_absolute()
        if on_disk:
            where = "bundled with the package" if bundled else "converted, on disk"
        else:
            where = f"hub {cfg.hub_id}" if cfg.hub_id else "no longer bundled" if bundled else "not converted yet"
        kind = "trained" if cfg.hub_id is not None or on_disk else "retired" if bundled else "conversion"
        rows.append((name, kind, f"{entry.description}; {where}; licence {cfg.license}"))
    for arch in list_models():
        entry = get_model_entry(arch)
        if entry.model is None:
            rows.append((arch, "backbone-only", entry.description))
            continue
        tagged = pretrained_tags(arch)
        what = entry.description + (f"; as a matcher name: {tagged[0]}" if tagged else "")
        rows.append((arch, "architecture", what))
    return rows


def _cmd_models(args: argparse.Namespace) -> int:
    import fnmatch

    rows = [r for r in model_rows() if fnmatch.fnmatch(r[0], args.filter) and (not args.kind or r[1] in args.kind)]
    if not rows:
        print(f"no model matches {args.filter!r}" + (f" of kind {', '.join(args.kind)}" if args.kind else ""))
        return 1
    if args.details:
        from .zoo import get_pretrained_cfg
        from .zoo.hub import released_dir

        for name, kind, what in rows:
            print(f"{name}\n  kind: {kind} ({KINDS[kind]})\n  what: {what}")
            if "." in name:
                cfg = get_pretrained_cfg(name)
                where = f"hub {cfg.hub_id}" if cfg.hub_id else str(released_dir(cfg.local_dir or ""))
                print(f"  weights: {where}")
                if cfg.metrics:
                    print("  metrics: " + ", ".join(f"{k} {v}" for k, v in cfg.metrics.items()))
                if cfg.notes:
                    print(f"  notes: {cfg.notes}")
        return 0
    order = list(KINDS)
    rows.sort(key=lambda r: (order.index(r[1]), r[0]))
    width = max(len(r[0]) for r in rows)
    print(f"{'name':<{width}}  {'kind':<13}  what")
    for name, kind, what in rows:
        print(f"{name:<{width}}  {kind:<13}  {what}")
    print("\nkinds: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items() if any(r[1] == k for r in rows)))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .zoo._factory import resolve_files

    config, _, _ = resolve_files(args.name, revision=args.revision, cache_dir=args.cache_dir)
    print(f"{args.name}: {config.parent}")
    return 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_WEIGHTS,
        help="registered name (mmnet models), Hugging Face hub repo id or checkpoint folder",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or mps (default: cuda when available)")
    parser.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        default=None,
        help=PRESET_HELP + "; default: deprecated name of finest/exact",
    )
    parser.add_argument("--offline", action="store_true", help="never touch the network: hub cache only")
    parser.add_argument("--threads", type=positive_int, default=None, help=THREADS_HELP)


def _cmd_eval(args: argparse.Namespace) -> int:
    _prepare(args, figure="out")
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

    _prepare(args)
    torch.manual_seed(0)
    dataset = load_dataset(args.dataset, args.root, split=args.split, pairs=args.pairs)
    settings = {
        k: getattr(args, k)
        for k in ("iterations", "long_side", "exponent", "box_size", "saliency")
        if getattr(args, k) is not None
    }
    matcher = ScotMatcher(args.backbone, device=args.device, **settings)
    if args.score:
        scorer = LayerScorer(matcher, dataset, args.n_pairs)
        for text in args.score:
            scorer([int(v) for v in text.split(",")])
        return 0
    best, score, _ = select_layers(matcher, dataset, args.n_pairs, args.beam, args.max_depth, args.candidates)
    print(
        f"best layers {' '.join(map(str, best))}  PCK@0.1 {score:.2f}  "
        f"({', '.join(matcher.layer_names[i] for i in best)})"
    )
    return 0


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="PCK of one or more models on PF-PASCAL, PF-WILLOW, SPair-71k or CUB",
        formatter_class=HelpFormatter,
        description="Evaluate keypoint transfer with PCK (per-pair mean). Datasets are read from --root (never "
        "downloaded); see docs/evaluation.md for layouts and protocols.",
        epilog=_examples(
            "mmnet eval --dataset pf-willow --root ../shared/data/pf-willow-dev --model rescale "
            "--model scot_efficientnet_lite2",
            "mmnet eval --dataset cub --root ../shared/data/cub-200-2011-cls001-050 --num-pairs 200 --threads 1",
            "mmnet eval --dataset pf-pascal --root PF-PASCAL --model FOLDER --preset official --frame 224x320 "
            "--out results/",
        ),
    )
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="benchmark layout of --root")
    p.add_argument("--root", required=True, type=Path, help="the dataset's folder")
    p.add_argument("--split", default="test", help="trn, val or test (CUB sampling: also all)")
    p.add_argument("--pairs", type=Path, help="pair list to use instead of the split's own")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME_OR_PATH",
        help="rescale (image-size baseline), a registered name, hub id or folder; repeat to compare",
    )
    p.add_argument(
        "--alpha",
        type=positive_float,
        nargs="+",
        default=[0.05, 0.1, 0.15],
        help="PCK thresholds as a fraction of the threshold size",
    )
    p.add_argument(
        "--threshold",
        choices=THRESHOLD_NAMES,
        help="threshold size (default per dataset: pf-pascal img, pf-willow bbox-kp, spair bbox, cub bbox)",
    )
    p.add_argument(
        "--frame",
        type=parse_frame,
        default=None,
        help="where PCK is measured: original (default) or HxW, e.g. 224x320 (the official MMNet frame)",
    )
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N pairs")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="pairs per model call; above 1 (or with --workers) images are decoded in a DataLoader",
    )
    p.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader processes decoding images")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: cuda when available)")
    p.add_argument("--preset", choices=PRESET_CHOICES, help=PRESET_HELP)
    p.add_argument("--offline", action="store_true", help="load weights from the local hub cache only")
    p.add_argument("--threads", type=positive_int, default=None, help=THREADS_HELP)
    p.add_argument(
        "--out",
        type=Path,
        help="folder for results.json, results.csv, per_pair.csv and pck_curve.png (needs matplotlib)",
    )
    p.add_argument("--spair-size", choices=["large", "small"], default="large", help="SPair-71k image layout size")
    p.add_argument("--num-pairs", type=positive_int, default=1000, help="CUB without --pairs: pairs to sample")
    p.add_argument("--seed", type=non_negative_int, default=0, help="CUB without --pairs: sampling seed")
    p.add_argument("--any-class", action="store_true", help="CUB without --pairs: pairs across species")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)


def _add_convert(sub: Any) -> None:
    p = sub.add_parser(
        "convert-official",
        help="convert an official MMNet or CATs checkpoint into an mmnet checkpoint folder",
        formatter_class=HelpFormatter,
        description="Map the authors' checkpoint onto mmnet, drop its dead weights, and write model.safetensors + "
        "config.json with the official readout (docs/official-checkpoints.md, docs/cats.md).",
        epilog=_examples(
            "mmnet convert-official ckp_pascal_fcnres101.pth --out ~/.cache/mmnet/official/"
            "mmnet_fcn_resnet101.pfpascal_official",
            "mmnet convert-official ckp_spair_fcnres101.pth --backbone fcn-resnet101 --dtype fp16 --out spair_mmnet",
            "mmnet convert-official --family cats spair --out ~/.cache/mmnet/official/cats_resnet101.spair_official",
        ),
    )
    p.add_argument(
        "checkpoint", help="the official .pth file (MMNet), or the folder holding model_best.pth + args.pkl (CATs)"
    )
    p.add_argument("--family", default="mmnet", choices=["mmnet", "cats"], help="whose checkpoint it is")
    p.add_argument(
        "--backbone",
        default="auto",
        help="MMNet only: backbone as the official code spells it: "
        "resnet101, resnet50, resnext-101 or fcn-resnet101; auto reads it off the keys",
    )
    p.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="storage dtype")
    p.set_defaults(func=_cmd_convert)


def _add_convert_lpmflow(sub: Any) -> None:
    p = sub.add_parser(
        "convert-lpmflow",
        help="convert an official LPMFlow checkpoint (model_best.pth + args.pkl)",
        formatter_class=HelpFormatter,
        description="Map the authors' LPMFlow checkpoint onto mmnet (weights_only loading, args.pkl through a "
        "restricted unpickler, aliases checked, dead keys dropped) and write model.safetensors + "
        "config.json with the official readout (docs/lpmflow.md).",
        epilog=_examples(
            "mmnet convert-lpmflow spair --out ~/.cache/mmnet/official/lpmflow_vit_base_patch16.spair_official",
            "mmnet convert-lpmflow pfpascal/model_best.pth --dtype fp16 --out lpmflow_pfpascal",
        ),
    )
    p.add_argument("source", help="the official folder (model_best.pth + args.pkl) or the .pth file")
    p.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="storage dtype")
    p.set_defaults(func=_cmd_convert_lpmflow)


def _add_scot_layers(sub: Any) -> None:
    p = sub.add_parser(
        "scot-layers",
        help="beam search for a SCOT layer set on validation pairs",
        formatter_class=HelpFormatter,
        description="HPF's beam search over SCOT layer ids, scored by PCK@0.1 (docs/benchmarks.md).",
        epilog=_examples(
            "mmnet scot-layers --dataset pf-willow --root ../shared/data/pf-willow-dev --n-pairs 50",
            "mmnet scot-layers --dataset cub --root CUB --pairs trn_pairs.csv --score 13,14,19 3,12",
        ),
    )
    p.add_argument("--backbone", default="efficientnet_lite2", help="registered backbone (mmnet models)")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="benchmark layout of --root")
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument("--split", default="val", help="trn, val or test")
    p.add_argument("--pairs", help="pair list (e.g. the CUB training pairs)")
    p.add_argument("--n-pairs", type=positive_int, default=50, help="pairs scored per layer set")
    p.add_argument("--beam", type=positive_int, default=4, help="layer sets kept per search step")
    p.add_argument("--max-depth", type=positive_int, default=8, help="most layers in a set")
    p.add_argument("--candidates", type=int, nargs="+", help="layer ids to search over (default: all)")
    p.add_argument("--iterations", type=positive_int, help="Sinkhorn updates (max; default 100)")
    p.add_argument("--long-side", type=positive_int, help="resize target of the longer side (default 300)")
    p.add_argument("--exponent", type=positive_float, help="power of the rescaled OT plan (default 2)")
    p.add_argument("--box-size", type=positive_float, help="transfer box side, resized pixels (default 27)")
    p.add_argument("--saliency", choices=["cam", "norm", "uniform"], help="saliency prior (default cam)")
    p.add_argument(
        "--score",
        type=str,
        nargs="+",
        metavar="IDS",
        help="only score these comma-separated layer sets (e.g. 13,14,19 3,12) instead of searching",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: cuda when available)")
    p.set_defaults(func=_cmd_scot_layers)


TRAIN_EXAMPLES = _examples(
    "mmnet train --dataset cub --pairs trn_pairs_cub_cls001-050_sameclass_seed0.csv --photos photos "
    "--synthetic-ratio 0.3 --steps 2000 --out runs/cub",
    "mmnet train --csv my_pairs.csv --image-root my_images --init mmnet_efficientnet_lite2.cub_photos "
    "--steps 500 --out runs/mine --release my_weights",
    "torchrun --nproc-per-node 2 -m mmnet.train --dataset pf-pascal --steps 20000 --out runs/pascal",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; the `train` options are loaded only when `command` is ``"train"``."""
    from .version import __version__

    parser = argparse.ArgumentParser(
        prog="mmnet",
        formatter_class=HelpFormatter,
        description="Semantic correspondence (MMNet, SCOT, CATs, LPMFlow): transfer keypoints and dense flow "
        "between two images, evaluate PCK, train. `mmnet COMMAND --help` for each command.",
        epilog=_examples(
            "mmnet match examples/astronaut.jpg examples/grace_hopper.jpg --kpts examples/keypoints.json "
            "--out match.png",
            "mmnet models --kind trained",
            "mmnet eval --dataset pf-willow --root ../shared/data/pf-willow-dev --model scot_efficientnet_lite2",
        ),
    )
    parser.add_argument("--version", action="version", version=f"mmnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    match = sub.add_parser(
        "match",
        help="transfer keypoints from a source image to a target image",
        formatter_class=HelpFormatter,
        description="Transfer keypoints from SOURCE to TARGET: prints each point's match and a score in [0, 1], "
        "numbered like the picture --out draws.",
        epilog=_examples(
            "mmnet match examples/astronaut.jpg examples/grace_hopper.jpg --kpts examples/keypoints.json "
            "--out match.png",
            "mmnet match a.jpg b.jpg --kpts '91,98;136,98' --json matches.json --threads 1",
            "mmnet match a.jpg b.jpg --kpts points.json --model scot_efficientnet_lite2 --device cpu",
        ),
    )
    match.add_argument("source", help="image holding the points (file path)")
    match.add_argument("target", help="image to find them in (file path)")
    match.add_argument(
        "--kpts",
        required=True,
        type=parse_keypoints,
        help="source points: x,y;x,y (pixels), a JSON list of [x, y], or a JSON object of image "
        "file name -> list (examples/keypoints.json; the source's entry is used)",
    )
    match.add_argument("--out", help="write a side-by-side picture of the numbered matches (PNG; needs matplotlib)")
    match.add_argument("--json", help="write the matches as JSON")
    _add_model_args(match)
    match.set_defaults(func=_cmd_match)

    flow = sub.add_parser(
        "flow",
        help="dense flow from every source pixel to the target",
        formatter_class=HelpFormatter,
        description="Dense source-to-target flow at the source's resolution: target_xy = source_xy + flow[:, y, x] "
        "(docs/conventions.md).",
        epilog=_examples(
            "mmnet flow examples/astronaut.jpg examples/grace_hopper.jpg --npy flow.npy --out warp.png",
            "mmnet flow a.jpg b.jpg --model scot_efficientnet_lite2 --npy flow.npy --threads 1",
        ),
    )
    flow.add_argument("source", help="image the flow starts from (file path)")
    flow.add_argument("target", help="image the flow points into (file path)")
    flow.add_argument("--npy", help="write the (2, H, W) flow (dx, dy) as .npy")
    flow.add_argument(
        "--out", help="write source, target and the source warped onto the target (PNG; needs matplotlib)"
    )
    _add_model_args(flow)
    flow.set_defaults(func=_cmd_flow)

    models = sub.add_parser(
        "models",
        help="list every model name, what it is and whether it is ready",
        formatter_class=HelpFormatter,
        description="Every name that Matcher.from_pretrained / mmnet.create_matcher, mmnet.create_model and "
        "torch.hub accept (a hub repo id or a checkpoint folder works too), with its kind:\n"
        + "\n".join(f"  {k:<13} {v}" for k, v in KINDS.items()),
        epilog=_examples(
            "mmnet models",
            "mmnet models '*lite2*' --kind trained backbone-only",
            "mmnet models cats_resnet101.spair_official --details",
        ),
    )
    models.add_argument("filter", nargs="?", default="*", help="glob pattern on the name, e.g. '*lite*'")
    models.add_argument("--kind", nargs="+", choices=list(KINDS), help="only these kinds")
    models.add_argument(
        "--details", action="store_true", help="one block per model: where its weights are, metrics, how to get them"
    )
    models.set_defaults(func=_cmd_models)

    download = sub.add_parser(
        "download",
        help="fetch weights into the hub cache for offline use",
        formatter_class=HelpFormatter,
        description="Fetch the weights of a registered name or Hugging Face hub repo id into the local cache, so "
        "that later runs work with --offline.",
        epilog=_examples(
            "mmnet download mmnet_efficientnet_lite2.cub_photos",
            "mmnet download someone/their-mmnet --revision v1 --cache-dir /data/hub",
        ),
    )
    download.add_argument("name", help="registered weights (mmnet models --kind trained) or hub repo id")
    download.add_argument("--revision", help="hub branch, tag or commit (default: the registered one, or main)")
    download.add_argument("--cache-dir", help="hub cache folder (default: the Hugging Face default)")
    download.set_defaults(func=_cmd_download)

    _add_eval(sub)
    _add_convert(sub)
    _add_convert_lpmflow(sub)
    _add_scot_layers(sub)
    if command == "train":
        from .train.cli import add_parser

        train = add_parser(sub)
        train.formatter_class = HelpFormatter
        train.description = (
            "Train or fine-tune an MMNet on benchmark pairs, your own CSV of keypoint pairs and/or "
            "synthetic warps of photos (docs/training.md). Same options as python -m mmnet.train."
        )
        train.epilog = TRAIN_EXAMPLES
    else:
        sub.add_parser("train", help=TRAIN_HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
    if "func" not in args:  # `mmnet train` is a placeholder until its options are loaded; cannot happen otherwise
        return 2
    allocator.command_line_default()
    try:
        return int(args.func(args) or 0)
    except MMNetError as exc:
        print(f"mmnet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
