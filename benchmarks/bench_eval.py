"""`mmnet eval` throughput: the plain loop vs DataLoader workers and batched model calls, interleaved in one run.

    python benchmarks/bench_eval.py                 # PF-WILLOW under $MMNET_DATA (../shared/data), 100 pairs
    python benchmarks/bench_eval.py --limit 24 --rounds 3

Each round runs `mmnet.eval.evaluate` once per setting (plain loop; one worker; one worker and batches of 8) with
the released Lite2 on the same pairs; pairs/s are medians over rounds, and the scores must agree (they are
printed). Glibc's malloc as the process found it (the command line would also keep freed memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import mmnet
from mmnet.data import load_dataset
from mmnet.eval.evaluate import evaluate
from mmnet.train.pairs import default_data_root

SETTINGS = {
    "plain loop": {"batch_size": 1, "num_workers": 0},
    "1 worker": {"batch_size": 1, "num_workers": 1},
    "1 worker, batch 8": {"batch_size": 8, "num_workers": 1},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="the pf-willow-dev folder (default: $MMNET_DATA/pf-willow-dev)")
    p.add_argument("--model", default="mmnet_efficientnet_lite2")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root or default_data_root() / "pf-willow-dev"
    if not root.is_dir():
        sys.exit(f"no PF-WILLOW folder at {root}: pass --root or set MMNET_DATA")
    dataset = load_dataset("pf-willow", root)
    matcher = mmnet.Matcher.from_pretrained(args.model, device="cpu")
    n = min(args.limit, len(dataset))
    print(
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {args.model}, PF-WILLOW ({root.name}) "
        f"first {n} pairs, median of {args.rounds} interleaved rounds, {time.strftime('%Y-%m-%d')}"
    )
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    scores: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, setting in SETTINGS.items():
            start = time.perf_counter()
            result = evaluate(matcher, dataset, limit=n, progress=False, **setting)
            seconds[name].append(time.perf_counter() - start)
            scores[name] = float(result.pck()[1])
    base = statistics.median(seconds["plain loop"])
    for name, times in seconds.items():
        t = statistics.median(times)
        print(
            f"  {name:<20}{n / t:7.2f} pairs/s  {t / base:5.2f}x the time of the plain loop  PCK@0.1 {scores[name]:.1f}"
        )


if __name__ == "__main__":
    main()
