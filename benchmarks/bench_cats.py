"""CATs-R101 forward vs its backbone alone vs MMNet-R101, one 256x256 pair, side by side.

Rows (random weights: the numbers are about cost, not accuracy):

- ``cats``: ``CATs.forward`` of ``cats_resnet101`` (SPair hyperpixels, depth 1, the official configuration): taps of
  both images, correlation, mutual-NN filter, two aggregation passes, soft-argmax.
- ``cats backbone``: its `HyperpixelBackbone` alone on both images (ResNet-101 up to layer3.22, taps resized).
- ``mmnet``: ``MMNet.forward`` of ``mmnet_resnet101`` on the same pair (all four levels, full 4-D volumes).

The three run interleaved in one process (round r runs every row once, in a rotating order), so load from other
processes hits them alike; time is the median over rounds, under inference_mode, as wall time and as process CPU
time (the steadier figure on a shared machine). Memory: the peak RSS of each call
minus the RSS before it (freed heap returned with malloc_trim, then VmHWM reset through /proc/self/clear_refs before
every call), median over rounds, i.e. working memory on top of the weights, which are listed apart (Linux only).

Usage: ``python benchmarks/bench_cats.py [--rounds 7] [--threads 1] [--json out.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import statistics
import time
from pathlib import Path


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read())[1])


def _reset_peak() -> None:
    """Give freed heap memory back to the OS (else the next call reuses it unseen), then reset VmHWM to VmRSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mmnet.models.cats import CATs, CatsConfig
    from mmnet.models.mmnet import MMNet, MMNetConfig

    torch.manual_seed(0)
    cats = CATs(CatsConfig(backbone="resnet101")).eval()
    mmnet = MMNet(MMNetConfig(backbone="resnet101")).eval()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 1, 3, args.size, args.size, generator=gen)
    rows = {
        "cats": lambda: cats(a, b),
        "cats backbone": lambda: (cats.backbone(a), cats.backbone(b)),
        "mmnet": lambda: mmnet(a, b),
    }
    params = {
        "cats": sum(p.numel() for p in cats.parameters()),
        "cats backbone": sum(p.numel() for p in cats.backbone.parameters()),
        "mmnet": sum(p.numel() for p in mmnet.parameters()),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    peaks: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    with torch.inference_mode():
        for r in range(args.warmup + args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                _reset_peak()
                base = _kib("VmRSS")
                start, start_cpu = time.perf_counter(), time.process_time()
                rows[name]()
                elapsed = (time.perf_counter() - start) * 1000
                if r >= args.warmup:
                    times[name].append(elapsed)
                    cpu[name].append((time.process_time() - start_cpu) * 1000)
                    peaks[name].append((_kib("VmHWM") - base) / 1024)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), {os.cpu_count()} CPUs visible, {args.size}x{args.size} "
        f"pair, {args.rounds} interleaved rounds after {args.warmup} warm-up"
    )
    print(f"{'row':<15}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'cpu ms':>9}{'peak MiB':>10}{'params':>13}")
    results = {}
    for name in rows:
        results[name] = {
            "median_ms": statistics.median(times[name]),
            "min_ms": min(times[name]),
            "max_ms": max(times[name]),
            "cpu_ms": statistics.median(cpu[name]),
            "peak_mib": statistics.median(peaks[name]),
            "params": params[name],
        }
        res = results[name]
        print(
            f"{name:<15}{res['median_ms']:>11.0f}{res['min_ms']:>9.0f}{res['max_ms']:>9.0f}{res['cpu_ms']:>9.0f}"
            f"{res['peak_mib']:>10.0f}{res['params']:>13,}"
        )
    head = results["cats"]["median_ms"] - results["cats backbone"]["median_ms"]
    print(f"cats head (forward - backbone): {head:.0f} ms")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"threads": torch.get_num_threads(), "size": args.size, "rounds": args.rounds, "rows": results},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
