"""Training throughput on CPU: sparse loss (mmnet.loss, correlation rows at keypoints only) vs a dense loss
that builds the full 4-D correlation volumes (MMNet.forward) and applies the same BCE to rows gathered from them.

    python benchmarks/bench_train.py                 # Lite2 + ResNet-101, 224x320, batch 2, 15 keypoints
    python benchmarks/bench_train.py --backbones resnet18 --size 112 160 --steps 3

Backbones have RANDOM weights (speed does not depend on them; no accuracy is measured). Every configuration
runs in its own subprocess so that its peak resident memory (ru_maxrss, minus the process's size after the
model was built) is its own. A step is forward + backward + SGD step with the whole network training;
the median over `--steps` timed steps after one warm-up step is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from mmnet.matching.geometry import bilinear_cells, blend_rows, pixels_to_grid
from mmnet.train.loss import mmnet_loss, soft_target, softmax_bce
from mmnet.zoo import create_model


def dense_loss(model, src, tgt, src_kps, tgt_kps, valid, convention="center"):
    """The MMNet loss from the full complemented volumes: same targets and BCE as `mmnet.loss`."""
    volumes = model(src, tgt)  # coarse to fine, (B, hs, ws, ht, wt)
    valid = valid.to(src_kps.dtype)
    total = src_kps.new_zeros(())
    for volume in volumes:
        b = volume.shape[0]
        for vol, a_kps, b_kps, a_img, b_img in (
                (volume, src_kps, tgt_kps, src.shape[-2:], tgt.shape[-2:]),
                (volume.permute(0, 3, 4, 1, 2), tgt_kps, src_kps, tgt.shape[-2:], src.shape[-2:])):
            a_grid, b_grid = vol.shape[1:3], vol.shape[3:5]
            cells, weights = bilinear_cells(pixels_to_grid(a_kps, a_img, a_grid, convention), a_grid)
            flat = vol.reshape(b, a_grid[0] * a_grid[1], *b_grid)
            rows = torch.gather(flat, 1, cells.flatten(1)[..., None, None].expand(-1, -1, *b_grid))
            target = soft_target(pixels_to_grid(b_kps, b_img, b_grid, convention), b_grid)
            total = total + (softmax_bce(blend_rows(rows, weights), target) * valid).sum() / len(src_kps)
    return total


def _inputs(batch: int, size: tuple[int, int], n_kps: int):
    g = torch.Generator().manual_seed(0)
    h, w = size
    src, tgt = torch.randn(batch, 3, h, w, generator=g), torch.randn(batch, 3, h, w, generator=g)
    scale = torch.tensor([w - 1.0, h - 1.0])
    kps = [torch.rand(batch, n_kps, 2, generator=g) * scale for _ in range(2)]
    return src, tgt, kps[0], kps[1], torch.ones(batch, n_kps, dtype=torch.bool)


def run_one(backbone: str, loss_name: str, batch: int, size: tuple[int, int], n_kps: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_model(f"mmnet_{backbone}", pretrained_backbone=False).train()
    inputs = _inputs(batch, size, n_kps)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    loss_fn = mmnet_loss if loss_name == "sparse" else dense_loss
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, value = [], 0.0
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = loss_fn(model, *inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
        else:
            value = float(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = statistics.median(times)
    return {"backbone": backbone, "loss": loss_name, "step_s": step, "pairs_per_s": batch / step,
            "peak_mib": (peak - base) / 1024, "first_loss": value}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite2", "resnet101"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, nargs=2, default=(224, 320))
    p.add_argument("--kps", type=int, default=15)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--single", nargs=2, metavar=("BACKBONE", "LOSS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.single:
        print(json.dumps(run_one(args.single[0], args.single[1], args.batch, tuple(args.size), args.kps,
                                 args.steps)))
        return
    common = ["--batch", str(args.batch), "--size", *map(str, args.size), "--kps", str(args.kps),
              "--steps", str(args.steps), "--threads", str(args.threads)]
    print(f"CPU, {args.threads} thread(s), torch {torch.__version__}, input {args.size[0]}x{args.size[1]}, "
          f"batch {args.batch} pairs, {args.kps} keypoints, random weights, median of {args.steps} steps")
    print(f"{'backbone':<20}{'loss':<8}{'s/step':>9}{'pairs/s':>9}{'peak MiB':>10}{'loss value':>13}")
    results = {}
    for backbone in args.backbones:
        for loss_name in ("sparse", "dense"):
            out = subprocess.run([sys.executable, __file__, "--single", backbone, loss_name, *common],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[backbone, loss_name] = r
            print(f"{backbone:<20}{loss_name:<8}{r['step_s']:>9.2f}{r['pairs_per_s']:>9.2f}{r['peak_mib']:>10.0f}"
                  f"{r['first_loss']:>13.2f}", flush=True)
    print("\nratios dense / sparse (time, memory) and loss agreement:")
    for backbone in args.backbones:
        s, d = results[backbone, "sparse"], results[backbone, "dense"]
        agree = abs(s["first_loss"] - d["first_loss"]) / max(abs(s["first_loss"]), 1e-9)
        memory = d["peak_mib"] / max(s["peak_mib"], 1)
        print(f"{backbone:<20} time x{d['step_s'] / s['step_s']:.2f}  memory x{memory:.2f}"
              f"  relative loss difference {agree:.1e}")


if __name__ == "__main__":
    main()
