"""Speed optimisations must not change outputs: streamed SEMs, folded BatchNorm, micro-batches, the batched
evaluator; coarse-to-fine dense flow equals the exact search when its window covers the grid."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import mmnet
from mmnet.errors import InputError
from mmnet.models.mmnet import MMNet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SRC, TGT = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"
KPTS = [[91.0, 98.0], [136.0, 98.0], [114.0, 137.0], [20.0, 200.0]]


def _random_bn(model: MMNet) -> MMNet:
    """Non-trivial BatchNorm statistics, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _unstreamed_features(model: MMNet, images: torch.Tensor) -> list[torch.Tensor]:
    """The features the way they were computed before streaming: every tap held, then summed per group."""
    taps = model.backbone(images)[model.skipped_groups :]
    attended = [
        model.attentions[g](sum(sem(t) for sem, t in zip(model.sems[g], taps[g], strict=True)))
        for g in range(model.num_levels)
    ]
    fused = [attended[-1]]
    for g in reversed(range(model.num_levels - 1)):
        fused.append(model.fusions[g](attended[g], fused[-1]))
    return fused


@pytest.mark.parametrize("name", ["mmnet_resnet18", "mmnet_efficientnet_lite0"])
@torch.no_grad()
def test_streamed_sems_equal_held_taps_and_folded_batchnorm_within_1e5(name):
    torch.manual_seed(0)
    model = _random_bn(mmnet.create_model(name))
    images = torch.randn(2, 3, 96, 128)
    reference = _unstreamed_features(model, images)
    streamed = model.features(images)
    for a, b in zip(reference, streamed, strict=True):
        assert torch.equal(a, b)  # same ops, same order: bit-identical
    folded = copy.deepcopy(model).fold_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.backbone.body.modules())
    for a, b in zip(reference, folded.features(images), strict=True):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    with pytest.raises(InputError, match="folded"):
        folded.train()
    with pytest.raises(InputError, match="folded"):
        mmnet.save_pretrained(folded, "unused-folder")


def test_training_still_runs_the_streamed_path_with_gradients():
    torch.manual_seed(0)
    model = mmnet.create_model("mmnet_resnet18").train()
    out = model.features(torch.randn(2, 3, 64, 96))
    sum(f.sum() for f in out).backward()
    assert model.sems[0][0].conv.weight.grad is not None


def test_released_matcher_folds_batchnorm_and_keeps_its_predictions():
    """README numbers stay true: the folded (from_pretrained) matcher equals an unfolded one within 1e-5 px."""
    folded = mmnet.Matcher.from_pretrained("mmnet_efficientnet_lite2.cub_photos", device="cpu")
    assert folded.model.folded
    plain = mmnet.Matcher(mmnet.from_pretrained("mmnet_efficientnet_lite2.cub_photos"), device="cpu")
    a, b = folded.match(SRC, TGT, KPTS), plain.match(SRC, TGT, KPTS)
    torch.testing.assert_close(a.keypoints, b.keypoints, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mmnet.create_model("mmnet_resnet18").eval()


def test_micro_batches_give_the_results_of_one_batch(model):
    sources, targets, kpts = [SRC, TGT, SRC], [TGT, SRC, SRC], [KPTS, KPTS[:2], KPTS[1:]]
    one = mmnet.Matcher(model, device="cpu", input_size=(96, 128), micro_batch=3).match_batch(sources, targets, kpts)
    for size in (1, 2):
        split = mmnet.Matcher(model, device="cpu", input_size=(96, 128), micro_batch=size)
        for a, b in zip(one, split.match_batch(sources, targets, kpts), strict=True):
            torch.testing.assert_close(a.keypoints, b.keypoints, atol=1e-3, rtol=0)
            torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    flows = mmnet.Matcher(model, device="cpu", input_size=(96, 128), micro_batch=1).flow_batch(sources, targets)
    assert [f.flow.shape[1:] for f in flows] == [f.scores.shape for f in flows]
    with pytest.raises(InputError, match="micro_batch"):
        mmnet.Matcher(model, micro_batch=0)


def test_coarse_to_fine_flow_equals_exact_when_the_window_covers_the_grid(model):
    exact = mmnet.Matcher(model, device="cpu", input_size=(96, 128), chunk_size=37)
    wide = mmnet.Matcher(
        model, device="cpu", input_size=(96, 128), flow_search="coarse-to-fine", search_radius=100, chunk_size=37
    )
    a, b = exact.flow(SRC, TGT), wide.flow(SRC, TGT)
    torch.testing.assert_close(a.flow, b.flow, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    narrow = mmnet.Matcher(model, device="cpu", input_size=(96, 128), flow_search="coarse-to-fine", search_radius=1)
    c = narrow.flow(SRC, TGT)
    assert c.flow.shape == a.flow.shape and torch.isfinite(c.flow).all()
    with pytest.raises(InputError, match="flow_search"):
        mmnet.Matcher(model, flow_search="fast")


def test_batched_evaluation_with_workers_scores_like_the_plain_loop(data_root):
    from mmnet.data import load_dataset
    from mmnet.eval import evaluate

    root = data_root / "pf-willow-dev"
    if not root.is_dir():
        pytest.skip("no PF-WILLOW data")
    dataset = load_dataset("pf-willow", root)
    torch.manual_seed(0)
    matcher = mmnet.Matcher(mmnet.create_model("mmnet_resnet18"), device="cpu", input_size=(96, 128))
    plain = evaluate(matcher, dataset, progress=False, limit=5)
    batched = evaluate(matcher, dataset, progress=False, limit=5, batch_size=3, num_workers=1)
    np.testing.assert_allclose(plain.pck(), batched.pck())
    for a, b in zip(plain.pairs, batched.pairs, strict=True):
        np.testing.assert_allclose(a.distances, b.distances, atol=1e-3)
    with pytest.raises(InputError, match="batch_size"):
        evaluate(matcher, dataset, batch_size=0)
