"""Milliseconds per pair and peak memory of SCOT keypoint transfer: one Sinkhorn update (the released code) vs
converged (marginal error <= tol, at most 100 updates), at the default 300 px long side.

    python benchmarks/bench_scot.py [--device cpu] [--repeats 3] [--threads 1]

Each case runs in a fresh subprocess (so peak memory is its own) on the example pair astronaut.jpg ->
grace_hopper.jpg with 20 keypoints: build the matcher, warm up once, time `--repeats` runs and print the median.
Peak memory is the growth of the process's peak RSS over its RSS after the warm-up (CPU; the warm-up already
holds one pair's buffers, so this is what a further pair adds beyond them, a lower bound), or torch's peak
allocation (CUDA). EfficientNet-Lite2 uses its ImageNet weights; ResNet-101 has random weights (speed only,
uniform masses instead of a CAM).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from timing import measure

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASES = [  # (label, backbone, layers or None for the default, pretrained)
    ("efficientnet_lite2 default layers", "efficientnet_lite2", None, True),
    ("efficientnet_lite2 + stride-4 block 0", "efficientnet_lite2", "0,13,14,19", True),
    ("resnet101 (random weights) ref. layers", "resnet101", None, False),
]


def run_case(backbone: str, layers: str | None, pretrained: bool, iterations: int, repeats: int, device: str) -> dict:
    import mmnet.models.scot.pipeline as pipeline
    from mmnet.matching.scot import ScotMatcher

    torch.manual_seed(0)
    used = []
    solve = pipeline.sinkhorn

    def counting(*args, **kwargs):
        res = solve(*args, **kwargs)
        used.append(res.iterations)
        return res

    pipeline.sinkhorn = counting
    ids = None if layers is None else [int(v) for v in layers.split(",")]
    matcher = ScotMatcher(backbone, ids, pretrained=pretrained, device=device, iterations=iterations)
    src, tgt = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"
    kpts = torch.rand(20, 2) * 400
    matcher.match(src, tgt, kpts)  # warm-up
    ms, peak = measure(lambda: matcher.match(src, tgt, kpts), repeats, device)
    return {"ms": ms, "peak_mib": peak, "sinkhorn_updates": used[-1], "layers": list(matcher.config.layers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        backbone, layers, pretrained, iterations = json.loads(args.case)
        print(json.dumps(run_case(backbone, layers, pretrained, iterations, args.repeats, args.device)))
        return 0
    print(
        f"SCOT keypoint transfer, 300 px long side, {args.device}, {args.threads} thread(s), median of "
        f"{args.repeats}; peak = extra {'CUDA allocation' if args.device.startswith('cuda') else 'RSS'} MiB"
    )
    print(f"{'case':<40}{'layers':<18}{'1 update: ms':>14}{'peak':>8}{'converged: ms':>15}{'peak':>8}{'updates':>9}")
    for label, backbone, layers, pretrained in CASES:
        row = []
        for iterations in (1, 100):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--device",
                    args.device,
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                    "--case",
                    json.dumps([backbone, layers, pretrained, iterations]),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row.append(json.loads(out.stdout.strip().splitlines()[-1]))
        one, conv = row
        ids = ",".join(map(str, one["layers"]))
        print(
            f"{label:<40}{ids:<18}{one['ms']:>14.0f}{one['peak_mib']:>8.0f}{conv['ms']:>15.0f}"
            f"{conv['peak_mib']:>8.0f}{conv['sinkhorn_updates']:>9}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
