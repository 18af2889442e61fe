"""Milliseconds per pair and peak memory of keypoint transfer and dense flow, sparse rows vs full 4-D volumes.

    python benchmarks/bench_match.py [--sizes 224x320 480x640] [--backbones efficientnet_lite2 resnet101]

Each case runs in a fresh subprocess (so peak memory is its own): build the model (random weights: speed does
not depend on them), warm up, then time `--repeats` runs and print the median. Peak memory is the growth of the
process's peak RSS over its RSS after the warm-up input was prepared (CPU), or torch's peak allocation (CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from timing import measure

import mmnet
from mmnet.matching.geometry import bilinear_cells, blend_rows, pixels_to_grid, soft_argmax_readout

MODES = ("keypoints-sparse", "keypoints-full", "flow-chunked", "flow-full")
NUM_KEYPOINTS = 20


def _full_volume_keypoints(matcher: mmnet.Matcher, src: torch.Tensor, tgt: torch.Tensor, kpts: torch.Tensor) -> None:
    """Keypoint transfer the way the official code does it: build every full volume, then read rows."""
    from mmnet.matching.images import prepare

    size = matcher.preprocess.size
    volume = matcher.model(prepare(src[None], matcher.preprocess), prepare(tgt[None], matcher.preprocess))[-1]
    grid = volume.shape[1:3]
    cells, weights = bilinear_cells(pixels_to_grid(pixels_to_grid(kpts[None], src.shape[1:], size), size, grid), grid)
    soft_argmax_readout(blend_rows(volume.flatten(1, 2)[0, cells.flatten()][None], weights))


def _full_volume_flow(matcher: mmnet.Matcher, src: torch.Tensor, tgt: torch.Tensor) -> None:
    from mmnet.matching.images import prepare

    volume = matcher.model(prepare(src[None], matcher.preprocess), prepare(tgt[None], matcher.preprocess))[-1]
    soft_argmax_readout(volume.flatten(1, 2))


def run_case(backbone: str, size: tuple[int, int], mode: str, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    matcher = mmnet.Matcher(mmnet.create_model(f"mmnet_{backbone}"), device=device, input_size=size)
    src, tgt = torch.rand(3, *size), torch.rand(3, *size)
    kpts = torch.rand(NUM_KEYPOINTS, 2) * torch.tensor([size[1] - 1, size[0] - 1])
    work = {
        "keypoints-sparse": lambda: matcher.match(src, tgt, kpts),
        "keypoints-full": lambda: _full_volume_keypoints(matcher, src.to(device), tgt.to(device), kpts.to(device)),
        "flow-chunked": lambda: matcher.flow(src, tgt),
        "flow-full": lambda: _full_volume_flow(matcher, src.to(device), tgt.to(device)),
    }[mode]
    with torch.inference_mode():
        matcher.match(src, tgt, kpts[:1])  # warm-up: allocator, backbone
        ms, peak_mb = measure(work, repeats, device)
    return {"ms": ms, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["224x320", "480x640"])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite2", "resnet101"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        backbone, size, mode = args.case.split(":")
        h, w = map(int, size.split("x"))
        print(json.dumps(run_case(backbone, (h, w), mode, args.repeats, args.device)))
        return
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{NUM_KEYPOINTS} keypoints, median of {args.repeats} runs; random weights")
    print(f"{'backbone':<20}{'input':<9}" + "".join(f"{m:>22}" for m in MODES) + f"{'kp speed-up':>13}{'flow mem':>10}")
    for backbone in args.backbones:
        for size in args.sizes:
            cells = []
            for mode in MODES:
                out = subprocess.run([sys.executable, __file__, "--case", f"{backbone}:{size}:{mode}", "--repeats",
                                      str(args.repeats), "--device", args.device], capture_output=True, text=True)
                cells.append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None)
            text = [f"{c['ms']:9.0f} ms {c['peak_mb']:6.0f} MB" if c else f"{'failed':>22}" for c in cells]
            speed = f"{cells[1]['ms'] / cells[0]['ms']:.1f}x" if cells[0] and cells[1] else "-"
            memory = f"{cells[3]['peak_mb'] / max(cells[2]['peak_mb'], 1):.1f}x" if cells[2] and cells[3] else "-"
            print(f"{backbone:<20}{size:<9}" + "".join(f"{t:>22}" for t in text) + f"{speed:>13}{memory:>10}")


if __name__ == "__main__":
    main()
