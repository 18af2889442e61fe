"""Training throughput of MMNet, contenders interleaved in one process: pairs/s of each training mode side by
side, and what fraction of a frozen-backbone step the backbone forward is (the most a cache of backbone outputs
could save).

    python benchmarks/bench_train.py                                  # Lite2, 224x320, batch 2, 15 keypoints
    python benchmarks/bench_train.py --backbones resnet18 --size 112 160 --rounds 3

Contenders (one optimiser step each per round, A, B, C, ... repeated `--rounds` times after one warm-up round):
  frozen          backbone frozen (BatchNorm in eval), head trains (the default of `mmnet train`)
  frozen L3       the same with MMNetConfig(levels=3): no stride-4 level (its SEMs are most of the head's cost)
  last2           the two coarsest scale groups of the backbone train too
  full            the whole network trains
  backbone fwd    the frozen backbone's forward alone, without autograd (what a cache of its outputs would skip)
Steps are forward + backward + SGD step of the sparse loss (`mmnet.train.loss.mmnet_loss`), random weights and
inputs (speed does not depend on them). Memory is not measured here: one process holds every contender.
"""

# ruff: noqa: B023  (the lambdas are run by interleave() before the loop variables change)

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from mmnet.train.loss import mmnet_loss
from mmnet.zoo import create_model


def _inputs(batch: int, size: tuple[int, int], n_kps: int):
    g = torch.Generator().manual_seed(0)
    h, w = size
    src, tgt = torch.randn(batch, 3, h, w, generator=g), torch.randn(batch, 3, h, w, generator=g)
    scale = torch.tensor([w - 1.0, h - 1.0])
    kps = [torch.rand(batch, n_kps, 2, generator=g) * scale for _ in range(2)]
    return src, tgt, kps[0], kps[1], torch.ones(batch, n_kps, dtype=torch.bool)


def _model(backbone: str, mode: str, levels: int = 0) -> nn.Module:
    """A model set up as `mmnet train --train-backbone mode` does (frozen blocks and their BatchNorm in eval)."""
    from mmnet.train.trainer import TrainConfig, configure_trainable, set_train_mode

    torch.manual_seed(0)
    model = create_model(f"mmnet_{backbone}", pretrained_backbone=False, levels=levels)
    configure_trainable(model, mode)
    set_train_mode(model, TrainConfig(train_backbone=mode))
    return model


def _step(model: nn.Module, opt: torch.optim.Optimizer, inputs) -> None:
    loss = mmnet_loss(model, *inputs)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite2"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, nargs=2, default=(224, 320))
    p.add_argument("--kps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    print(
        f"CPU, {torch.get_num_threads()} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"torch {torch.__version__}, input {size[0]}x{size[1]}, batch {args.batch} pairs, {args.kps} keypoints, "
        f"random weights, median of {args.rounds} interleaved rounds, {time.strftime('%Y-%m-%d')}"
    )
    inputs = _inputs(args.batch, size, args.kps)
    for backbone in args.backbones:
        models = {
            "frozen": _model(backbone, "frozen"),
            "frozen L3": _model(backbone, "frozen", levels=3),
            "last2": _model(backbone, "last2"),
            "full": _model(backbone, "full"),
        }
        opts = {
            n: torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=1e-6, momentum=0.9)
            for n, m in models.items()
        }
        work = {n: (lambda n=n: _step(models[n], opts[n], inputs)) for n in models}
        frozen_backbone = models["frozen"].backbone
        both = torch.cat([inputs[0], inputs[1]])

        def backbone_forward() -> None:
            with torch.no_grad():
                frozen_backbone.stream(both, lambda *a: None)

        work["backbone fwd"] = backbone_forward
        times: dict[str, list[float]] = {n: [] for n in work}
        for round_ in range(args.rounds + 1):
            for name, fn in work.items():
                start = time.perf_counter()
                fn()
                if round_:
                    times[name].append(time.perf_counter() - start)
        med = {n: statistics.median(t) for n, t in times.items()}
        print(f"\n{backbone}")
        print(f"  {'mode':<14}{'s/step':>9}{'pairs/s':>9}{'vs frozen':>11}")
        for name in models:
            print(f"  {name:<14}{med[name]:>9.2f}{args.batch / med[name]:>9.2f}{med['frozen'] / med[name]:>10.2f}x")
        share = med["backbone fwd"] / med["frozen"]
        print(
            f"  backbone forward alone {med['backbone fwd']:.2f} s = {share:.0%} of a frozen step: a cache of the "
            f"backbone outputs could make frozen training at most {1 / max(1 - share, 1e-9):.2f}x faster "
            "(and it would fix the augmentation of every image)"
        )


if __name__ == "__main__":
    main()
