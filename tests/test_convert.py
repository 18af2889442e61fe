"""Official-checkpoint conversion: key layout, strict loading, and parity with the official equations.

The official forward and readout are re-written here with plain torch ops on the official-keyed tensors, straight
from the description in shared/docs/official-mmnet-checkpoints/NOTES.md, and compared with mmnet's model and
`Matcher(preset="official")`. Weights are random: only the equations are under test.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import mmnet
from mmnet.cli import build_parser, main
from mmnet.errors import CheckpointError, WeightsNotFoundError
from mmnet.matching.mmnet import Matcher
from mmnet.matching.readouts import PRESETS
from mmnet.models.mmnet import MMNet, MMNetConfig
from mmnet.zoo import _registry as registry
from mmnet.zoo.convert.mmnet import (
    OFFICIAL_BACKBONES,
    OFFICIAL_READOUT,
    build_official_model,
    convert_official,
    map_official_state_dict,
    official_key,
    official_layout,
    read_official,
)
from mmnet.zoo.hub import sha256_of

REPO = Path(__file__).resolve().parents[1]
DOCS = Path(os.environ.get("MMNET_DOCS", REPO.parent / "shared" / "docs")) / "official-mmnet-checkpoints"
SIZE = (64, 96)  # the resized frame of these tests (the official one is 224 x 320)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# The official backbones as timm models (NOTES: identical key lists, shapes and block outputs).
TIMM = {
    "fcn-resnet101": ("resnet101s", {"output_stride": 8}),
    "resnet50": ("resnet50", {}),
    "resnet101": ("resnet101", {}),
    "resnext-101": ("resnext101_32x8d", {}),
}


@pytest.fixture(scope="session")
def official_docs() -> Path:
    """`../shared/docs/official-mmnet-checkpoints` (or `$MMNET_DOCS/official-mmnet-checkpoints`)."""
    if not (DOCS / "NOTES.md").is_file():
        pytest.skip(
            f"needs the key lists of the official MMNet checkpoints (reference notes kept beside the "
            f"repository, not shipped with it), looked for in {DOCS}; set MMNET_DOCS to the folder above "
            "official-mmnet-checkpoints/ to run it"
        )
    return DOCS


def read_tsv(path: Path) -> dict[str, tuple[tuple[int, ...], bool]]:
    """key -> (shape, used_in_forward) from a state_dict_<variant>.tsv (empty shape = 0-dim tensor)."""
    with open(path, newline="") as f:
        rows = csv.DictReader(f, delimiter="\t")
        return {
            r["key"]: (
                tuple(int(s) for s in r["shape"].split(",")) if r["shape"] else (),
                r["used_in_forward"] == "yes",
            )
            for r in rows
        }


@functools.cache
def template(backbone: str) -> dict[str, torch.Size]:
    """mmnet's state-dict shapes for an official backbone name (built on the meta device: no init cost)."""
    with torch.device("meta"):
        model = MMNet(MMNetConfig(backbone=OFFICIAL_BACKBONES[backbone]))
    return {k: v.shape for k, v in model.state_dict().items()}


def layout_from_model(backbone: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """The official layout derived from our model and the documented dead keys (no shared/ files needed)."""
    used, dead = official_layout(template(backbone))
    return {
        **{k: (tuple(template(backbone)[v]), True) for k, v in used.items()},
        **{k: (shape, False) for k, shape in dead.items()},
    }


def cheap_state(layout: dict[str, tuple[tuple[int, ...], bool]]) -> dict[str, torch.Tensor]:
    """One constant per tensor (its index), stored as a 1-element expanded view: any shape, no memory."""
    return {
        k: (torch.tensor(i) if "num_batches" in k else torch.tensor(float(i))).expand(shape)
        for i, (k, (shape, _)) in enumerate(layout.items())
    }


def random_state(layout: dict[str, tuple[tuple[int, ...], bool]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official weights with sane scales; the huge dead tensors are expanded scalars."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, used) in layout.items():
        if "num_batches_tracked" in key:
            state[key] = torch.tensor(7)
        elif not used and math.prod(shape) > 1 << 16:
            state[key] = torch.randn((), generator=gen).expand(shape)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight") and key.startswith("backbone."):  # BN scale
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


# -- the official equations, written from NOTES.md --------------------------------------------------------------


def official_taps(state: dict[str, torch.Tensor], backbone: str, images: torch.Tensor) -> list[list[torch.Tensor]]:
    """Every bottleneck output (after the residual add and ReLU), grouped by stage; stem tap dropped (unused)."""
    name, kwargs = TIMM[backbone]
    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, **kwargs)  # keeps `fc`: the load below is strict
    net.load_state_dict(
        {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}, strict=True, assign=True
    )
    net.eval()
    x = net.maxpool(net.act1(net.bn1(net.conv1(images))))
    stages = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        taps = []
        for block in layer:
            x = block(x)
            taps.append(x)
        stages.append(taps)
    return stages


def conv(state: dict[str, torch.Tensor], name: str, x: torch.Tensor, **kwargs) -> torch.Tensor:
    return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], **kwargs)


def msblock(state: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    base = F.relu(conv(state, f"{name}.conv", x, padding=1))
    out = base
    for k, rate in ((1, 4), (2, 8), (3, 12)):
        out = out + F.relu(conv(state, f"{name}.conv{k}", base, padding=rate, dilation=rate))
    return out


def weight_average(state: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    theta = conv(state, f"{name}.conv_theta", x)
    phi = F.pad(conv(state, f"{name}.conv_phi", x), (1, 1, 1, 1), mode="replicate")
    g = F.pad(conv(state, f"{name}.conv_g", x), (1, 1, 1, 1), mode="replicate")
    shifts = [(dy, dx) for dy in range(3) for dx in range(3)]
    sims = torch.stack([F.cosine_similarity(theta, phi[:, :, dy : dy + h, dx : dx + w], dim=1) for dy, dx in shifts], 1)
    weights = sims.softmax(dim=1)
    mixed = sum(weights[:, i : i + 1] * g[:, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(shifts))
    return x + conv(state, f"{name}.conv_back", mixed)


def up4d(volume: torch.Tensor) -> torch.Tensor:
    """Nearest x2 on both grids of (B, h, w, H, W), via two 2-D interpolations over reshaped views."""
    b, h, w, hh, ww = volume.shape
    x = F.interpolate(volume.reshape(b, h * w, hh, ww), scale_factor=2, mode="nearest")
    x = x.reshape(b, h, w, 4 * hh * ww).permute(0, 3, 1, 2)
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    return x.permute(0, 2, 3, 1).reshape(b, 2 * h, 2 * w, 2 * hh, 2 * ww)


def official_forward(
    state: dict[str, torch.Tensor], backbone: str, src: torch.Tensor, trg: torch.Tensor
) -> list[list[torch.Tensor]]:
    """[[C4_AB, C4_BA], [C3..], [C2..], [C1..]] (coarsest first), AB as (B, Hs, Ws, Ht, Wt)."""
    fcn = backbone == "fcn-resnet101"
    stages = official_taps(state, backbone, torch.cat([src, trg]))
    features = []
    for images in (slice(0, len(src)), slice(len(src), None)):  # the head runs per image, shared weights
        att = {}
        for g, taps in enumerate(stages, start=1):
            summed = sum(
                conv(state, f"conv{g}_{j}_down", msblock(state, f"msblock{g}_{j}", t[images]))
                for j, t in enumerate(taps, start=1)
            )
            att[g] = weight_average(state, f"wa_{g}", summed)
        fused = {4: att[4]}
        for g in (3, 2, 1):
            coarse = fused[g + 1]
            if not (fcn and g in (3, 2)):  # fcn: stages 2-4 share stride 8, feat_upsample_4/3 are skipped
                coarse = F.conv_transpose2d(coarse, state[f"feat_upsample_{g + 1}.weight"], stride=2, padding=1)
            fused[g] = conv(state, f"conv{g}_scale", torch.cat([att[g], coarse], 1), padding=1)
        features.append(fused)
    fs, ft = features
    corr = {
        g: [torch.einsum("bcij,bckl->bijkl", fs[g], ft[g]), torch.einsum("bcij,bckl->bijkl", ft[g], fs[g])]
        for g in (4, 3, 2, 1)
    }
    for g in (3, 2, 1):
        for d in (0, 1):
            prior = corr[g + 1][d].detach()
            corr[g][d] = corr[g][d] + (prior if fcn and g in (3, 2) else up4d(prior))
    return [corr[g] for g in (4, 3, 2, 1)]


def official_predict(corr_ab: torch.Tensor, kps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The official keypoint transfer on one (h, w, h', w') volume; kps (N, 2) xy in the resized frame."""
    h, w, ht, wt = corr_ab.shape
    rows = corr_ab.reshape(h, w, ht * wt)
    preds = []
    for x, y in kps.tolist():
        gx, gy = x * w / size[1], y * h / size[0]
        x0, y0 = math.floor(gx), math.floor(gy)
        fx, fy = gx - x0, gy - y0
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        top = (1 - fx) * rows[y0, x0] + fx * rows[y0, x1]
        bottom = (1 - fx) * rows[y1, x0] + fx * rows[y1, x1]
        row = (1 - fy) * top + fy * bottom
        idx = int(row.argmax())
        preds.append([(idx % wt) * size[1] / wt, (idx // wt) * size[0] / ht])
    return torch.tensor(preds)


def official_preprocess(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> normalised, then resized to SIZE (bilinear, no antialias), as the official loader."""
    return F.interpolate((image[None] - MEAN) / STD, size=SIZE, mode="bilinear", align_corners=False)


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fcn-resnet101", "resnet50"])
def converted(request):
    """(backbone, random official state dict, the mmnet model converted from it, a source and a target image
    (3, H, W) of sizes other than SIZE, and the official forward's outputs on them)."""
    backbone = request.param
    state = random_state(layout_from_model(backbone), seed=1)
    gen = torch.Generator().manual_seed(2)
    src, trg = torch.rand(3, 80, 112, generator=gen), torch.rand(3, 72, 100, generator=gen)
    with torch.inference_mode():
        reference = official_forward(state, backbone, official_preprocess(src), official_preprocess(trg))
    return backbone, state, build_official_model(backbone, state), src, trg, reference


# -- layout -----------------------------------------------------------------------------------------------------


def test_official_key_names():
    assert official_key("backbone.body.layer3.22.bn2.running_var") == "backbone.layer3.22.bn2.running_var"
    assert official_key("sems.2.22.branches.2.bias") == "msblock3_23.conv3.bias"
    assert official_key("sems.0.1.conv.weight") == "msblock1_2.conv.weight"
    assert official_key("sems.3.0.down.weight") == "conv4_1_down.weight"
    assert official_key("attentions.1.theta.weight") == "wa_2.conv_theta.weight"
    assert official_key("fusions.0.conv.bias") == "conv1_scale.bias"
    assert official_key("fusions.2.up.weight") == "feat_upsample_4.weight"
    with pytest.raises(ValueError, match="no counterpart"):
        official_key("backbone_extra.weight")


@pytest.mark.parametrize("backbone", list(OFFICIAL_BACKBONES))
def test_layout_matches_the_documented_state_dicts(official_docs, backbone):
    """Every key, shape and used/dead flag of the documented official state dicts, for all four backbones."""
    documented = read_tsv(official_docs / f"state_dict_{backbone}.tsv")
    assert layout_from_model(backbone) == documented
    dead = {k for k, (_, used) in documented.items() if not used}
    assert len(dead) == (30 if backbone == "fcn-resnet101" else 28)


@pytest.mark.parametrize("backbone", list(OFFICIAL_BACKBONES))
def test_tsv_state_converts_and_loads_strictly(official_docs, backbone):
    documented = read_tsv(official_docs / f"state_dict_{backbone}.tsv")
    state = cheap_state(documented)
    mapped, dropped = map_official_state_dict(state, template(backbone))
    assert sorted(dropped) == sorted(k for k, (_, used) in documented.items() if not used)
    dead_values = sum(math.prod(documented[k][0]) for k in dropped)
    assert dead_values == (242_995_931 if backbone == "fcn-resnet101" else 242_981_819)  # NOTES.md table
    model = build_official_model(backbone, state)  # strict load (meta-built model, tensors assigned)
    ours = model.state_dict()
    assert set(ours) == set(mapped)
    index = {k: i for i, k in enumerate(documented)}
    for key, value in ours.items():  # each tensor is the one of its official key
        assert value[(0,) * value.dim()].item() == index[official_key(key)], key
    assert model.readout == OFFICIAL_READOUT
    assert model.preprocess.size == (224, 320) and not model.preprocess.antialias


def test_module_prefix_and_wrappers_are_accepted(tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {"module.a.weight": torch.ones(2), "module.b": torch.zeros(1)}}, path)
    assert set(read_official(path)) == {"a.weight", "b"}
    torch.save({"model": {"a": torch.ones(1)}}, path)
    assert set(read_official(path)) == {"a"}


def test_unsafe_or_missing_files_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"a": torch.ones(1)}, "opt": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_official(path)
    with pytest.raises(WeightsNotFoundError):
        read_official(tmp_path / "absent.pth")


def test_errors_name_missing_unexpected_and_misshaped_keys():
    state = cheap_state(layout_from_model("fcn-resnet101"))
    del state["wa_2.conv_phi.bias"]
    state["extra_head.weight"] = torch.zeros(3)
    state["conv1_scale.weight"] = torch.zeros(21, 21, 3, 3)
    with pytest.raises(CheckpointError) as info:
        map_official_state_dict(state, template("fcn-resnet101"), "fcn-resnet101")
    message = str(info.value)
    assert "missing 1 [wa_2.conv_phi.bias]" in message
    assert "unexpected 1 [extra_head.weight]" in message
    assert "conv1_scale.weight: (21, 21, 3, 3) in the file vs (21, 42, 3, 3) expected" in message


def test_wrong_backbone_is_named():
    state = cheap_state(layout_from_model("resnet50"))
    with pytest.raises(CheckpointError, match=r"missing 476 \[backbone\.layer3\.6\.conv1\.weight.*like a resnet50"):
        map_official_state_dict(state, template("resnet101"), "resnet101")
    state = cheap_state(layout_from_model("resnext-101"))
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv2\.weight: \(256, 8, 3, 3\).*resnext-101"):
        map_official_state_dict(state, template("resnet101"), "resnet101")


def test_pruned_files_without_dead_keys_convert():
    layout = layout_from_model("resnet50")
    state = cheap_state({k: v for k, v in layout.items() if v[1]})
    mapped, dropped = map_official_state_dict(state, template("resnet50"))
    assert dropped == [] and len(mapped) == len(state)


# -- parity with the official equations -------------------------------------------------------------------------


@torch.inference_mode()
def test_forward_matches_the_official_equations(converted):
    _, _, model, src, trg, reference = converted
    ours = model(official_preprocess(src), official_preprocess(trg))
    assert [tuple(v.shape) for v in ours] == [tuple(r[0].shape) for r in reference]
    for level, ((ab, ba), volume) in enumerate(zip(reference, ours, strict=True)):
        torch.testing.assert_close(ba, ab.permute(0, 3, 4, 1, 2))  # BA is AB transposed: mmnet computes AB only
        scale = ab.abs().max()
        assert scale > 1e-3, f"degenerate random weights at level {level}"
        torch.testing.assert_close(volume / scale, ab / scale, rtol=0, atol=2e-5, msg=f"level {level}")


@torch.inference_mode()
def test_official_preset_reproduces_the_official_readout(converted):
    _, _, model, src, trg, reference = converted
    gen = torch.Generator().manual_seed(3)
    (hs, ws), (ht, wt) = src.shape[1:], trg.shape[1:]
    kps = torch.rand(24, 2, generator=gen) * torch.tensor([ws, hs])
    edges = [[0.0, 0.0], [ws - 1.0, hs - 1.0], [ws - 0.2, hs - 0.3], [ws - 0.01, 5.0], [3.0, hs - 0.4]]
    kps = torch.cat([kps, torch.tensor(edges)])  # the last cell band and the far edges clamp, as in the official code

    corr = reference[2][0][0]  # C2_AB of the pair: the level and direction the official test reads
    scale = torch.tensor([SIZE[1] / ws, SIZE[0] / hs])
    expected = official_predict(corr, kps * scale, SIZE)

    matcher = Matcher(model, preset="official", input_size=SIZE, device="cpu")
    assert matcher.readout == PRESETS["official"] and not matcher.preprocess.antialias and not matcher.amp
    result = matcher.match(src, trg, kps)
    assert torch.isfinite(result.keypoints).all()
    got = result.keypoints * torch.tensor([SIZE[1] / wt, SIZE[0] / ht])  # back into the resized frame
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


# -- files, CLI, registry ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """A random official resnet50 checkpoint written as the official code writes it (torch.save of a state dict)."""
    state = random_state(layout_from_model("resnet50"), seed=4)
    path = tmp_path_factory.mktemp("official") / "ckp_test_res50.pth"
    torch.save(state, path)
    return path, state


def test_cli_converts_and_matcher_loads_bit_exact(r50_file, tmp_path, capsys):
    path, state = r50_file
    out = tmp_path / "converted"
    assert main(["convert-official", str(path), "--backbone", "resnet50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dropped  28 dead tensors, 242,981,819 values" in printed and "upsample_16" in printed

    config = json.loads((out / "config.json").read_text())
    assert config["readout"] == OFFICIAL_READOUT
    assert config["preprocess"]["size"] == [224, 320] and config["preprocess"]["antialias"] is False
    assert config["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert config["preprocess"]["std"] == [0.229, 0.224, 0.225]
    source = config["converted_from"]
    assert source["file"] == path.name and source["sha256"] == sha256_of(path)
    assert source["backbone"] == "resnet50" and len(source["dropped_dead_keys"]) == 28

    matcher = Matcher.from_pretrained(out, device="cpu", fold_batchnorm=False)  # the weights as stored
    assert matcher.readout == PRESETS["official"]
    assert matcher.preprocess.size == (224, 320) and not matcher.preprocess.antialias
    used, _ = official_layout(matcher.model.state_dict())
    for official, ours in used.items():
        assert torch.equal(matcher.model.state_dict()[ours], state[official]), official


def test_fp16_conversion_round_trips_within_tolerance(r50_file, tmp_path):
    path, state = r50_file
    result = convert_official(path, "auto", tmp_path / "half", dtype=torch.float16, log=None)
    assert result.backbone == "resnet50"  # read off the keys
    stored = load_file(tmp_path / "half" / "model.safetensors")
    used, _ = official_layout(result.model.state_dict())
    for official, ours in used.items():
        if state[official].is_floating_point():
            assert stored[ours].dtype == torch.float16
            torch.testing.assert_close(stored[ours].float(), state[official], rtol=1e-3, atol=1e-4)
        else:
            assert torch.equal(stored[ours], state[official])
    assert mmnet.from_pretrained(tmp_path / "half").readout == OFFICIAL_READOUT


def test_cli_parser_has_convert_official():
    args = build_parser().parse_args(
        ["convert-official", "x.pth", "--backbone", "fcn-resnet101", "--out", "d", "--dtype", "fp16"]
    )
    assert args.backbone == "fcn-resnet101" and args.dtype == "fp16" and callable(args.func)


def test_cli_reports_a_mismatched_file(r50_file, tmp_path, capsys):
    path, _ = r50_file
    assert main(["convert-official", str(path), "--backbone", "resnet101", "--out", str(tmp_path / "x")]) == 2
    assert "look like a resnet50 checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("tag", ["pfpascal_official", "spair_official"])
def test_official_tags_explain_how_to_convert(tag, monkeypatch, tmp_path):
    name = f"mmnet_fcn_resnet101.{tag}"
    cfg = registry.get_pretrained_cfg(name)
    assert cfg.metrics["reproduced"] is False and cfg.metrics["reported"]
    monkeypatch.setitem(registry._PRETRAINED, name, replace(cfg, local_dir=str(tmp_path / "not-converted")))
    with pytest.raises(
        WeightsNotFoundError,
        match=r"convert-official ckp_(pascal|spair)_fcnres101\.pth "
        r"--backbone fcn-resnet101 --out",
    ):
        mmnet.from_pretrained(name)
