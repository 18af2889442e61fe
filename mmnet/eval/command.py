"""`mmnet eval`: PCK of one or more models on a benchmark folder, printed and optionally written to --out."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmnet.eval.pck import THRESHOLDS

DATASET_NAMES = ("pf-pascal", "pf-willow", "spair", "cub")


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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to an argparse subparsers object; its `func(args) -> int` runs it."""
    p = subparsers.add_parser(
        "eval", help="PCK of one or more models on PF-PASCAL, PF-WILLOW, SPair-71k or CUB",
        description="Evaluate keypoint transfer with PCK. Datasets are read from --root (never downloaded); "
                    "see docs/evaluation.md for layouts and protocols.")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default="test", help="trn, val or test (CUB sampling: also 'all'); default test")
    p.add_argument("--pairs", type=Path, help="pair list to use instead of the split's default")
    p.add_argument("--model", action="append", required=True, metavar="NAME_OR_PATH",
                   help="'rescale' (image-size baseline) or a pretrained name / folder; repeat to compare")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="default 0.05 0.1 0.15")
    p.add_argument("--threshold", choices=THRESHOLDS,
                   help="default per dataset: pf-pascal img, pf-willow bbox-kp, spair bbox, cub bbox")
    p.add_argument("--frame", type=parse_frame, default=None,
                   help="'original' (default) or HxW, e.g. 224x320 for the official MMNet resized frame")
    p.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--preset", choices=["default", "official"], help="readout preset of MMNet models")
    p.add_argument("--offline", action="store_true", help="load weights from the local cache only")
    p.add_argument("--out", type=Path, help="write results.json, results.csv, per_pair.csv, pck_curve.png here")
    p.add_argument("--spair-size", choices=["large", "small"], default="large", help="SPair-71k Layout size")
    p.add_argument("--num-pairs", type=int, default=1000, help="CUB without --pairs: pairs to sample")
    p.add_argument("--seed", type=int, default=0, help="CUB without --pairs: sampling seed")
    p.add_argument("--any-class", action="store_true", help="CUB without --pairs: pairs across species")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)
    return p


def load_matcher(name: str, args: argparse.Namespace) -> Any:
    """'rescale' -> the baseline; anything else -> `Matcher.from_pretrained`."""
    if name == "rescale":
        from mmnet.eval.baselines import RescaleMatcher

        return RescaleMatcher()
    from mmnet.matcher import Matcher

    return Matcher.from_pretrained(name, device=args.device, preset=args.preset, local_files_only=args.offline)


def run_eval(args: argparse.Namespace) -> int:
    from mmnet.data import load_dataset
    from mmnet.eval.evaluate import evaluate
    from mmnet.eval.results import write_csv, write_json, write_per_pair_csv

    extra: dict[str, Any] = {}
    if args.dataset == "spair":
        extra["size"] = args.spair_size
    elif args.dataset == "cub" and args.pairs is None:
        extra.update(n_pairs=args.num_pairs, seed=args.seed, same_class=not args.any_class)
    dataset = load_dataset(args.dataset, args.root, split=args.split, pairs=args.pairs, **extra)
    results = []
    for name in args.model:
        result = evaluate(load_matcher(name, args), dataset, alphas=args.alpha, threshold=args.threshold,
                          frame=args.frame, progress=not args.no_progress, limit=args.limit, name=name)
        print(result.table(), end="\n\n", flush=True)
        results.append(result)
    if len(results) > 1:
        print(comparison_table(results))
    if args.out:
        from mmnet.eval.plot import plot_pck_curves

        args.out.mkdir(parents=True, exist_ok=True)
        written = [write_json(results, args.out / "results.json"), write_csv(results, args.out / "results.csv"),
                   write_per_pair_csv(results, args.out / "per_pair.csv"),
                   plot_pck_curves(results, args.out / "pck_curve.png")]
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def comparison_table(results: list[Any]) -> str:
    """One line per model: per-pair PCK at each alpha."""
    alphas = results[0].alphas
    lines = [f"{'model':<40}" + "".join(f"{'PCK@' + format(a, 'g'):>10}" for a in alphas) + "   (per-pair mean)"]
    lines += [f"{r.model[:39]:<40}" + "".join(f"{v:>10.1f}" for v in r.pck()) for r in results]
    return "\n".join(lines)
