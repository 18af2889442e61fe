"""LPMFlow: parity with the authors' forward check, the official checkpoint converter, safetensors round trip.

The reference numbers below were recorded by running the official code (CPU, fp32) on weights filled
deterministically from the official key list (recipe in `fill_reference_state_dict`) and two random 512 x 512
images; docs/lpmflow.md describes the check.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import time
from pathlib import Path

import pytest
import torch

from mmnet.errors import CheckpointError, InputError
from mmnet.models.lpmflow import (
    LPMFlow,
    LpmflowConfig,
    arf,
    dino_resize_pos_embed,
    larl_relative_index,
    swin_relative_index,
)
from mmnet.zoo.convert.lpmflow import build_official_model, map_official_state_dict, official_layout

TSV = (
    Path(os.environ.get("MMNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    / "docs"
    / "official-lpmflow"
    / "state_dict_lpmflow.tsv"
)

# Official forward on the deterministic fill (fp32, torch 2.14.1 CPU); fp64 differs from fp32 by <= 3.0e-5 on the flow.
REFERENCE = {
    "flow": {"mean": -6.267093875350838, "std": 38.50940730660242, "min": -97.91142272949219, "max": 91.3714828491211},
    "flow_samples": {
        (0, 0): (51.823692321777344, 49.203529357910156),
        (64, 64): (-25.52329444885254, 9.416694641113281),
        (127, 127): (-63.27557373046875, -60.5184440612793),
        (10, 100): (-30.979408264160156, 68.9979248046875),
    },
    "flow_up_22": {"mean": 0.02592199040009291, "std": 36.93375329931044},
    "corr_22": {
        "mean": 0.007804707631245744,
        "std": 0.0004069033500149015,
        "min": 0.005959062371402979,
        "max": 0.009893874637782574,
    },
    "vit_src_cls_first5": [
        0.37034693360328674,
        -1.9089690446853638,
        -0.14817927777767181,
        1.9916704893112183,
        0.4739968180656433,
    ],
    "vit_src_tokens": {"mean": -9.262803527370145e-05, "std": 1.000099332189306},
    "fingerprints": {
        "masked_tokens": -14.306778169228096,
        "feature_extraction.backbone.patch_embed.proj.weight": -1.1727820338750732,
        "encoder.pos_embed": -4.545023836387337,
        "decoder_s3.last_block.0.cattn.qkv.weight": 3.3560211015914128,
        "SRBranches.refine2.2.bias": -0.013416226021945477,
    },
    "src_sum": -623.7171749167042,
    "trg_sum": 610.1256148684886,
}


def fill_reference_state_dict(model: LPMFlow, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official-layout weights of the forward check: keys in file order, one generator seeded `seed`; index
    buffers as constructed; x_normal / y_normal = linspace(-1, 1) without drawing; the four encoder aliases
    skipped, then set to their slices of encoder.pos_embed; every other tensor 0.02 * randn (one call per key),
    plus 1 for LayerNorm weights (last module name norm, norm1 .. norm4)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    layout = official_layout(model)
    for entry in layout:
        if entry.role == "index":
            kind, _, n = entry.target.partition(":")
            state[entry.key] = larl_relative_index(int(n)) if kind == "larl" else swin_relative_index(int(n))
        elif entry.key in ("x_normal", "y_normal"):
            state[entry.key] = torch.linspace(-1, 1, entry.shape[0])
        elif entry.role != "alias":
            value = 0.02 * torch.randn(entry.shape, generator=gen)
            if re.search(r"(^|\.)norm[1-4]?\.weight$", entry.key):
                value += 1.0
            state[entry.key] = value
    owner = state["encoder.pos_embed"]
    for entry in layout:
        if entry.role == "alias":
            state[entry.key] = owner[:, 1:] if entry.target.endswith("1:]") else owner[:, :1]
    return {e.key: state[e.key] for e in layout}


def random_official_state_dict(model: LPMFlow, seed: int = 0) -> dict[str, torch.Tensor]:
    """An exact official-layout state dict of random tensors (aliases as views, as torch.save stores them)."""
    return fill_reference_state_dict(model, seed)


def _meta_model(config: LpmflowConfig) -> LPMFlow:
    with torch.device("meta"):
        return LPMFlow(config)


# -- layout ---------------------------------------------------------------------------------------------------------


def test_official_layout_matches_the_recorded_key_list():
    if not TSV.is_file():
        pytest.skip(
            f"needs the key list of the official LPMFlow checkpoint (reference notes kept beside the "
            f"repository, not shipped with it), looked for at {TSV}; set MMNET_SHARED to run it"
        )
    layout = official_layout(_meta_model(LpmflowConfig()))
    rows = [line.rstrip("\n").split("\t") for line in TSV.read_text().splitlines()[1:]]
    assert [e.key for e in layout] == [r[0] for r in rows]
    assert [e.shape for e in layout] == [tuple(int(x) for x in r[1].split(",")) for r in rows]
    for entry, row in zip(layout, rows, strict=True):
        used = row[4] == "yes"
        if entry.key == "encoder.pos_embed":  # the alias owner: read through its aliases
            assert not used
        else:
            assert used == (entry.role in ("mapped", "resized", "alias", "index")), entry.key
        assert (row[6] == "yes") == (used or entry.role == "training"), entry.key


def test_layout_counts():
    layout = official_layout(_meta_model(LpmflowConfig()))
    assert len(layout) == 424
    dead = [e for e in layout if e.role == "dead"]
    assert len(dead) == 26 and sum(torch.Size(e.shape).numel() for e in dead) == 2_771_712
    assert sum(e.role == "index" for e in layout) == 11
    assert sum(e.role == "alias" for e in layout) == 4


# -- parity with the official forward (full size: one ViT-B/16 forward at 512 -> 256) --------------------------------


@pytest.fixture(scope="module")
def reference_run():
    with torch.device("meta"):
        template = LPMFlow(LpmflowConfig())
    state = fill_reference_state_dict(template)
    model, _ = build_official_model(state)
    gen = torch.Generator().manual_seed(1)
    source = torch.randn(1, 3, 512, 512, generator=gen)
    target = torch.randn(1, 3, 512, 512, generator=gen)
    tokens = {}
    model.backbone.register_forward_hook(lambda m, i, o: tokens.setdefault("vit", o))
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(source, target)
    return {
        "state": state,
        "source": source,
        "target": target,
        "out": out,
        "vit": tokens["vit"],
        "seconds": time.perf_counter() - start,
    }


def test_reference_fill_fingerprints(reference_run):
    state = reference_run["state"]
    for key, value in REFERENCE["fingerprints"].items():
        assert state[key].double().sum().item() == pytest.approx(value, abs=1e-4), key
    assert reference_run["source"].double().sum().item() == pytest.approx(REFERENCE["src_sum"], abs=1e-3)
    assert reference_run["target"].double().sum().item() == pytest.approx(REFERENCE["trg_sum"], abs=1e-3)


def test_parity_with_the_official_forward(reference_run):
    out = reference_run["out"]
    flow, corr, vit = out.flow, out.corr, reference_run["vit"]
    assert flow.shape == (1, 2, 128, 128) and corr.shape == (1, 1024, 1024)
    # ViT (timm + the DINO table resize)
    assert vit[0, 0, :5].tolist() == pytest.approx(REFERENCE["vit_src_cls_first5"], abs=1e-4)
    assert vit[0].std().item() == pytest.approx(REFERENCE["vit_src_tokens"]["std"], abs=1e-5)
    # finest matching map
    for stat in ("mean", "std", "min", "max"):
        assert getattr(corr, stat)().item() == pytest.approx(REFERENCE["corr_22"][stat], rel=1e-4), stat
    # the soft-argmax flow before refinement, and the final flow
    assert out.coarse_flow.mean().item() == pytest.approx(REFERENCE["flow_up_22"]["mean"], abs=1e-3)
    assert out.coarse_flow.std().item() == pytest.approx(REFERENCE["flow_up_22"]["std"], abs=1e-3)
    for stat in ("mean", "std", "min", "max"):
        assert getattr(flow, stat)().item() == pytest.approx(REFERENCE["flow"][stat], abs=1e-3), stat
    for (row, col), (dx, dy) in REFERENCE["flow_samples"].items():
        assert flow[0, :, row, col].tolist() == pytest.approx([dx, dy], abs=1e-3), (row, col)


# -- converter --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_official():
    config = LpmflowConfig.tiny()
    model = _meta_model(config)
    return config, random_official_state_dict(model, seed=3)


def test_tiny_conversion_is_strict_and_exact(tiny_official):
    config, state = tiny_official
    model, report = build_official_model(state, config)
    ours = model.state_dict()
    assert torch.equal(ours["encoder.blocks.0.attn.qkv.weight"], state["encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(ours["soft_argmax.grid_x"], state["x_normal"])
    assert torch.equal(ours["encoder.pos_embed"], state["encoder.pos_embed"])
    assert torch.equal(ours["train_source_pos"], state["pos_embed_src"])
    assert torch.equal(
        ours["backbone.body.pos_embed"], dino_resize_pos_embed(state["feature_extraction.backbone.pos_embed"], (4, 4))
    )
    assert len(report.roles["dead"]) == 22 and len(report.roles["alias"]) == 4 and not report.absent  # 2 blocks
    model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))


def test_conversion_errors_name_the_keys(tiny_official):
    config, state = tiny_official
    model = _meta_model(config)
    broken = dict(state)
    del broken["encoder.norm.weight"]
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing encoder\.norm\.weight.*unexpected extra\.weight"):
        map_official_state_dict(broken, model)
    diverged = dict(state, **{"encoder.pos_embed_trg": state["encoder.pos_embed_trg"] + 1})
    with pytest.raises(CheckpointError, match="pos_embed_trg != "):
        map_official_state_dict(diverged, model)
    index = dict(
        state,
        **{
            "encoder.blocks.0.attn.relative_position_index": state[
                "encoder.blocks.0.attn.relative_position_index"
            ].flip(0)
        },
    )
    with pytest.raises(CheckpointError, match="index formula"):
        map_official_state_dict(index, model)
    # dead keys may be absent (a pruned file); the training-only table then starts at zero
    pruned = {k: v for k, v in state.items() if k not in ("masked_tokens", "pos_embed_src")}
    mapped, report = map_official_state_dict(pruned, model)
    assert set(report.absent) == {"masked_tokens", "pos_embed_src"} and not mapped["train_source_pos"].any()


def test_full_size_official_layout_converts_strictly():
    """An exact ViT-B/16 official-layout state dict of random tensors converts and loads strictly."""
    template = _meta_model(LpmflowConfig())
    gen = torch.Generator().manual_seed(5)
    state = {}
    for entry in official_layout(template):
        if entry.role == "index":
            kind, _, n = entry.target.partition(":")
            state[entry.key] = larl_relative_index(int(n)) if kind == "larl" else swin_relative_index(int(n))
        elif entry.role != "alias":
            state[entry.key] = torch.randn(entry.shape, generator=gen)
    for alias in ("pos_embed_trg", "pos_embed_src"):
        state[f"encoder.{alias}"] = state["encoder.pos_embed"][:, 1:]
    for alias in ("cls_pos_embed_src", "cls_pos_embed_trg"):
        state[f"encoder.{alias}"] = state["encoder.pos_embed"][:, :1]
    model, report = build_official_model(state)
    assert sum(len(v) for v in report.roles.values()) == 424
    assert model.config.heads == 8 and model.config.encoder_depth == 6 and model.config.refine_windows == (16, 8, 4)
    assert torch.equal(
        model.state_dict()["refiner.stages.2.attn.rel_table"],
        state["SRBranches.refine_swin_decoder_4.0.transformer.layers.0.blocks.0.attn.relative_position_bias_table"],
    )


# -- pieces -----------------------------------------------------------------------------------------------------------


def test_arf_is_stable_and_matches_its_definition():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    definition = torch.clamp((torch.exp(2 * x) - 1) / (torch.exp(2 * x) + torch.exp(torch.tensor(-4.0))), min=0)
    assert torch.allclose(arf(x), definition, atol=1e-12)
    assert torch.isfinite(arf(torch.tensor([-1e4, 1e4]))).all()


def test_relative_indices():
    index = larl_relative_index(16)
    assert index.shape == (512, 512) and index.max() == 3843 and index.min() == 0
    # source patch (0, 0) vs target patch (15, 15): offset (-15, -15), regions (0, 1)
    assert index[0, 256 + 255] == ((0 - 15 + 15) * 31 + (0 - 15 + 15)) * 4 + 1
    assert swin_relative_index(4).shape == (16, 16) and swin_relative_index(4).max() == 48


def test_dino_resize_keeps_cls_and_differs_from_plain_resize():
    table = torch.randn(1, 197, 8)
    resized = dino_resize_pos_embed(table, (16, 16))
    assert resized.shape == (1, 257, 8) and torch.equal(resized[:, :1], table[:, :1])
    plain = torch.nn.functional.interpolate(
        table[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic", align_corners=False
    )
    assert not torch.allclose(resized[0, 1:].T.reshape(8, 16, 16), plain[0], atol=1e-4)


def test_tiny_model_trains_every_parameter():
    torch.manual_seed(0)
    model = LPMFlow(LpmflowConfig.tiny()).train()
    out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 48, 80))
    assert out.flow.shape == (2, 2, 32, 32) and out.replaced.shape == (2, 4)
    (out.flow.square().mean() + out.source_tokens.square().mean()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)).replaced is None


def test_config_errors():
    with pytest.raises(InputError, match="refine window 5"):
        LPMFlow(LpmflowConfig.tiny(refine_windows=(5,)))
    with pytest.raises(InputError, match="unknown LPMFlow config keys"):
        LpmflowConfig.from_dict({"nope": 1})
    assert LpmflowConfig.from_dict(LpmflowConfig.tiny().to_dict()) == LpmflowConfig.tiny()


def test_args_pickle_is_read_without_running_code(tmp_path):
    from mmnet.zoo.convert.lpmflow import read_args

    good = tmp_path / "args.pkl"
    good.write_bytes(pickle.dumps(argparse.Namespace(num_heads=8, mlp_ratio=4.0, feature_size=128)))
    assert read_args(good)["num_heads"] == 8

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(argparse.Namespace(x=Evil())))
    with pytest.raises(CheckpointError):
        read_args(bad)
    assert not (tmp_path / "pwned").exists()


# -- checkpoints and the matcher -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = LPMFlow(LpmflowConfig.tiny()).eval()
    with torch.no_grad():  # make the random head less uniform than its init, so readouts differ across cells
        model.encoder.pos_embed.normal_(0, 1.0)
    return model


def test_safetensors_round_trip_is_exact(tiny_model, tmp_path):
    from mmnet.matching.lpmflow import load_lpmflow, save_lpmflow

    save_lpmflow(tiny_model, tmp_path / "ckpt", readout={"preset": "official"})
    loaded = load_lpmflow(tmp_path / "ckpt")
    assert loaded.readout == {"preset": "official"} and loaded.config == tiny_model.config
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.encoder.blocks[0].attn.rel_index, larl_relative_index(4))
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(a, b).flow, tiny_model(a, b).flow)


def test_loading_another_family_fails_clearly(tmp_path):
    from mmnet.matching.lpmflow import load_lpmflow

    (tmp_path / "config.json").write_text('{"architecture": "mmnet_resnet50", "model": {}}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not an LPMFlow model"):
        load_lpmflow(tmp_path)


def test_matcher_default_readout(tiny_model):
    from mmnet.matching.lpmflow import LpmflowMatcher

    matcher = LpmflowMatcher(tiny_model, device="cpu")
    gen = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(3, 50, 70, generator=gen), torch.rand(3, 40, 30, generator=gen)
    points = [[10.0, 20.0], [69.4, 49.4], [-3.0, 5.0]]
    result = matcher.match(src, tgt, points)
    assert result.keypoints.shape == (3, 2) and torch.isnan(result.keypoints[2]).all() and result.scores[2] == 0
    assert ((result.scores[:2] >= 0) & (result.scores[:2] <= 1)).all()
    flow = matcher.flow(src, tgt)
    assert flow.flow.shape == (2, 50, 70)
    # match at a pixel is the dense flow at that pixel
    assert (torch.tensor([10.0, 20.0]) + flow.flow[:, 20, 10]).tolist() == pytest.approx(
        result.keypoints[0].tolist(), abs=1e-3
    )


def test_matcher_official_readout(tiny_model):
    from mmnet.matching.lpmflow import LpmflowMatcher

    matcher = LpmflowMatcher(tiny_model, device="cpu", preset="official", input_size=(128, 128))
    assert matcher.convention == "corner" and matcher.preprocess.size == (128, 128)
    gen = torch.Generator().manual_seed(1)
    src, tgt = torch.rand(3, 64, 96, generator=gen), torch.rand(3, 32, 48, generator=gen)
    points = torch.tensor([[10.7, 20.2], [95.9, 63.9]])
    result = matcher.match(src, tgt, points)
    # by hand: the 128 frame, truncation, flow up-sampled to 128 and scaled by 128 / 32
    flow, _ = matcher._run([src], [tgt])
    up = torch.nn.functional.interpolate(flow, size=(128, 128), mode="bilinear", align_corners=False)[0] * 4
    for (x, y), got in zip(points.tolist(), result.keypoints, strict=True):
        fx, fy = min(int(x * 128 / 96), 127), min(int(y * 128 / 64), 127)
        expected = [(fx + up[0, fy, fx].item()) * 48 / 128, (fy + up[1, fy, fx].item()) * 32 / 128]
        assert got.tolist() == pytest.approx(expected, abs=1e-4)


def test_matcher_rejects_bad_options(tiny_model):
    from mmnet.matching.lpmflow import LpmflowMatcher

    with pytest.raises(InputError, match="unknown preset"):
        LpmflowMatcher(tiny_model, device="cpu", preset="fast")
    with pytest.raises(InputError, match="input_size"):
        LpmflowMatcher(tiny_model, device="cpu", input_size=(4, 4))


def test_convert_an_official_folder_end_to_end(tiny_official, tmp_path):
    """model_best.pth as train.py writes it (wrapper dict, optimizer state) + args.pkl -> safetensors -> matcher."""
    from mmnet.matching.lpmflow import LpmflowMatcher
    from mmnet.zoo.convert.lpmflow import convert_lpmflow

    config, state = tiny_official
    folder = tmp_path / "spair"
    folder.mkdir()
    torch.save(
        {
            "epoch": 3,
            "state_dict": state,
            "best_loss": 61.2,
            "scheduler": {"milestones": {100: 1}},
            "optimizer": {
                "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
                "param_groups": [{"lr": 4e-5, "params": [0]}],
            },
        },
        folder / "model_best.pth",
    )
    (folder / "args.pkl").write_bytes(
        pickle.dumps(argparse.Namespace(num_heads=4, mlp_ratio=4.0, feature_size=128, benchmark="spair"))
    )
    result = convert_lpmflow(folder, tmp_path / "out", config=config, log=None)
    saved = (tmp_path / "out" / "config.json").read_text()
    assert '"architecture": "lpmflow_vit_tiny_test"' in saved and '"preset": "official"' in saved
    assert result.args["benchmark"] == "spair" and len(result.report.roles["dead"]) == 22
    matcher = LpmflowMatcher.create(tmp_path / "out", device="cpu")  # the test architecture is not registered
    assert matcher.preset == "official" and matcher.preprocess.size == (512, 512)
    reference, _ = build_official_model(state, config)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(matcher.model(a, b).flow, reference(a, b).flow)
    with pytest.raises(CheckpointError, match="num_heads"):  # args.pkl from another run
        (folder / "args.pkl").write_bytes(pickle.dumps(argparse.Namespace(num_heads=8, mlp_ratio=4.0)))
        convert_lpmflow(folder, None, log=None, config=None)


def test_registry_names_and_tags():
    import mmnet

    assert "lpmflow_vit_base_patch16" in mmnet.list_models("lpmflow*")
    tags = mmnet.list_models("lpmflow*", pretrained=True)
    assert {t.split(".")[1] for t in tags} >= {"spair_official", "pfpascal_official", "pfwillow_official"}
    from mmnet.errors import WeightsNotFoundError
    from mmnet.zoo.catalog import OFFICIAL_HOME

    if not (OFFICIAL_HOME / "lpmflow_vit_base_patch16.spair_official").exists():
        with pytest.raises(WeightsNotFoundError, match="mmnet convert-lpmflow"):
            mmnet.create_matcher("lpmflow_vit_base_patch16.spair_official")


# -- training objectives ------------------------------------------------------------------------------------------


def test_rptc_lambda_schedules():
    from mmnet.train.lpmflow import rptc_lambda

    code = [rptc_lambda(e) for e in range(12)]
    assert code[:5] == pytest.approx([0.2, 0.2, 0.1, 0.2 / 3, 0.05]) and code[10] == pytest.approx(0.02)
    assert code[11] == pytest.approx(0.02)
    paper = [rptc_lambda(e, "supplement") for e in range(12)]
    assert paper[0] == pytest.approx(0.2) and paper[5] == pytest.approx(0.1) and paper[10] == paper[11] == 0
    with pytest.raises(InputError, match="schedule"):
        rptc_lambda(0, "cosine")


def test_rptc_loss_prefers_consistent_tokens():
    from mmnet.train.lpmflow import rptc_loss

    torch.manual_seed(0)
    replaced = torch.tensor([[0, 5, 10, 15]])
    smooth = torch.randn(1, 1, 8).expand(1, 17, 8).clone() + 0.01 * torch.randn(1, 17, 8)  # every patch alike
    smooth[0, 1:] += torch.arange(16.0)[:, None] * 0.001
    noisy = torch.randn(1, 17, 8, requires_grad=True)
    assert rptc_loss(smooth, replaced, 4) < rptc_loss(noisy, replaced, 4)
    rptc_loss(noisy, replaced, 4).backward()
    assert noisy.grad[0, 1 + 5].abs().sum() > 0


def test_flow_losses():
    from mmnet.train.lpmflow import flow_loss, official_flow_target

    src_kps = torch.tensor([[[100.0, 200.0], [300.0, 40.0]]])
    tgt_kps = src_kps + torch.tensor([40.0, -20.0])
    valid = torch.tensor([[True, True]])
    flow = torch.zeros(1, 2, 128, 128)
    flow[:, 0], flow[:, 1] = 40 / 4, -20 / 4  # a translation in cells of a 512 frame's 128 grid
    assert flow_loss(flow, src_kps, tgt_kps, valid, (512, 512), (512, 512)).item() == pytest.approx(0, abs=1e-5)
    assert flow_loss(flow, src_kps, tgt_kps, valid, (512, 512), (512, 512), "official").item() == pytest.approx(0)
    gt = official_flow_target(src_kps, tgt_kps, valid)
    # cell (50, 25): box x in [85, 119], y in [185, 219] holds the first keypoint only
    assert gt[0, :, 50, 25].tolist() == [10.0, -5.0] and gt[0, :, 0, 0].tolist() == [0.0, 0.0]


def test_lpmflow_loss_trains_the_tiny_model():
    from mmnet.train.lpmflow import lpmflow_loss, lpmflow_param_groups

    torch.manual_seed(0)
    model = LPMFlow(LpmflowConfig.tiny()).train()
    optimizer = torch.optim.AdamW(lpmflow_param_groups(model))
    src, tgt = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    kps = torch.rand(2, 5, 2) * 63
    valid = torch.ones(2, 5, dtype=torch.bool)
    loss, parts = lpmflow_loss(model, src, tgt, kps, kps.flip(-1), valid, epoch=0)
    assert parts["lambda"] == 0.2 and parts["rptc"] > 0 and parts["epe"] > 0
    loss.backward()
    optimizer.step()
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_self_supervised_checkpoint_loading(tmp_path):
    from mmnet.errors import WeightsNotFoundError

    torch.manual_seed(0)
    model = LPMFlow(LpmflowConfig.tiny())
    import timm

    native = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=4)
    state = {f"module.backbone.{k}": v for k, v in native.state_dict().items()}
    state["module.head.mlp.0.weight"] = torch.zeros(2, 2)  # iBOT/DINO projection head: ignored
    torch.save({"teacher": state, "epoch": 100}, tmp_path / "checkpoint.pth")
    model.backbone.load_self_supervised(tmp_path / "checkpoint.pth")
    assert torch.equal(model.backbone.body.blocks[0].attn.qkv.weight, native.blocks[0].attn.qkv.weight)
    assert torch.equal(model.backbone.body.pos_embed, dino_resize_pos_embed(native.pos_embed, (4, 4)))
    torch.save({"state_dict": {"backbone.cls_token": torch.zeros(1, 1, 192)}}, tmp_path / "backbone_only.pth")
    with pytest.raises(CheckpointError, match="lacks"):
        model.backbone.load_self_supervised(tmp_path / "backbone_only.pth")
    with pytest.raises(WeightsNotFoundError):
        model.backbone.load_self_supervised(tmp_path / "missing.pth")
