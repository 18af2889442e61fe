"""CATs: parity with the official forward, exact-layout conversion, safe loading, the matcher.

No trained weights exist on this machine: the parity tests use the "portable" weights of the reference notes, where
every official tensor is a function of its key name and shape (`portable_state`), and the recorded outputs of the
official code under those weights (``check_values.json``). Those references cover the SPair hyperpixel set; the
PF-PASCAL set is checked by its exact key layout and its tap positions. The reference files are looked for in
``$MMNET_CATS_REFERENCE`` (default ``../shared/docs/official-cats``); the tests that need them skip without them.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import pickle
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmnet.cli import main
from mmnet.errors import CheckpointError, InputError, WeightsNotFoundError
from mmnet.matching.cats import CatsMatcher, create_cats, load_cats
from mmnet.models.cats import CATs, CatsConfig, mutual_nn_filter
from mmnet.models.softargmax import SoftArgmaxFlow
from mmnet.zoo import create_matcher, create_model, list_models
from mmnet.zoo.convert.cats import (
    config_from_args,
    config_from_state,
    convert_cats,
    map_official_state_dict,
    official_layout,
)

REFERENCE = Path(
    os.environ.get("MMNET_CATS_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "docs" / "official-cats")
)
TSV = {"spair": "state_dict_cats.tsv", "pfpascal": "state_dict_cats_pfpascal-hyperpixel.tsv"}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "check_values.json").is_file(),
    reason="needs values computed with the official CATs code (reference notes "
    f"kept beside the repository, not shipped with it), looked for in {REFERENCE}; "
    "set MMNET_CATS_REFERENCE to that folder to run it",
)


def tsv_rows(ids: str) -> list[dict[str, str]]:
    lines = (REFERENCE / TSV[ids]).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def _shape(row: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(s) for s in row["shape"].split(",")) if row["shape"] else ()


def portable_state(ids: str) -> dict[str, torch.Tensor]:
    """The reference notes' key-name-generated weights, in the official layout (every key of the tsv)."""
    state = {}
    for row in tsv_rows(ids):
        key, shape = row["key"], _shape(row)
        g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
        backbone = key.startswith("feature_extraction.backbone.")
        if key.endswith("num_batches_tracked"):
            value = torch.zeros((), dtype=torch.int64)
        elif key.endswith("running_mean"):
            value = torch.zeros(shape)
        elif key.endswith("running_var"):
            value = torch.ones(shape)
        elif key in ("x_normal", "y_normal"):
            value = torch.linspace(-1, 1, 16) + 0.01 * torch.randn(16, generator=g)
        elif len(shape) == 4:
            value = torch.randn(shape, generator=g) * math.sqrt(2 / (shape[1] * shape[2] * shape[3]))
        elif backbone and len(shape) == 1 and key.endswith(".weight"):
            value = torch.full(shape, 0.2 if key.endswith("bn3.weight") else 1.0)
        elif backbone and len(shape) == 1 and key.endswith(".bias"):
            value = torch.zeros(shape)
        elif key.startswith("decoder.") and ".norm" in key:
            noise = 0.02 * torch.randn(shape, generator=g)
            value = 1 + noise if key.endswith("weight") else noise
        else:
            value = 0.02 * torch.randn(shape, generator=g)
        state[key] = value
    return state


def random_state(ids: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors shaped per the tsv (the exact official layout, in state_dict order)."""
    g = torch.Generator().manual_seed(seed)
    return {
        row["key"]: torch.randint(0, 1000, (), generator=g)
        if row["key"].endswith("num_batches_tracked")
        else torch.randn(_shape(row), generator=g)
        for row in tsv_rows(ids)
    }


def pair(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(official source, official target), unnormalised in [0, 1] (the notes' recipes)."""
    g = torch.Generator().manual_seed(0)
    if kind == "random":
        return torch.rand(1, 3, 256, 256, generator=g), torch.rand(1, 3, 256, 256, generator=g)
    image = F.interpolate(torch.rand(1, 3, 32, 32, generator=g), size=(256, 256), mode="bilinear", align_corners=False)
    return image, torch.roll(image, 32, dims=3)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE / "check_values.json").read_text())["results"]


@pytest.fixture(scope="module")
def portable() -> CATs:
    config = CatsConfig()
    with torch.device("meta"):
        model = CATs(config)
    mapped, dropped = map_official_state_dict(portable_state("spair"), config, model.state_dict())
    model.load_state_dict(mapped, strict=True, assign=True)
    assert len(dropped) == 64  # layer4 (60), fc (2), decoder.norm (2)
    return model.eval()


def official_call(model: CATs, kind: str) -> dict[str, torch.Tensor]:
    """The official ``model(target, source)`` with its intermediate tensors."""
    source, target = ((x - MEAN) / STD for x in pair(kind))
    with torch.inference_mode():
        corr, app_a, app_b = model.correlation(target, source)
        scores = model.aggregator(corr, app_a, app_b)
        flow = model.softargmax(scores)
    return {"flow": flow, "corr": corr, "scores": scores}


def _stats(t: torch.Tensor) -> tuple[float, float]:
    return float(t.mean()), float(t.std())


@needs_reference
@pytest.mark.parametrize("kind", ["random", "smooth-shift32"])
def test_parity_portable_weights(portable: CATs, reference: dict, kind: str) -> None:
    ref = reference[f"portable/{kind}"]
    out = official_call(portable, kind)
    flow = out["flow"][0]
    assert flow.shape == (2, 16, 16)
    for c, axis in enumerate("xy"):
        mean, std = _stats(flow[c])
        assert mean == pytest.approx(ref[f"flow_{axis}"]["mean"], abs=1e-3)
        assert std == pytest.approx(ref[f"flow_{axis}"]["std"], abs=1e-3)
        assert float(flow[c, 2:14, 4:14].median()) == pytest.approx(ref[f"flow_{axis}_interior_median"], abs=1e-3)
    for where, value in ref["flow_samples_[c,y,x]"].items():
        c, y, x = (int(v) for v in where.split(","))
        assert float(flow[c, y, x]) == pytest.approx(value, abs=1e-3)
    corr_ref, scores_ref = ref["decoder_input_corr_(after_MNN)"], ref["refined_corr"]
    assert _stats(out["corr"]) == pytest.approx((corr_ref["mean"], corr_ref["std"]), abs=1e-5)
    assert _stats(out["scores"]) == pytest.approx((scores_ref["mean"], scores_ref["std"]), abs=1e-4)
    if kind == "random":  # the whole recorded flow
        full = torch.tensor(json.loads((REFERENCE / "check_flow_portable_random.json").read_text())["flow_c_y_x"])
        assert (flow - full).abs().max() < 1e-3


@needs_reference
@pytest.mark.parametrize("kind", ["random", "smooth-shift32"])
def test_parity_without_transformer(portable: CATs, reference: dict, kind: str) -> None:
    """With decoder.proj zeroed the scores are the level mean of the filtered correlation (the notes' check)."""
    ref = reference[f"portable+proj0/{kind}"]
    proj = portable.aggregator.proj
    saved = proj.weight.detach().clone(), proj.bias.detach().clone()
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.zero_()
    try:
        out = official_call(portable, kind)
    finally:
        with torch.no_grad():
            proj.weight.copy_(saved[0])
            proj.bias.copy_(saved[1])
    assert torch.allclose(out["scores"], out["corr"].mean(1), atol=1e-6)
    for c, axis in enumerate("xy"):
        assert _stats(out["flow"][0, c]) == pytest.approx(
            (ref[f"flow_{axis}"]["mean"], ref[f"flow_{axis}"]["std"]), abs=1e-3
        )


@needs_reference
@pytest.mark.parametrize(
    ("ids", "blocks"),
    [
        (
            "spair",
            ["maxpool", "layer3.0", "layer3.12", "layer3.13", "layer3.18", "layer3.20", "layer3.21", "layer3.22"],
        ),
        ("pfpascal", ["layer1.1", "layer3.9", "layer3.13", "layer3.14", "layer3.17", "layer3.18", "layer3.20"]),
    ],
)
def test_official_hyperpixel_sets_tap_the_documented_blocks_before_relu(ids: str, blocks: list[str]) -> None:
    config = CatsConfig(hyperpixels=ids)
    with torch.device("meta"):
        model = CATs(config)
    mapped, dropped = map_official_state_dict(portable_state(ids), config, model.state_dict())
    unused = {row["key"] for row in tsv_rows(ids) if row["used_in_forward"] == "no"}
    assert set(dropped) == unused
    model.load_state_dict(mapped, strict=True, assign=True)
    assert [n.removesuffix(".add") for n in model.backbone.nodes] == blocks
    # each tap is the block's output before its final ReLU: compare with the input of that ReLU in timm's ResNet
    import timm

    net = timm.create_model("resnet101", num_classes=0).eval()
    net.load_state_dict(
        {
            k.removeprefix("feature_extraction.backbone."): v
            for k, v in portable_state(ids).items()
            if k.startswith("feature_extraction.backbone.") and not k.startswith("feature_extraction.backbone.fc.")
        },
        strict=True,
    )
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        net.get_submodule(b).act3.register_forward_pre_hook(lambda m, args, b=b: seen.__setitem__(b, args[0].clone()))
        for b in blocks
        if b != "maxpool"
    ]
    hooks.append(net.maxpool.register_forward_hook(lambda m, args, out: seen.__setitem__("maxpool", out.clone())))
    x = (pair("random")[0][..., :64, :64] - MEAN) / STD
    with torch.inference_mode():
        net(x)
        taps = list(model.eval().backbone.body(x).values())
    for hook in hooks:
        hook.remove()
    for block, tap in zip(blocks, taps, strict=True):
        assert torch.equal(tap, seen[block]), block


def _write_official(folder: Path, state: dict[str, torch.Tensor], args: dict | None) -> Path:
    """A checkpoint folder as the official train.py writes it (model_best.pth dict + args.pkl)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": 3,
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 3e-5}]},
            "scheduler": {"milestones": collections.Counter([70, 80, 90]), "gamma": 0.5},
            "best_loss": 42.0,
        },
        folder / "model_best.pth",
    )
    if args is not None:
        (folder / "args.pkl").write_bytes(pickle.dumps(argparse.Namespace(**args)))
    return folder


@needs_reference
@pytest.mark.parametrize(
    ("ids", "hyperpixel", "cli"),
    [("spair", "[0,8,20,21,26,28,29,30]", True), ("pfpascal", [2, 17, 21, 22, 25, 26, 28], False)],
)
def test_exact_layout_converts_and_round_trips(tmp_path: Path, ids: str, hyperpixel: object, cli: bool) -> None:
    state = random_state(ids)
    folder = _write_official(
        tmp_path / ids,
        state,
        {
            "hyperpixel": hyperpixel,
            "depth": 1,
            "feature_size": 16,
            "feature_proj_dim": 128,
            "num_heads": 6,
            "mlp_ratio": 4,
            "benchmark": ids,
            "lr": 3e-5,
            "freeze": True,
        },
    )
    out = tmp_path / "out"
    if cli:  # mmnet convert-official --family cats DIR --out OUT
        assert main(["convert-official", "--family", "cats", str(folder), "--out", str(out)]) == 0
        model = load_cats(out)  # strict
        converted = model.state_dict()
        dropped = json.loads((out / "config.json").read_text())["converted_from"]["dropped_dead_keys"]
    else:
        result = convert_cats(folder, out, log=None)
        model, converted, dropped = result.model, result.model.state_dict(), result.dropped
        loaded = load_cats(out)  # strict; the safetensors round trip is exact
        assert loaded.config == model.config
        assert all(torch.equal(v, converted[k]) for k, v in loaded.state_dict().items())
    rows = tsv_rows(ids)
    assert set(dropped) == {row["key"] for row in rows if row["used_in_forward"] == "no"}
    used, _ = official_layout(model.config, converted)
    assert len(used) + len(dropped) == len(rows) and set(used) | set(dropped) == {row["key"] for row in rows}
    for official, ours in used.items():  # every used tensor lands unchanged, BN statistics and grid included
        assert torch.equal(converted[ours], state[official]), official
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "cats_resnet101" and config["readout"] == {"preset": "official"}
    matcher = create_matcher(out, device="cpu")
    assert isinstance(matcher, CatsMatcher) and matcher.preset == "official"


@needs_reference
def test_conversion_names_bad_keys_and_infers_config_without_args() -> None:
    state = random_state("spair")
    assert config_from_state(state) == CatsConfig()
    assert config_from_state(random_state("pfpascal")).hyperpixels == (2, 17, 21, 22, 25, 26, 28)
    broken = dict(state)
    del broken["decoder.blocks.0.mlp2.fc1.weight"]
    broken["decoder.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"decoder\.blocks\.0\.mlp2\.fc1\.weight.*decoder\.extra"):
        map_official_state_dict(broken, CatsConfig())
    pfpascal_args = config_from_args({"hyperpixel": "[2,17,21,22,25,26,28]", "depth": 1})
    with pytest.raises(CheckpointError, match=r"args\.pkl belongs"):
        map_official_state_dict(state, pfpascal_args)
    with pytest.raises(CheckpointError, match="hyperpixel"):
        config_from_args({"depth": 1})


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_malicious_args_pkl_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"state_dict": {"x_normal": torch.zeros(16)}}, folder / "model_best.pth")
    (folder / "args.pkl").write_bytes(pickle.dumps(argparse.Namespace(hyperpixel=_Payload(marker))))
    with pytest.raises(CheckpointError, match="never unpickles"):
        convert_cats(folder, log=None)
    assert not marker.exists()
    (folder / "model_best.pth").write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(CheckpointError):
        convert_cats(folder, log=None)
    assert not marker.exists()


def test_soft_argmax_flow_conventions() -> None:
    head = SoftArgmaxFlow(4, beta=0.02)
    shift = torch.zeros(1, 4, 4, 4, 4)
    for y in range(4):
        for x in range(4):
            shift[0, y, x, y, min(x + 1, 3)] = 10.0  # every source cell matches the next column
    flow = head(shift)
    assert torch.allclose(flow[0, 0, :, :3], torch.ones(4, 3), atol=1e-4)
    assert torch.allclose(flow[0, 1], torch.zeros(4, 4), atol=1e-4)
    back = head(shift, over="source")  # on the target grid, into the source
    assert torch.allclose(back[0, 0, :, 1:3], -torch.ones(4, 2), atol=1e-4)
    assert head.grid_x.requires_grad and SoftArgmaxFlow(4, trainable=False).grid_x.requires_grad is False
    corr = torch.tensor([[[0.0, 2.0], [1.0, 0.0]]])
    assert torch.allclose(mutual_nn_filter(corr), torch.tensor([[[0.0, 2.0], [1.0, 0.0]]]))
    with pytest.raises(InputError):
        head(torch.randn(1, 10, 16))


@needs_reference
def test_matcher_readouts_reproduce_the_official_test_and_follow_a_shift(portable: CATs) -> None:
    """Points of the shifted image found in the original (the notes' direction check: the flow's interior median is
    -2 cells in x, 0 in y). ``official``: exactly the official transfer (truncated points, flow up-sampled with
    align_corners=False and x16, read at the integer pixel); ``default``: the flow at the exact point."""
    original, shifted = pair("smooth-shift32")
    flow = official_call(portable, "smooth-shift32")["flow"]  # official model(target=shifted, source=original)
    ys, xs = torch.meshgrid(torch.arange(2, 14) * 16 + 7.5, torch.arange(4, 14) * 16 + 7.5, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], -1)  # interior cell centres, 256 x 256 images
    default = CatsMatcher(portable, device="cpu").match(shifted[0], original[0], points)
    moved = default.keypoints - points
    assert torch.allclose(moved.T, 16 * flow[0, :, 2:14, 4:14].flatten(1), atol=1e-3)
    assert float(moved[:, 0].median()) == pytest.approx(-32, abs=0.1)
    assert float(moved[:, 1].median()) == pytest.approx(0, abs=0.1)
    clicks = torch.tensor([[0.0, 0.0], [37.9, 200.2], [255.4, 128.6], [100.5, 99.99]])
    official = CatsMatcher(portable, device="cpu", preset="official").match(shifted[0], original[0], clicks)
    up = F.interpolate(flow, size=(256, 256), mode="bilinear", align_corners=False)[0] * 16  # flow2kps, literally
    kx, ky = clicks.long().clamp(0, 255).T
    assert torch.allclose(official.keypoints, torch.stack([kx + up[0, ky, kx], ky + up[1, ky, kx]], -1), atol=1e-3)
    assert ((official.scores >= 0) & (official.scores <= 1)).all()


@pytest.fixture(scope="module")
def small() -> CatsMatcher:
    torch.manual_seed(0)
    return CatsMatcher(create_cats("cats_resnet18", hyperpixels=(0, 3, 5, 6)), device="cpu", input_size=(96, 128))


@pytest.mark.parametrize("preset", ["exact", "official"])
def test_matcher_api(small: CatsMatcher, preset: str) -> None:
    matcher = CatsMatcher(small.model, device="cpu", preset=preset, input_size=(96, 128))
    src, tgt = torch.rand(3, 90, 120), torch.rand(3, 70, 100)
    points = torch.tensor([[10.0, 20.0], [60.0, 45.0], [119.0, 89.0], [500.0, 5.0]])
    result = matcher.match(src, tgt, points)
    assert result.keypoints.shape == (4, 2) and result.scores.shape == (4,)
    assert torch.isnan(result.keypoints[3]).all() and result.scores[3] == 0
    assert torch.isfinite(result.keypoints[:3]).all()
    flow = matcher.flow(src, tgt)
    assert flow.flow.shape == (2, 90, 120) and flow.scores.shape == (90, 120)
    for (x, y), match in zip(points[:3].long().tolist(), result.keypoints[:3], strict=True):
        assert torch.allclose(torch.tensor([x, y]) + flow.flow[:, y, x], match, atol=1e-3)  # flow = dense match
    assert matcher.warp(src, tgt).shape == (3, 70, 100)


def test_any_backbone_by_one_config_entry_and_errors() -> None:
    torch.manual_seed(0)
    model = create_cats("cats_efficientnet_lite2")
    assert model.config.hyperpixels == (0, 7, 9, 10, 11, 12, 13, 14)
    with torch.inference_mode():
        assert model.eval()(torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)).shape == (1, 2, 16, 16)
    with pytest.raises(InputError, match="out of range"):
        CATs(CatsConfig(backbone="resnet18", hyperpixels=(0, 99)))
    with pytest.raises(InputError, match="divisible"):
        CatsConfig(num_heads=7)
    with pytest.raises(InputError, match="preset"):
        CatsMatcher(model, preset="paper")
    assert CatsMatcher(model, device="cpu").preset == "exact"  # no readout recorded: the exact one
    model.readout = {"preset": "default"}  # an old config.json: read silently under the new name
    assert CatsMatcher(model, device="cpu").preset == "exact"
    model.readout = {"preset": "official"}
    assert CatsMatcher(model, device="cpu").preset == "official"
    with pytest.warns(DeprecationWarning, match="it means preset='exact'"):
        assert CatsMatcher(model, device="cpu", preset="default").preset == "exact"


def test_registry_and_official_tags() -> None:
    names = list_models("cats_*")
    assert {"cats_resnet101", "cats_efficientnet_lite2"} <= set(names)
    tags = list_models("cats_*", pretrained=True)
    assert {f"cats_resnet101.{t}_official" for t in ("spair", "spair_frozen", "pfpascal", "pfpascal_frozen")} <= set(
        tags
    )
    torch.manual_seed(0)
    model = create_model("cats_resnet18", hyperpixels=(0, 5, 6))
    assert isinstance(model, CATs) and model.architecture == "cats_resnet18"
    if not (Path.home() / ".cache/mmnet/official/cats_resnet101.spair_official").exists():
        with pytest.raises(WeightsNotFoundError, match="convert-official --family cats"):
            create_matcher("cats_resnet101.spair_official")


def test_training_objectives(small: CatsMatcher) -> None:
    from mmnet.train.cats import cats_flow_loss, cats_loss, cats_param_groups, official_flow_target

    # the official ground truth (notes' example): two keypoints share the cells (2, 6) and (3, 6)
    src = torch.tensor([[[100.0, 50.0], [110.0, 52.0]]])
    tgt = torch.tensor([[[10.0, 10.0], [200.0, 200.0]]])
    gt = official_flow_target(src, tgt, torch.ones(1, 2, dtype=torch.bool))
    assert gt[0, :, 2, 6].tolist() == [5.9375, 9.3125] and gt[0, :, 3, 6].tolist() == [5.9375, 9.3125]
    assert gt[0, :, 2, 5].tolist() == [-5.625, -2.5] and gt[0, :, 2, 7].tolist() == [5.625, 9.25]
    assert int((gt != 0).any(1).sum()) == 3 * 2  # keypoint 1 in columns 5-6, keypoint 2 in 6-7; both in rows 2-3
    # a flow equal to the truth costs nothing with the keypoint target
    shift = torch.zeros(1, 2, 16, 16)
    shift[:, 0] = 2.0
    kps = torch.tensor([[[40.0, 60.0], [130.5, 200.0]]])
    assert (
        float(
            cats_flow_loss(
                shift, kps, kps + torch.tensor([32.0, 0.0]), torch.ones(1, 2, dtype=torch.bool), (256, 256), (256, 256)
            )
        )
        < 1e-5
    )
    model = small.model.train()
    torch.manual_seed(0)
    images = torch.randn(2, 1, 3, 64, 64)
    valid = torch.tensor([[True, True, False]])
    points = torch.tensor([[[10.0, 12.0], [40.0, 50.0], [0.0, 0.0]]])
    for objective, target in [("flow", "keypoints"), ("flow", "official"), ("keypoint", "keypoints")]:
        model.zero_grad()
        loss, parts = cats_loss(
            model, images[0], images[1], points, points + 3, valid, objective=objective, target=target
        )
        loss.backward()
        assert math.isfinite(parts[objective]) and model.aggregator.proj.weight.grad is not None
        assert (model.softargmax.grid_x.grad is not None) == (objective == "flow")  # the trainable grid
    groups = cats_param_groups(model)
    assert groups[0]["lr"] == 3e-5 and any(p is model.softargmax.grid_x for p in groups[0]["params"])
    model.eval()
