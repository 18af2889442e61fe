"""The optimal-transport readout (``method="ot"``) against the checkpoint's plain readout: PCK of every setting on
validation sets, and ms per pair of the plain and one OT readout, timed interleaved pair by pair.

PCK is `mmnet.eval.evaluate` of a `Matcher` per setting; every setting reuses each image pair's features (the
network output up to the readout level, computed once per pair and cached in memory), which changes no number:
`mmnet eval --model <folder>` with the setting in the folder's config.json gives the same PCK.

    OMP_NUM_THREADS=1 python benchmarks/bench_readout_ot.py \\
        --set pf-willow /work/shared/data/pf-willow-dev \\
        --set cub /work/shared/data/cub-200-2011-cls001-050 \\
              ~/.cache/mmnet/runs/splits/trn_pairs_cub_cls001-050_sameclass_seed0_val.csv \\
        --time-pairs 40
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from dataclasses import asdict
from typing import Any

import torch

import mmnet
from mmnet.data import load_dataset
from mmnet.eval.evaluate import evaluate

#: The settings tried (name -> readout fields over the checkpoint's readout); "plain" is the checkpoint's own.
SETTINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "ot": {"method": "ot"},  # epsilon 1, 100 iterations, exponent 1, uniform masses, no Hough
    "ot eps0.25": {"method": "ot", "ot_epsilon": 0.25},
    "ot eps4 p4": {"method": "ot", "ot_epsilon": 4.0, "ot_exponent": 4.0},
    "ot 1 iteration": {"method": "ot", "ot_iterations": 1},
    "ot confidence": {"method": "ot", "ot_masses": "confidence"},
    "ot hough": {"method": "ot", "ot_hough": True},
    "ot hough p2": {"method": "ot", "ot_hough": True, "ot_exponent": 2.0},
}


class FeatureCache:
    """Wraps `MMNet.pair_features` with a memo keyed by the input tensors' bytes."""

    def __init__(self, model: Any) -> None:
        self.inner, self.memo = model.pair_features, {}

    def __call__(self, src: torch.Tensor, tgt: torch.Tensor, up_to: int = -1, batched: bool = True) -> Any:
        key = (
            hashlib.sha1(src.cpu().numpy().tobytes()).hexdigest(),
            hashlib.sha1(tgt.cpu().numpy().tobytes()).hexdigest(),
            up_to,
        )
        if key not in self.memo:
            self.memo[key] = self.inner(src, tgt, up_to, batched)
        return self.memo[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mmnet_efficientnet_lite2.cub_photos")
    parser.add_argument(
        "--set",
        nargs="+",
        action="append",
        required=True,
        metavar="DATASET ROOT [PAIRS]",
        help="a dataset name, its folder and optionally a pair list; repeat",
    )
    parser.add_argument(
        "--settings",
        nargs="*",
        default=list(SETTINGS),
        choices=list(SETTINGS),
        help="settings whose PCK is measured (default all; none: timing only)",
    )
    parser.add_argument(
        "--time-settings",
        nargs="+",
        default=["plain", "ot", "ot hough"],
        choices=list(SETTINGS),
        help="settings timed on the first set, in turn on each pair (the order rotates)",
    )
    parser.add_argument("--time-pairs", type=int, default=40, help="pairs timed interleaved (0: no timing)")
    parser.add_argument("--limit", type=int, help="first N pairs of each set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = mmnet.from_pretrained(args.model)
    model.pair_features = FeatureCache(model)
    matchers = {name: mmnet.Matcher(model, device="cpu", **SETTINGS[name]) for name in args.settings}
    print("the checkpoint's readout:", asdict(mmnet.Matcher(model, device="cpu").readout))
    rows = {}
    for spec in args.set:
        name, root, pairs = spec[0], spec[1], spec[2] if len(spec) > 2 else None
        dataset = load_dataset(name, root, pairs=pairs)
        for setting, matcher in matchers.items():
            result = evaluate(matcher, dataset, alphas=(0.05, 0.1), progress=False, limit=args.limit, name=setting)
            rows.setdefault(setting, {})[name] = result.pck()
            print(f"{setting:<24} {name:<10} PCK@0.05 {result.pck()[0]:.2f}  PCK@0.1 {result.pck()[1]:.2f}", flush=True)
    if rows:
        print("\n| setting | " + " | ".join(f"{s[0]} PCK@0.05 | {s[0]} PCK@0.1" for s in args.set) + " |")
    for setting, by_set in rows.items():
        print(f"| {setting} | " + " | ".join(f"{by_set[s[0]][0]:.1f} | {by_set[s[0]][1]:.1f}" for s in args.set) + " |")
    if args.time_pairs:
        model.pair_features = model.pair_features.inner
        timed = {name: mmnet.Matcher(model, device="cpu", **SETTINGS[name]) for name in args.time_settings}
        first = args.set[0]
        dataset = load_dataset(first[0], first[1], pairs=first[2] if len(first) > 2 else None)
        times: dict[str, list[float]] = {name: [] for name in timed}
        for i in range(min(args.time_pairs, len(dataset))):
            src, tgt, rec = dataset.load(i)
            kps = rec.src_kps[rec.valid]
            order = list(timed.items())
            for label, matcher in order[i % len(order) :] + order[: i % len(order)]:
                start = time.perf_counter()
                matcher.match(src, tgt, kps)
                times[label].append((time.perf_counter() - start) * 1000)
        for label, values in times.items():
            print(
                f"{label:<24} median {statistics.median(values):.0f} ms/pair, mean {statistics.mean(values):.0f} "
                f"over {len(values)} pairs of {first[0]} (interleaved)"
            )


if __name__ == "__main__":
    main()
