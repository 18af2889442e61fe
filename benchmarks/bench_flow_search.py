"""Dense flow, exact search vs coarse-to-fine: accuracy on PF-WILLOW and speed at large inputs, in one run.

    python benchmarks/bench_flow_search.py                       # PF-WILLOW under $MMNET_DATA (../shared/data)
    python benchmarks/bench_flow_search.py --limit 20 --speed-sizes 480x640

Accuracy: the released Lite2 (`mmnet_efficientnet_lite2`) computes the dense flow of each `pf-willow-dev` pair
with each search. Coarse-to-fine needs a per-row readout, so both searches read with soft-argmax in an 11-cell
window (the model card's equal-scoring alternative to the released `ot` readout, shown as well). The flow read at
the pixel of every source keypoint is scored as a keypoint transfer (PCK, per-pair mean, the dataset's bbox-kp
threshold), next to the matcher's own `match`, and each flow is compared pixel by pixel with the exact one.
Speed: the same weights, each --speed-sizes as the network input, the searches interleaved, medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

import mmnet
from mmnet.data import load_dataset
from mmnet.eval.evaluate import evaluate
from mmnet.train.pairs import default_data_root

WEIGHTS = "mmnet_efficientnet_lite2"
PER_ROW = {"method": "softargmax", "window": 11}


class Transfer(NamedTuple):
    keypoints: torch.Tensor


class FlowAsTransfer:
    """A keypoint matcher that reads its answer from `matcher.flow` at each keypoint's pixel, and records the
    flows it computed (for the pixel-by-pixel comparison) and their times."""

    def __init__(self, matcher: mmnet.Matcher) -> None:
        self.matcher = matcher
        self.flows: list[torch.Tensor] = []
        self.seconds: list[float] = []

    def match(self, source: Any, target: Any, keypoints: Any) -> Transfer:
        start = time.perf_counter()
        flow = self.matcher.flow(source, target).flow
        self.seconds.append(time.perf_counter() - start)
        self.flows.append(flow)
        points = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
        h, w = flow.shape[-2:]
        x = points[:, 0].round().long().clamp(0, w - 1)
        y = points[:, 1].round().long().clamp(0, h - 1)
        return Transfer(points + flow[:, y, x].T)


def accuracy(root: Path, limit: int, radii: list[int]) -> None:
    dataset = load_dataset("pf-willow", root)
    released = mmnet.Matcher.from_pretrained(WEIGHTS, device="cpu")
    exact = mmnet.Matcher(released.model, device="cpu", **PER_ROW)
    searches = {"exact": FlowAsTransfer(exact)}
    for r in radii:
        fast = mmnet.Matcher(released.model, device="cpu", flow_search="coarse-to-fine", search_radius=r, **PER_ROW)
        searches[f"coarse-to-fine r={r}"] = FlowAsTransfer(fast)
    n = min(limit, len(dataset))
    print(f"\n== accuracy: {WEIGHTS}, PF-WILLOW ({root.name}), first {n} pairs, readout level 2 ==")
    print(f"  {'prediction':<40}{'PCK@0.05':>9}{'PCK@0.1':>9}{'PCK@0.15':>9}{'s / pair':>10}  flow vs exact")
    for name, matcher in (("match, released readout (ot)", released), ("match, soft-argmax", exact)):
        result = evaluate(matcher, dataset, limit=n, progress=False)
        print(f"  {name:<40}" + "".join(f"{v:9.1f}" for v in result.pck()))
    for name, search in searches.items():
        result = evaluate(search, dataset, limit=n, progress=False)
        gap = torch.cat(
            [(f - e).norm(dim=0).flatten() for f, e in zip(search.flows, searches["exact"].flows, strict=True)]
        )
        vs = "" if name == "exact" else f"mean {gap.mean():.1f} px, {(gap > 1).float().mean():.0%} of pixels > 1 px"
        print(
            f"  {'flow, soft-argmax, ' + name:<40}"
            + "".join(f"{v:9.1f}" for v in result.pck())
            + f"{statistics.median(search.seconds):10.2f}  {vs}",
            flush=True,
        )


def speed(sizes: list[tuple[int, int]], radii: list[int], repeats: int) -> None:
    print(f"\n== speed: dense flow of one pair, {WEIGHTS}, soft-argmax, median of {repeats} interleaved ==")
    model = mmnet.Matcher.from_pretrained(WEIGHTS, device="cpu").model
    g = torch.Generator().manual_seed(0)
    for size in sizes:
        searches = {"exact": mmnet.Matcher(model, device="cpu", input_size=size, **PER_ROW)}
        for r in radii:
            searches[f"r={r}"] = mmnet.Matcher(
                model, device="cpu", input_size=size, flow_search="coarse-to-fine", search_radius=r, **PER_ROW
            )
        src, tgt = torch.rand(3, *size, generator=g), torch.rand(3, *size, generator=g)
        times: dict[str, list[float]] = {name: [] for name in searches}
        with torch.inference_mode():
            for _ in range(repeats):
                for name, matcher in searches.items():
                    start = time.perf_counter()
                    matcher.flow(src, tgt)
                    times[name].append(time.perf_counter() - start)
        t = {name: statistics.median(v) for name, v in times.items()}
        fast = "   ".join(
            f"coarse-to-fine {name} {t[name]:6.2f} s ({t['exact'] / t[name]:.1f}x)"
            for name in searches
            if name != "exact"
        )
        print(f"  {size[0]}x{size[1]:<6} exact {t['exact']:6.2f} s   {fast}", flush=True)


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="the pf-willow-dev folder (default: $MMNET_DATA/pf-willow-dev)")
    p.add_argument("--limit", type=int, default=100, help="pairs scored (default: %(default)s)")
    p.add_argument("--radii", type=int, nargs="+", default=[3, 6], help="coarse-to-fine search radii (cells)")
    p.add_argument("--speed-sizes", type=_size, nargs="+", default=[(480, 640), (960, 1280)])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root or default_data_root() / "pf-willow-dev"
    print(
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, glibc malloc defaults, {time.strftime('%Y-%m-%d')}"
    )
    if not root.is_dir():
        sys.exit(f"no PF-WILLOW folder at {root}: pass --root or set MMNET_DATA")
    accuracy(root, args.limit, args.radii)
    if args.speed_sizes:
        speed(args.speed_sizes, args.radii, args.repeats)


if __name__ == "__main__":
    main()
