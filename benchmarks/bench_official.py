"""mmnet's sparse keypoint path vs the computation the official MMNet test runs, on CPU.

Rows (fcn_resnet101, one 224x320 pair, random weights: the numbers are about cost, not accuracy):

- official: what the official ``test.py`` computes per pair: all four levels, both directions (AB and BA), full
  4-D volumes with the coarse-to-fine accumulation in each direction, then the per-keypoint readout of C2_AB
  (bilinear blend of four source rows, hard argmax). Computed with mmnet's modules on the official schedule.
- mmnet forward: ``MMNet.forward``, all levels, AB only (BA is its transpose), full volumes.
- mmnet sparse: what ``Matcher(preset="official")`` runs: features, then only the correlation rows of the four
  source cells around each keypoint at level 2 and the coarser levels it accumulates, then the same readout.

Every row runs in a fresh subprocess. Time: median of ``--runs`` runs after warm-up, under inference_mode, end to
end and for the matching stage alone (everything after the features, which all rows share).
Memory: the peak RSS of the first end-to-end pass in the fresh process (VmHWM, reset through /proc/self/clear_refs
once the model is built) minus the RSS before it, i.e. the working memory on top of the weights. Weights are listed
apart: the official module also holds 243 M dead parameters, which the official row does not allocate here.

Usage: ``python benchmarks/bench_official.py [--runs 5] [--keypoints 20]``
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {
    "official": "official schedule: 4 levels, AB+BA full volumes",
    "forward": "mmnet MMNet.forward: 4 levels, AB full volumes",
    "sparse": "mmnet sparse keypoint path, level 2",
}
OFFICIAL_PARAMS = 295_957_297  # official fcn-resnet101 state dict, dead weights included (NOTES.md)
SIZE = (224, 320)


def _rss_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read())[1])
    except (OSError, TypeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(mode: str, runs: int, keypoints: int) -> dict:
    import torch

    import mmnet
    from mmnet.matching.geometry import argmax_readout, bilinear_cells, blend_rows, pixels_to_grid
    from mmnet.zoo.convert.mmnet import build_official_model

    torch.manual_seed(0)
    model = build_official_model("fcn-resnet101")  # random weights, official readout and input settings
    gen = torch.Generator().manual_seed(1)
    src, tgt = torch.randn(1, 3, *SIZE, generator=gen), torch.randn(1, 3, *SIZE, generator=gen)
    kps = torch.rand(keypoints, 2, generator=gen) * torch.tensor([SIZE[1] - 1, SIZE[0] - 1])
    level = 2

    def official_readout(volume: torch.Tensor) -> torch.Tensor:
        h, w, ht, wt = volume.shape[1:]
        rows = volume[0].reshape(h, w, ht * wt)
        preds = []
        for x, y in kps.tolist():  # one keypoint at a time, as the official predict_kps
            gx, gy = x * w / SIZE[1], y * h / SIZE[0]
            x0, y0 = int(gx), int(gy)
            fx, fy = gx - x0, gy - y0
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            row = (1 - fy) * ((1 - fx) * rows[y0, x0] + fx * rows[y0, x1]) + fy * (
                (1 - fx) * rows[y1, x0] + fx * rows[y1, x1]
            )
            idx = int(row.argmax())
            preds.append([(idx % wt) * SIZE[1] / wt, (idx // wt) * SIZE[0] / ht])
        return torch.tensor(preds)

    def match_official(src_f: list[torch.Tensor], tgt_f: list[torch.Tensor]) -> torch.Tensor:
        ab = model.complement([model.correlation(s, t) for s, t in zip(src_f, tgt_f, strict=True)])
        ba = model.complement([model.correlation(t, s) for s, t in zip(src_f, tgt_f, strict=True)])
        del ba  # computed and discarded, as in the official test
        return official_readout(ab[level])

    def match_forward(src_f: list[torch.Tensor], tgt_f: list[torch.Tensor]) -> torch.Tensor:
        return official_readout(
            model.complement([model.correlation(s, t) for s, t in zip(src_f, tgt_f, strict=True)])[level]
        )

    def match_sparse(src_f: list[torch.Tensor], tgt_f: list[torch.Tensor]) -> torch.Tensor:
        grid, tgrid = src_f[level].shape[-2:], tgt_f[level].shape[-2:]
        cells, weights = bilinear_cells(pixels_to_grid(kps[None], SIZE, grid, "corner"), grid)
        rows = model.correlation_rows(src_f, tgt_f, cells.flatten(1), level)[-1]
        xy, _ = argmax_readout(blend_rows(rows, weights))
        return xy[0] * torch.tensor([SIZE[1] / tgrid[1], SIZE[0] / tgrid[0]])

    match = {"official": match_official, "forward": match_forward, "sparse": match_sparse}[mode]
    times, match_times = [], []
    with torch.inference_mode():
        base = _rss_kib("VmRSS")  # weights built, nothing run yet
        exact_peak = _reset_peak()
        match(*model.pair_features(src, tgt))  # first pass: its peak is the working memory
        peak = _rss_kib("VmHWM")
        feats = model.pair_features(src, tgt)
        for _ in range(2):
            match(*feats)
        for _ in range(runs):  # the matching stage alone, on precomputed features
            start = time.perf_counter()
            match(*feats)
            match_times.append(1000 * (time.perf_counter() - start))
        del feats
        for _ in range(runs):  # end to end
            start = time.perf_counter()
            preds = match(*model.pair_features(src, tgt))
            times.append(1000 * (time.perf_counter() - start))
    params = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    return {
        "mode": mode,
        "ms": statistics.median(times),
        "ms_all": times,
        "match_ms": statistics.median(match_times),
        "peak_extra_mib": (peak - base) / 1024,
        "peak_exact": exact_peak,
        "rss_mib": peak / 1024,
        "params": params,
        "preds": preds.tolist(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mmnet": mmnet.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keypoints", type=int, default=20)
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.runs, args.keypoints)))
        return 0

    results = {}
    for mode in MODES:
        out = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                mode,
                "--runs",
                str(args.runs),
                "--keypoints",
                str(args.keypoints),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    first = results["official"]
    print(
        f"MMNet fcn_resnet101 on CPU (torch {first['torch']}, {first['threads']} threads, mmnet {first['mmnet']}): "
        f"one {SIZE[0]}x{SIZE[1]} pair, {args.keypoints} keypoints, RANDOM weights (cost only, not accuracy)"
    )
    print(
        f"time: median of {args.runs} runs after warm-up, end to end and for the matching stage alone (given the "
        "features); memory: peak RSS of the first pass above the RSS after building the model"
        + ("" if first["peak_exact"] else " (peak not resettable here: upper bound)")
    )
    header = (
        f"{'mode':<48} {'total ms':>9} {'x faster':>8} {'match ms':>9} {'x faster':>8} {'peak MiB':>9} "
        f"{'x less':>7} {'weights MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    for mode, label in MODES.items():
        r = results[mode]
        weights = OFFICIAL_PARAMS if mode == "official" else r["params"]
        print(
            f"{label:<48} {r['ms']:9.0f} {first['ms'] / r['ms']:8.2f} {r['match_ms']:9.1f} "
            f"{first['match_ms'] / r['match_ms']:8.1f} {r['peak_extra_mib']:9.0f} "
            f"{first['peak_extra_mib'] / max(r['peak_extra_mib'], 1e-6):7.2f} {4 * weights / 2**20:12.0f}"
        )
    same = [a == b for a, b in zip(first["preds"], results["sparse"]["preds"], strict=True)]
    print(f"sparse vs official predictions identical: {sum(same)}/{len(same)} keypoints")
    print(
        f"weights: official = the full official state dict ({OFFICIAL_PARAMS:,} fp32 values, 82 % dead); mmnet = "
        f"{first['params']:,} values"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
