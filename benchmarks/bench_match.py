# ruff: noqa: B023  (the lambdas are run by interleave() before the loop variables change)
"""Throughput of MMNet keypoint transfer and dense flow: contenders interleaved (A, B, A, B, ...) in one process,
medians and ratios against the backbone alone; working memory of each contender from its own baseline.

    python benchmarks/bench_match.py                          # CPU: head cost, batching, flow, variants
    python benchmarks/bench_match.py --device cuda            # GPU: pairs/s at batch 1/8/32/128, fp32/bf16/compile

Random weights (speed does not depend on them), 20 keypoints per pair. CPU sections:
  head     backbone alone (timm, unfolded) vs keypoint transfer (the Matcher: folded BatchNorm, streamed SEMs)
  batch    8 single `match` calls vs one `match_batch` of 8 pairs
  flow     exact dense flow vs coarse-to-fine (--flow-sizes)
  variants keypoint transfer: eager vs channels_last vs torch.compile (backbone), same model
  malloc   keypoint transfer with glibc's default malloc vs `mmnet.keep_freed_memory()`, fresh processes alternating
Memory (CPU): peak RSS growth over a baseline taken right before that contender's first run, in a fresh
subprocess per contender (`--memory`), since peak RSS never goes down.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import mmnet

NUM_KEYPOINTS = 20


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleave(contenders: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Each contender once as warm-up, then `repeats` rounds A, B, C, ...; median seconds of each."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for work in contenders.values():
        work()
    for _ in range(repeats):
        for name, work in contenders.items():
            _sync(device)
            start = time.perf_counter()
            work()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _inputs(size: tuple[int, int], pairs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, *size, generator=g) for _ in range(2 * pairs)]
    kpts = torch.rand(NUM_KEYPOINTS, 2, generator=g) * torch.tensor([size[1] - 1.0, size[0] - 1.0])
    return images[0::2], images[1::2], kpts


def _matcher(backbone: str, size: tuple[int, int], device: str, **kwargs) -> mmnet.Matcher:
    torch.manual_seed(0)
    return mmnet.Matcher(
        mmnet.create_model(f"mmnet_{backbone}"), device=device, input_size=size, fold_batchnorm=True, **kwargs
    )


def _timm_backbone(backbone: str, device: str):
    import timm

    from mmnet.models.backbones import get_backbone_spec

    spec = get_backbone_spec(backbone)
    return timm.create_model(spec.timm_name, num_classes=0, **spec.timm_kwargs).eval().to(device)


def cpu_head(backbones: list[str], size: tuple[int, int], repeats: int) -> None:
    print(f"\n== head cost: ms per pair (both images), {size[0]}x{size[1]}, median of {repeats} interleaved ==")
    print(
        "  kp L: keypoint transfer read at level L (3: finest, stride 4; 2: stride 8, the released Lite2's and the "
        "official level)"
    )
    print(
        f"{'backbone':<20}{'timm backbone':>15}{'mmnet backbone':>16}{'kp L3':>9}{'kp L2':>9}"
        f"{'L3 / timm':>11}{'L2 / timm':>11}{'L2 / mmnet bb':>15}"
    )
    for backbone in backbones:
        finest = _matcher(backbone, size, "cpu")
        level2 = mmnet.Matcher(finest.model, device="cpu", input_size=size, level=2)
        net = _timm_backbone(backbone, "cpu")
        (src,), (tgt,), kpts = _inputs(size, 1)
        x = torch.randn(2, 3, *size)
        with torch.inference_mode():
            t = interleave(
                {
                    "timm": lambda: net.forward_features(x),
                    "ours": lambda: finest.model.backbone.stream(x, lambda *a: None),
                    "L3": lambda: finest.match(src, tgt, kpts),
                    "L2": lambda: level2.match(src, tgt, kpts),
                },
                repeats,
                "cpu",
            )
        print(
            f"{backbone:<20}{t['timm'] * 1e3:>12.0f} ms{t['ours'] * 1e3:>13.0f} ms{t['L3'] * 1e3:>6.0f} ms"
            f"{t['L2'] * 1e3:>6.0f} ms{t['L3'] / t['timm']:>10.2f}x{t['L2'] / t['timm']:>10.2f}x"
            f"{t['L2'] / t['ours']:>14.2f}x",
            flush=True,
        )


def cpu_batch(backbone: str, size: tuple[int, int], repeats: int, pairs: int = 8) -> None:
    print(f"\n== batching: {pairs} pairs, {size[0]}x{size[1]}, {backbone}, median of {repeats} interleaved ==")
    matcher = _matcher(backbone, size, "cpu")
    one_forward = mmnet.Matcher(matcher.model, device="cpu", input_size=size, micro_batch=pairs)
    sources, targets, kpts = _inputs(size, pairs)
    t = interleave(
        {
            "single calls": lambda: [matcher.match(s, g, kpts) for s, g in zip(sources, targets, strict=True)],
            "match_batch (default)": lambda: matcher.match_batch(sources, targets, [kpts] * pairs),
            f"match_batch, micro_batch={pairs}": lambda: one_forward.match_batch(sources, targets, [kpts] * pairs),
        },
        repeats,
        "cpu",
    )
    for name, s in t.items():
        print(f"  {name:<28}{pairs / s:8.2f} pairs/s  ({s / t['single calls']:.2f}x the time of single calls)")


def cpu_flow(backbone: str, sizes: list[tuple[int, int]], repeats: int, radius: int) -> None:
    print(f"\n== dense flow: exact vs coarse-to-fine (radius {radius}), {backbone}, median of {repeats} ==")
    for size in sizes:
        exact = _matcher(backbone, size, "cpu")
        fast = mmnet.Matcher(
            exact.model, device="cpu", input_size=size, flow_search="coarse-to-fine", search_radius=radius
        )
        (src,), (tgt,), _ = _inputs(size, 1)
        t = interleave({"exact": lambda: exact.flow(src, tgt), "c2f": lambda: fast.flow(src, tgt)}, repeats, "cpu")
        a, b = exact.flow(src, tgt), fast.flow(src, tgt)
        diff = (a.flow - b.flow).norm(dim=0)
        print(
            f"  {size[0]}x{size[1]:<6} exact {t['exact']:7.2f} s  coarse-to-fine {t['c2f']:7.2f} s  "
            f"speed-up {t['exact'] / t['c2f']:5.1f}x   (random weights: |flow difference| mean {diff.mean():.1f} px)",
            flush=True,
        )


def cpu_variants(backbone: str, size: tuple[int, int], repeats: int, compile_: bool) -> None:
    print(f"\n== variants of keypoint transfer, {backbone}, {size[0]}x{size[1]}, median of {repeats} interleaved ==")
    eager = _matcher(backbone, size, "cpu")
    cl = _matcher(backbone, size, "cpu")
    cl.model.to(memory_format=torch.channels_last)
    contenders = {"eager (NCHW)": eager, "channels_last": cl}
    if compile_:
        comp = _matcher(backbone, size, "cpu")
        comp.model.features = torch.compile(comp.model.features)
        contenders["torch.compile (features)"] = comp
    (src,), (tgt,), kpts = _inputs(size, 1)
    start = time.perf_counter()
    if compile_:
        with torch.inference_mode():
            contenders["torch.compile (features)"].match(src, tgt, kpts)
        print(f"  (torch.compile: first call {time.perf_counter() - start:.0f} s)")
    with torch.inference_mode():
        t = interleave({n: (lambda m=m: m.match(src, tgt, kpts)) for n, m in contenders.items()}, repeats, "cpu")
    base = t["eager (NCHW)"]
    for name, s in t.items():
        print(f"  {name:<28}{s * 1e3:8.0f} ms  {s / base:.2f}x")


def memory_case(backbone: str, size: tuple[int, int], mode: str) -> dict:
    """Peak RSS of a fresh process: total (imports included) and the growth over the model-built baseline.
    A mode ending in ``-apart`` runs source and target one after the other (``Matcher(pair_batch=False)``)."""

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    mode, apart = mode.removesuffix("-apart"), mode.endswith("-apart")
    matcher = _matcher(backbone, size, "cpu", pair_batch=not apart)
    (src,), (tgt,), kpts = _inputs(size, 1)
    base = rss()
    with torch.inference_mode():
        if mode == "keypoints":
            matcher.match(src, tgt, kpts)
        elif mode == "keypoints-100k":
            g = torch.Generator().manual_seed(1)
            matcher.match(src, tgt, torch.rand(100_000, 2, generator=g) * torch.tensor([size[1] - 1.0, size[0] - 1.0]))
        else:
            matcher.flow(src, tgt)
    return {"total_mib": rss(), "working_mib": rss() - base, "model_mib": base}


def cpu_memory(backbones: list[str], sizes: list[tuple[int, int]]) -> None:
    print(
        "\n== memory (CPU, fresh process per case): peak RSS MiB, imports included; working = growth over the"
        " process after the model was built =="
    )
    for backbone in backbones:
        for size in sizes:
            cells = []
            for mode in ("keypoints", "keypoints-100k", "flow"):
                case = f"{backbone}:{size[0]}x{size[1]}:{mode}"
                out = subprocess.run([sys.executable, __file__, "--memory-case", case], capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
                cells.append(
                    f"{mode} {r['total_mib']:.0f} total / {r['working_mib']:.0f} working" if r else f"{mode} failed"
                )
            print(f"  {backbone:<20}{size[0]}x{size[1]:<5} " + "; ".join(cells), flush=True)


def malloc_case(backbone: str, size: tuple[int, int], mode: str, calls: int = 5) -> dict:
    """Median seconds of keypoint transfer (after a warm-up call) and peak RSS of a fresh process, with glibc's
    default malloc (``default``) or after `mmnet.keep_freed_memory` (``keep``, what the command line does)."""
    if mode == "keep" and not mmnet.keep_freed_memory():
        raise SystemExit("keep_freed_memory needs glibc")
    matcher = _matcher(backbone, size, "cpu")
    (src,), (tgt,), kpts = _inputs(size, 1)
    with torch.inference_mode():
        t = interleave({"kp": lambda: matcher.match(src, tgt, kpts)}, calls, "cpu")["kp"]
    return {"seconds": t, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def cpu_malloc(backbones: list[str], size: tuple[int, int], rounds: int) -> None:
    print(
        f"\n== malloc: keypoint transfer, {size[0]}x{size[1]}, fresh processes alternating default / keep "
        f"({rounds} each; each the median of 5 calls), medians ==\n  keep = mmnet.keep_freed_memory(), which the "
        "command line calls"
    )
    for backbone in backbones:
        runs: dict[str, list[dict]] = {"default": [], "keep": []}
        for _ in range(rounds):
            for mode, results in runs.items():
                case = f"{backbone}:{size[0]}x{size[1]}:{mode}"
                out = subprocess.run(
                    [sys.executable, __file__, "--malloc-case", case, "--threads", str(torch.get_num_threads())],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        ms = {m: statistics.median(r["seconds"] for r in rs) * 1e3 for m, rs in runs.items()}
        peak = {m: statistics.median(r["peak_mib"] for r in rs) for m, rs in runs.items()}
        print(
            f"  {backbone:<20}default {ms['default']:6.0f} ms, peak {peak['default']:5.0f} MiB   keep "
            f"{ms['keep']:6.0f} ms, peak {peak['keep']:5.0f} MiB   keep / default {ms['keep'] / ms['default']:.2f}x",
            flush=True,
        )


def gpu(backbones: list[str], size: tuple[int, int], repeats: int, batches: list[int], compile_: bool) -> None:
    """pairs/s of keypoint transfer and dense flow at several batch sizes, fp32 / bf16 autocast / compiled."""
    device = "cuda"
    print(f"\n== GPU {torch.cuda.get_device_name()}: pairs/s, {size[0]}x{size[1]}, median of {repeats} interleaved ==")
    print(f"{'backbone':<20}{'batch':>6}{'mode':>16}{'kp pairs/s':>12}{'flow pairs/s':>14}{'peak GiB':>10}")
    for backbone in backbones:
        for batch in batches:
            sources, targets, kpts = _inputs(size, batch)
            sources, targets = [s.to(device) for s in sources], [t.to(device) for t in targets]
            modes = {
                "fp32": _matcher(backbone, size, device, amp=False),
                "bf16": _matcher(backbone, size, device, amp=True),
            }
            if compile_:
                m = _matcher(backbone, size, device, amp=True)
                m.model.features = torch.compile(m.model.features, dynamic=False)
                modes["bf16+compile"] = m
            for name, m in modes.items():
                torch.cuda.reset_peak_memory_stats()
                try:
                    t = interleave(
                        {
                            "kp": lambda m=m: m.match_batch(sources, targets, [kpts] * batch),
                            "flow": lambda m=m: m.flow_batch(sources, targets),
                        },
                        repeats,
                        device,
                    )
                except torch.cuda.OutOfMemoryError:
                    print(f"{backbone:<20}{batch:>6}{name:>16}{'out of memory':>26}")
                    torch.cuda.empty_cache()
                    continue
                peak = torch.cuda.max_memory_allocated() / 2**30
                print(
                    f"{backbone:<20}{batch:>6}{name:>16}{batch / t['kp']:>12.0f}{batch / t['flow']:>14.1f}"
                    f"{peak:>10.2f}",
                    flush=True,
                )
            del modes
            torch.cuda.empty_cache()


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite2", "resnet101"])
    p.add_argument("--size", type=_size, default=(224, 320))
    p.add_argument("--flow-sizes", type=_size, nargs="+", default=[(224, 320), (480, 640)])
    p.add_argument("--memory-sizes", type=_size, nargs="+", default=[(224, 320), (480, 640)])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--radius", type=int, default=3, help="coarse-to-fine search radius")
    p.add_argument(
        "--sections",
        nargs="+",
        default=["head", "batch", "flow", "variants", "memory", "malloc"],
        help="CPU sections to run",
    )
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow first call)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128], help="GPU batch sizes")
    p.add_argument(
        "--keep-freed-memory", action="store_true", help="call mmnet.keep_freed_memory() first, as the CLI does"
    )
    p.add_argument("--memory-case", help=argparse.SUPPRESS)
    p.add_argument("--malloc-case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.keep_freed_memory and not mmnet.keep_freed_memory():
        raise SystemExit("--keep-freed-memory needs glibc")
    torch.set_num_threads(args.threads)
    for case, run in ((args.memory_case, memory_case), (args.malloc_case, malloc_case)):
        if case:
            backbone, size, mode = case.split(":")
            print(json.dumps(run(backbone, _size(size), mode)))
            return
    print(
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {os.cpu_count()} CPUs, "
        f"{NUM_KEYPOINTS} keypoints, random weights, malloc {'kept' if args.keep_freed_memory else 'glibc default'}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    if args.device.startswith("cuda"):
        gpu(args.backbones, args.size, args.repeats, args.batches, args.compile)
        return
    if "head" in args.sections:
        cpu_head(args.backbones, args.size, args.repeats)
    if "batch" in args.sections:
        cpu_batch(args.backbones[0], args.size, max(3, args.repeats // 2))
    if "flow" in args.sections:
        cpu_flow(args.backbones[0], args.flow_sizes, max(1, args.repeats // 3), args.radius)
    if "variants" in args.sections:
        cpu_variants(args.backbones[0], args.size, args.repeats, args.compile)
    if "memory" in args.sections:
        cpu_memory(args.backbones, args.memory_sizes)
    if "malloc" in args.sections:
        cpu_malloc(args.backbones, args.size, max(3, args.repeats // 2))


if __name__ == "__main__":
    main()
