"""Components: shapes, gradients and numerics on hand-computable inputs."""

import pytest
import torch
import torch.nn.functional as F

from mmnet.models.components import (
    SEM,
    CorrelationHead,
    CrossScaleFusion,
    LocalSelfAttention,
    MatchingComplement,
    fit_to,
    nearest_indices,
)


def test_sem_shape_and_hand_computed_output():
    sem = SEM(1, mid_channels=1, out_channels=1, dilations=(4, 8, 12))
    with torch.no_grad():
        sem.conv.weight.zero_()
        sem.conv.weight[0, 0, 1, 1] = 1.0  # identity
        for branch in sem.branches:
            branch.weight.zero_()
            branch.bias.fill_(0.5)  # each branch adds relu(0.5)
        sem.down.weight.fill_(2.0)
        sem.down.bias.fill_(1.0)
    x = torch.tensor([[[[-1.0, 2.0], [3.0, 0.0]]]])
    expected = 2 * (x.clamp(min=0) + 3 * 0.5) + 1
    torch.testing.assert_close(sem(x), expected)
    assert SEM(24)(torch.randn(2, 24, 7, 9)).shape == (2, 21, 7, 9)


def test_sem_init_follows_official_code():
    sem = SEM(256)
    assert abs(sem.conv.weight.std().item() - 0.01) < 0.002
    assert sem.conv.bias.abs().max() == 0
    assert [b.dilation for b in sem.branches] == [(4, 4), (8, 8), (12, 12)]


def test_local_attention_uniform_weights_average_neighbours():
    att = LocalSelfAttention(channels=2, inner_channels=1)
    with torch.no_grad():
        for conv in (att.theta, att.phi):  # constant query/key -> equal cosine -> uniform softmax
            conv.weight.zero_()
            conv.bias.fill_(1.0)
        att.g.weight.fill_(1.0)
        att.g.bias.zero_()
        att.back.weight.fill_(1.0)
        att.back.bias.zero_()
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    g = x.sum(1, keepdim=True)
    mean = F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # replicate border
    torch.testing.assert_close(att(x), x + mean)


def test_local_attention_is_residual_and_differentiable():
    att = LocalSelfAttention(21).double()
    assert sum(p.numel() for p in att.parameters()) == 891  # as in the official WeightAverage block
    with torch.no_grad():
        att.back.weight.zero_()
        att.back.bias.zero_()
    x = torch.randn(1, 21, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(att(x), x)
    att = LocalSelfAttention(4, inner_channels=2).double()
    assert torch.autograd.gradcheck(att, torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize(
    ("fine", "coarse", "upsample"), [((14, 20), (7, 10), True), ((15, 19), (8, 10), True), ((28, 40), (28, 40), False)]
)
def test_cross_scale_fusion_shapes(fine, coarse, upsample):
    fusion = CrossScaleFusion(21, upsample=upsample)
    out = fusion(torch.randn(2, 21, *fine), torch.randn(2, 21, *coarse))
    assert out.shape == (2, 21, *fine)
    assert (fusion.up is None) != upsample
    if upsample:
        assert fusion.up.bias is None and fusion.up.weight.shape == (21, 21, 4, 4)


def test_fit_to_crops_and_replicate_pads():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert fit_to(x, (1, 2)).tolist() == [[[[0.0, 1.0]]]]
    assert fit_to(x, (3, 3))[0, 0, 2].tolist() == [3.0, 4.0, 5.0]


def test_correlation_is_plain_dot_product_and_rows_match():
    head = CorrelationHead()
    src, tgt = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 2, 3)
    volume = head(src, tgt)
    assert volume.shape == (2, 3, 4, 2, 3)
    torch.testing.assert_close(volume[1, 2, 3, 1, 0], (src[1, :, 2, 3] * tgt[1, :, 1, 0]).sum())
    cells = torch.tensor([[0, 11], [5, 7]])
    rows = head.rows(src, cells, tgt)
    torch.testing.assert_close(rows, torch.stack([volume[b].flatten(0, 1)[cells[b]] for b in range(2)]))


def test_nearest_indices_equal_interpolate_for_multiples():
    x = torch.arange(5.0).view(1, 1, 5)
    ref = F.interpolate(x, size=10, mode="nearest")[0, 0].long()
    assert nearest_indices(10, 5).tolist() == ref.tolist()
    assert nearest_indices(7, 4).tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert nearest_indices(6, 6).tolist() == list(range(6))


def test_matching_complement_adds_upsampled_coarse_scores():
    coarse = torch.full((1, 1, 1, 1, 1), 5.0)
    fine = torch.arange(16.0).view(1, 2, 2, 2, 2)
    out = MatchingComplement()([coarse, fine])
    torch.testing.assert_close(out[1], fine + 5)
    out3 = MatchingComplement()([coarse, fine, torch.zeros(1, 4, 4, 4, 4)])
    assert out3[2][0, 3, 3, 3, 3] == fine[0, 1, 1, 1, 1] + 5  # fine cell (3, 3) lies in coarse cell (1, 1)


@pytest.mark.parametrize("detach", [True, False])
def test_matching_complement_detach_stops_gradient(detach):
    coarse = torch.ones(1, 1, 1, 1, 1, requires_grad=True)
    fine = torch.zeros(1, 2, 2, 2, 2, requires_grad=True)
    MatchingComplement(detach=detach)([coarse, fine])[1].sum().backward()
    assert fine.grad is not None
    assert (coarse.grad is None) == detach


def test_matching_complement_rows_equal_full_volume_rows():
    volumes = [torch.randn(2, 2, 3, 2, 3), torch.randn(2, 4, 6, 4, 6)]
    full = MatchingComplement()(volumes)
    cells = torch.tensor([[0, 23], [7, 13]])  # on the fine 4x6 grid
    coarse_cells = (cells // 6 // 2) * 3 + (cells % 6) // 2
    rows = [
        torch.stack([v[b].flatten(0, 1)[c[b]] for b in range(2)])
        for v, c in zip(volumes, [coarse_cells, cells], strict=True)
    ]
    out = MatchingComplement().rows(rows)
    torch.testing.assert_close(out[1], torch.stack([full[1][b].flatten(0, 1)[cells[b]] for b in range(2)]))


@pytest.mark.parametrize(("small", "big"), [((3, 5), (6, 10)), ((4, 5), (7, 9)), ((4, 4), (4, 4))])
def test_upsample_nearest_follows_nearest_indices(small, big):
    from mmnet.models.components import upsample_nearest

    x = torch.randn(2, 3, *small)
    expected = x.index_select(2, nearest_indices(big[0], small[0])).index_select(3, nearest_indices(big[1], small[1]))
    torch.testing.assert_close(upsample_nearest(x, big), expected)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_local_attention_equals_gathered_cosine_softmax(kernel_size):
    """The offset-by-offset forward equals the textbook form: unfold k x k neighbourhoods, F.cosine_similarity,
    softmax, weighted sum (zero feature vectors included)."""
    torch.manual_seed(0)
    att = LocalSelfAttention(21, kernel_size=kernel_size).double()
    x = torch.randn(2, 21, 6, 7, dtype=torch.float64)
    x[..., :2, :2] = 0
    with torch.no_grad():
        att.phi.bias.zero_()
        b, _, h, w = x.shape
        pad = kernel_size // 2

        def gather(t):
            cols = F.unfold(F.pad(t, (pad, pad, pad, pad), mode="replicate"), kernel_size)
            return cols.view(b, t.shape[1], kernel_size**2, h, w)

        weights = F.cosine_similarity(att.theta(x).unsqueeze(2), gather(att.phi(x)), dim=1).softmax(dim=1)
        expected = x + att.back((gather(att.g(x)) * weights.unsqueeze(1)).sum(dim=2))
        torch.testing.assert_close(att(x), expected, rtol=1e-12, atol=1e-12)
