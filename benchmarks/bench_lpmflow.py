"""LPMFlow forward at its test size vs its ViT backbone alone (vs CATs and MMNet), and what mmnet's schedule saves.

Rows (one 512x512 pair, the official test size; random weights: the numbers are about cost, not accuracy):

- ``lpmflow``: ``LPMFlow.forward`` of ``lpmflow_vit_base_patch16`` (resize to 256, ViT-B/16 on both images in one
  batch, LARL encoder, four decoder calls, four up-sampler calls, soft-argmax, Swin refinement).
- ``lpmflow, official schedule``: the same weights computed the way the official code schedules it: the ViT
  called once per image with its 14x14 position table resized at every call, the encoder's attention
  probabilities materialised and averaged over heads in every block (then discarded), the cross-attention
  projection applied in full (q, k and v) to both the source and the target although only the source's q and
  the target's k, v are read, and one up-sampler call per side. Its flow must equal the ``lpmflow`` row's.
- ``vit backbone``: the ViT-B/16 alone on both images (resize to 256 included).
- ``cats_resnet101`` (256x256) and ``mmnet_resnet101`` (224x320) forwards, for scale (``--no-others`` skips).

Rows run interleaved in one process (round r runs every row once, rotating), time is the median over rounds under
inference_mode; memory is the peak RSS of each call minus the RSS before it (VmHWM reset through
/proc/self/clear_refs), i.e. working memory on top of the weights. GFLOP (matmul/conv/bmm, 2 per MAC, attention
counted on its math path) come from ``torch.utils.flop_counter`` on one pass.

Usage: ``python benchmarks/bench_lpmflow.py [--rounds 3] [--threads 1] [--json out.json]``
"""

from __future__ import annotations

import argparse
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
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def official_schedule(model, source, target, native_pos):
    """`LPMFlow.forward` (eval) recomputed on the official code's schedule; same outputs, more work."""
    import torch
    import torch.nn.functional as F

    from mmnet.models.lpmflow import arf, dino_resize_pos_embed

    def vit(image: torch.Tensor) -> torch.Tensor:  # per image; the table resized at every call
        dino_resize_pos_embed(native_pos, (model.grid, model.grid))
        image = F.interpolate(image, size=(model.vit_size,) * 2, mode="bilinear", align_corners=False)
        return model.backbone(image)

    def heads(x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)

    def merge(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).flatten(2)

    enc = model.encoder
    src, tgt = vit(source), vit(target)
    cls_pos, patch_pos = enc.pos_embed[:, :1], enc.pos_embed[:, 1:]
    x = torch.cat(
        [
            src[:, :1] + cls_pos,
            src[:, 1:] + patch_pos + enc.src_segment,
            tgt[:, :1] + cls_pos,
            tgt[:, 1:] + patch_pos + enc.tgt_segment,
        ],
        1,
    )
    maps = []
    for block in enc.blocks:
        attn = block.attn
        q, k, v = heads(attn.qkv(block.norm1(x)), 3 * attn.heads).split(attn.heads, 1)
        prob = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + attn.bias(), -1)
        maps.append(prob.mean(1))  # collected and discarded, as the official encoder does
        x = x + attn.proj(merge(prob @ v))
        x = x + block.mlp(block.norm2(x))
    s0, t0 = enc.norm(x).split(src.shape[1], 1)

    def decoder(dec, s, t):
        s = s + dec._table("src", s.shape[1])
        t = t + dec._table("tgt", t.shape[1])
        s = s + arf(dec._self_attention(dec.norm1(s)))
        s = s + dec.norm2(s)
        t = t + arf(dec._self_attention(dec.norm1(t)))
        t = t + dec.mlp(dec.norm2(t))
        qs, _, _ = heads(dec.cross_qkv(dec.norm1(s)), 3 * dec.heads).split(dec.heads, 1)  # k, v of s: unused
        _, kt, vt = heads(dec.cross_qkv(dec.norm1(t)), 3 * dec.heads).split(dec.heads, 1)  # q of t: unused
        prob = torch.softmax(qs @ kt.transpose(-2, -1) * qs.shape[-1] ** -0.5, -1)
        s = s + arf(dec.cross_proj(merge(prob @ vt)))
        s = s + dec.mlp(dec.norm2(s))
        return s, t, prob.sum(1)[:, 1:, 1:]

    up = model.upsampler
    s1, t1, c11 = decoder(model.decoder1, s0, t0)
    s12, t12_up, c12 = decoder(model.decoder2, s1, up(t1))
    s21_up, t21, c21 = decoder(model.decoder2, up(s1), t1)
    s3, _, c22 = decoder(model.decoder3, up(s12) + s21_up, t12_up + up(t21))
    size = model.flow_size
    flows = [
        F.interpolate(model.soft_argmax(v), size=size, mode="nearest") * 4 for v in model.volumes([c11, c12, c21, c22])
    ]
    b, g2 = s3.shape[0], 2 * model.grid
    feat = model.source_proj(s3[:, 1:].transpose(1, 2).reshape(b, -1, g2, g2))
    feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=True)
    f11, f12, f21, f22 = flows
    return f22 + model.refiner(torch.cat([f11, feat, f12, f21, f22], 1))


def gflop(fn) -> float:
    """GFLOP of one call; attention runs on the math path so that fused kernels (which the counter skips on CPU)
    are counted as the matmuls they are."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--no-others", action="store_true", help="skip the CATs and MMNet rows")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mmnet.models.lpmflow import LPMFlow, LpmflowConfig

    torch.manual_seed(0)
    model = LPMFlow(LpmflowConfig()).eval()
    native_pos = torch.randn(1, 197, model.backbone.dim) * 0.02
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 1, 3, 512, 512, generator=gen)

    def backbone() -> object:
        return model.tokens(a, b)

    rows = {
        "lpmflow": lambda: model(a, b).flow,
        "lpmflow, official schedule": lambda: official_schedule(model, a, b, native_pos),
        "vit backbone": backbone,
    }
    params = {
        "lpmflow": sum(p.numel() for p in model.parameters()),
        "lpmflow, official schedule": sum(p.numel() for p in model.parameters()),
        "vit backbone": sum(p.numel() for p in model.backbone.parameters()),
    }
    if not args.no_others:
        from mmnet.models.cats import CATs, CatsConfig
        from mmnet.models.mmnet import MMNet, MMNetConfig

        cats = CATs(CatsConfig(backbone="resnet101")).eval()
        mmnet = MMNet(MMNetConfig(backbone="resnet101")).eval()
        c1, c2 = torch.randn(2, 1, 3, 256, 256, generator=gen)
        m1, m2 = torch.randn(2, 1, 3, 224, 320, generator=gen)
        rows["cats_resnet101 (256)"] = lambda: cats(c1, c2)
        rows["mmnet_resnet101 (224x320)"] = lambda: mmnet(m1, m2)
        params["cats_resnet101 (256)"] = sum(p.numel() for p in cats.parameters())
        params["mmnet_resnet101 (224x320)"] = sum(p.numel() for p in mmnet.parameters())

    with torch.inference_mode():
        ours, theirs = rows["lpmflow"](), rows["lpmflow, official schedule"]()
        same = (ours - theirs).abs().max().item()
        flops = {name: gflop(rows[name]) for name in rows}
        times: dict[str, list[float]] = {name: [] for name in rows}
        peaks: dict[str, list[float]] = {name: [] for name in rows}
        names = list(rows)
        for r in range(args.warmup + args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                base = _kib("VmRSS")
                _reset_peak()
                start = time.perf_counter()
                rows[name]()
                elapsed = (time.perf_counter() - start) * 1000
                if r >= args.warmup:
                    times[name].append(elapsed)
                    peaks[name].append((_kib("VmHWM") - base) / 1024)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), {os.cpu_count()} CPUs visible, load average "
        f"{os.getloadavg()[0]:.1f}; 512x512 pair; {args.rounds} interleaved rounds after {args.warmup} warm-up"
    )
    print(f"{'row':<28}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'peak MiB':>10}{'GFLOP':>8}{'params':>13}")
    results = {}
    for name in rows:
        results[name] = {
            "median_ms": statistics.median(times[name]),
            "min_ms": min(times[name]),
            "max_ms": max(times[name]),
            "peak_mib": statistics.median(peaks[name]),
            "gflop": flops[name],
            "params": params[name],
        }
        res = results[name]
        print(
            f"{name:<28}{res['median_ms']:>11.0f}{res['min_ms']:>9.0f}{res['max_ms']:>9.0f}"
            f"{res['peak_mib']:>10.0f}{res['gflop']:>8.1f}{res['params']:>13,}"
        )
    full, official, vit = (results[n] for n in ("lpmflow", "lpmflow, official schedule", "vit backbone"))
    print(
        f"lpmflow / backbone: {full['median_ms'] / vit['median_ms']:.1f}x time, "
        f"{full['gflop'] / vit['gflop']:.1f}x FLOPs"
    )
    print(
        f"saved by mmnet's schedule: {official['gflop'] - full['gflop']:.1f} GFLOP "
        f"({100 * (1 - full['gflop'] / official['gflop']):.1f} %), "
        f"{official['median_ms'] - full['median_ms']:.0f} ms "
        f"({100 * (1 - full['median_ms'] / official['median_ms']):.0f} %), peak "
        f"{official['peak_mib'] - full['peak_mib']:.0f} MiB; max |flow difference| {same:.2e}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "threads": torch.get_num_threads(),
                    "rounds": args.rounds,
                    "max_abs_flow_difference": same,
                    "rows": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
