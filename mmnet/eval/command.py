"""`mmnet eval` (options in `mmnet.cli`): PCK of one or more models on a benchmark folder, printed and optionally
written to --out."""

from __future__ import annotations

import argparse
from typing import Any


def load_matcher(name: str, args: argparse.Namespace) -> Any:
    """'rescale' -> the baseline; anything else -> `mmnet.create_matcher` (any registered family)."""
    if name == "rescale":
        from mmnet.eval.baselines import RescaleMatcher

        return RescaleMatcher()
    from mmnet.zoo import create_matcher

    return create_matcher(name, device=args.device, preset=args.preset, local_files_only=args.offline)


def run_eval(args: argparse.Namespace) -> int:
    from mmnet.data import load_dataset
    from mmnet.eval.evaluate import evaluate
    from mmnet.eval.results import write_csv, write_json, write_per_pair_csv

    if args.out:  # before any work: a long evaluation must not fail at its last step
        from mmnet.checks import check_writable_dir

        check_writable_dir("--out", args.out)
    extra: dict[str, Any] = {}
    if args.dataset == "spair":
        extra["size"] = args.spair_size
    elif args.dataset == "cub" and args.pairs is None:
        extra.update(n_pairs=args.num_pairs, seed=args.seed, same_class=not args.any_class)
    dataset = load_dataset(args.dataset, args.root, split=args.split, pairs=args.pairs, **extra)
    results = []
    for name in args.model:
        result = evaluate(
            load_matcher(name, args),
            dataset,
            alphas=args.alpha,
            threshold=args.threshold,
            frame=args.frame,
            progress=not args.no_progress,
            limit=args.limit,
            name=name,
            batch_size=getattr(args, "batch_size", 1),
            num_workers=getattr(args, "workers", 0),
        )
        print(result.table(), end="\n\n", flush=True)
        results.append(result)
    if len(results) > 1:
        print(comparison_table(results))
    if args.out:
        from mmnet.eval.plot import plot_pck_curves

        args.out.mkdir(parents=True, exist_ok=True)
        written = [
            write_json(results, args.out / "results.json"),
            write_csv(results, args.out / "results.csv"),
            write_per_pair_csv(results, args.out / "per_pair.csv"),
            plot_pck_curves(results, args.out / "pck_curve.png"),
        ]
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def comparison_table(results: list[Any]) -> str:
    """One line per model: per-pair PCK at each alpha."""
    alphas = results[0].alphas
    lines = [f"{'model':<40}" + "".join(f"{'PCK@' + format(a, 'g'):>10}" for a in alphas) + "   (per-pair mean)"]
    lines += [f"{r.model[:39]:<40}" + "".join(f"{v:>10.1f}" for v in r.pck()) for r in results]
    return "\n".join(lines)
