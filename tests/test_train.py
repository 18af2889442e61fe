"""Training: synthetic-warp ground truth, pair adapters, loss going down, exact resume, DDP on gloo."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmnet.train import (
    Augment,
    CsvPairs,
    MixedPairs,
    SupervisedPairs,
    SyntheticPairs,
    TrainConfig,
    Trainer,
    WarpConfig,
    collate,
    lr_factor,
)
from mmnet.train.loss import mmnet_loss
from mmnet.train.synthetic import RandomWarp, apply_homography, homography_from_points
from mmnet.zoo import create_model

SIZE = (64, 96)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models gain nothing from more, and on a loaded machine extra threads
    spin-wait for each other (orders of magnitude slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _smooth_image(rng: np.random.Generator, h: int = 120, w: int = 160) -> np.ndarray:
    """A smooth random RGB image (low-frequency noise), uint8."""
    coarse = torch.from_numpy(rng.uniform(0, 1, (1, 3, 6, 8))).float()
    return (
        (
            F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]
            .clamp(0, 1)
            .permute(1, 2, 0)
            .numpy()
            * 255
        )
        .round()
        .astype(np.uint8)
    )


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(_smooth_image(rng)).save(folder / f"p{i}.png")
    return folder


def _bilinear(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sample (C, H, W) at pixel xy (N, 2) -> (N, C)."""
    h, w = image.shape[-2:]
    grid = torch.stack([(2 * points[:, 0] + 1) / w - 1, (2 * points[:, 1] + 1) / h - 1], -1)
    return F.grid_sample(image[None], grid.view(1, 1, -1, 2), align_corners=False)[0, :, 0].T


def test_homography_maps_corners() -> None:
    src = np.array([[0, 0], [95, 0], [95, 63], [0, 63]], float)
    dst = src + np.random.default_rng(1).uniform(-8, 8, src.shape)
    h = homography_from_points(src, dst)
    assert torch.allclose(apply_homography(h, torch.from_numpy(src)), torch.from_numpy(dst), atol=1e-6)


def test_warp_points_agree_with_warped_image() -> None:
    """A coordinate image warped with T holds T(p) at every target pixel p that lands inside."""
    rng = np.random.default_rng(0)
    h, w = SIZE
    warp = RandomWarp.sample(SIZE, rng, WarpConfig(tps=0.05))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    coords = torch.stack([xs, ys, torch.ones_like(xs)])
    warped = warp.warp_image(coords)
    p = torch.from_numpy(rng.uniform([0, 0], [w - 1, h - 1], (200, 2))).float()
    q = warp(p)
    inside = (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)
    sampled = _bilinear(warped, p[inside])
    # points whose 4 neighbouring target pixels all come from inside the source (third channel 1): the
    # coordinate image is linear, so bilinear sampling reproduces T(p) up to the warp's small curvature
    full = sampled[:, 2] > 0.9999
    assert full.sum() > 50
    assert torch.allclose(sampled[full, :2], q[inside][full], atol=0.05)


def test_synthetic_pairs_keypoints_match_pixels(photo_dir: Path) -> None:
    """Without colour jitter, src at src_kps and tgt at tgt_kps show the same colour (either role order)."""
    data = SyntheticPairs(photo_dir, size=SIZE, n_points=30, warp=WarpConfig(jitter=0.0), seed=3)
    for index in range(4):
        s = data[index]
        v = s["valid"]
        assert v.sum() >= 4 and not v[v.sum() :].any()  # valid rows first, then padding
        assert torch.all(s["src_kps"][~v] == 0)
        a, b = _bilinear(s["src"], s["src_kps"][v]), _bilinear(s["tgt"], s["tgt_kps"][v])
        assert (a - b).abs().mean() < 0.03
    again = SyntheticPairs(photo_dir, size=SIZE, n_points=30, warp=WarpConfig(jitter=0.0), seed=3)[2]
    assert all(torch.equal(again[k], data[2][k]) for k in again)  # pure function of (seed, epoch, index)


def _write_csv(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(_smooth_image(rng, 100, 150)).save(folder / "a.png")
    Image.fromarray(_smooth_image(rng, 80, 60)).save(folder / "b.png")
    path = folder / "pairs.csv"
    path.write_text(
        "source_image,target_image,XA,YA,XB,YB,flip\n"
        "a.png,b.png,10;149;50,20;99;nan,5;59;30,6;79;40,0\n"
        "b.png,a.png,1;2,3;4,5;6,7;8,1\n"
    )
    return path


def test_csv_pairs_scaled_and_padded(tmp_path: Path) -> None:
    data = CsvPairs(_write_csv(tmp_path))
    assert len(data) == 2 and data[0].valid.tolist() == [True, True, False]
    sample = SupervisedPairs(data, size=SIZE, max_kps=5, augment=Augment.none())[0]
    assert sample["valid"].tolist() == [True, True, False, False, False]
    # pixel centres are scaled: x' = (x + 0.5) * W'/W - 0.5
    assert torch.allclose(sample["src_kps"][1], torch.tensor([149.5 * 96 / 150 - 0.5, 99.5 * 64 / 100 - 0.5]))
    assert torch.allclose(sample["tgt_kps"][1], torch.tensor([59.5 * 96 / 60 - 0.5, 79.5 * 64 / 80 - 0.5]))
    assert torch.all(sample["src_kps"][2:] == 0) and sample["src"].shape == (3, *SIZE)
    flipped = SupervisedPairs(data, size=SIZE, max_kps=5, augment=Augment.none())[1]  # csv flip=1
    assert torch.allclose(flipped["src_kps"][0, 0], torch.tensor((60 - 1 - 1) * 96 / 60 + 0.5 * 96 / 60 - 0.5))


def test_cub_adapter_flip_swaps_parts(data_root: Path) -> None:
    from mmnet.data import load_dataset

    ds = load_dataset(
        "cub", data_root / "cub-200-2011-cls001-050", split="trn", pairs="trn_pairs_cub_cls001-050_sameclass_seed0.csv"
    )
    plain = SupervisedPairs(ds, max_kps=15, augment=Augment.none())[0]
    mirrored = SupervisedPairs(ds, max_kps=15, augment=Augment(flip=1.0, crop=0.0, jitter=0.0))[0]
    assert torch.allclose(mirrored["src"], plain["src"].flip(-1), atol=1e-5)
    rec = ds[0]
    expected = ds.mirror(rec)
    assert mirrored["valid"].sum() == plain["valid"].sum() == rec.n_valid
    first = int(np.flatnonzero(expected.valid)[0])
    scale = 320 / expected.src_size[1]
    assert abs(float(mirrored["src_kps"][0, 0]) - ((expected.src_kps[first, 0] + 0.5) * scale - 0.5)) < 1e-3


def test_mixed_pairs_and_collate(photo_dir: Path, tmp_path: Path) -> None:
    sup = SupervisedPairs(CsvPairs(_write_csv(tmp_path)), size=SIZE, max_kps=8)
    syn = SyntheticPairs(photo_dir, size=SIZE, n_points=8)
    mixed = MixedPairs([sup, syn], [0.5, 0.5], length=20)
    batch = collate([mixed[i] for i in range(6)])
    assert batch["src"].shape == (6, 3, *SIZE) and batch["valid"].shape[1] <= 8
    assert batch["valid"].any(1).all()
    assert lr_factor(0, TrainConfig(warmup=10)) == pytest.approx(0.1)
    assert lr_factor(999, TrainConfig(steps=1000, warmup=10, min_lr_ratio=0.0)) < 1e-4


class _Fixed:
    def __init__(self, samples: list[dict[str, torch.Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]

    def set_epoch(self, epoch: int) -> None:
        pass


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mmnet_resnet18", pretrained_backbone=False, channels=8, sem_channels=8)


def test_training_reduces_loss(photo_dir: Path, tmp_path: Path) -> None:
    syn = SyntheticPairs(photo_dir, size=SIZE, n_points=10, seed=0)
    fixed = _Fixed([syn[i] for i in range(2)])
    batch = collate(fixed.samples)
    model = _tiny_model()

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(
                mmnet_loss(model, batch["src"], batch["tgt"], batch["src_kps"], batch["tgt_kps"], batch["valid"])
            )

    before = loss()
    config = TrainConfig(
        steps=20, batch_size=2, lr=3e-3, warmup=0, train_backbone="frozen", checkpoint_minutes=0, log_every=5
    )
    Trainer(model, fixed, config, tmp_path / "run", progress=False).fit()
    after = loss()
    assert after < 0.85 * before  # the soft targets put a floor under the BCE: 0.73 here
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 5  # header + steps 5, 10, 15, 20


def test_frozen_backbone_stays_fixed(photo_dir: Path, tmp_path: Path) -> None:
    model = _tiny_model()
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    syn = SyntheticPairs(photo_dir, size=SIZE, n_points=6, seed=0)
    config = TrainConfig(steps=2, batch_size=2, train_backbone="frozen", checkpoint_minutes=0)
    trainer = Trainer(model, syn, config, tmp_path / "run", progress=False)
    assert {g["name"] for g in trainer.optimizer.param_groups} == {"head", "head_no_decay"}
    trainer.fit()
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.items())  # incl. BN stats
    last = Trainer(_tiny_model(), syn, TrainConfig(train_backbone="last1"), tmp_path / "r2", progress=False)
    trainable = {n.split(".")[2] for n, p in last.model.named_parameters() if p.requires_grad and "backbone" in n}
    assert trainable == {"layer4"}


def test_resume_is_bit_identical(photo_dir: Path, tmp_path: Path) -> None:
    def make(seed: int) -> Trainer:
        sup = SupervisedPairs(CsvPairs(_write_csv(tmp_path)), size=SIZE, max_kps=6)
        syn = SyntheticPairs(photo_dir, size=SIZE, n_points=6, seed=1)
        data = MixedPairs([sup, syn], [0.5, 0.5], length=6, seed=1)
        config = TrainConfig(
            steps=4,
            batch_size=1,
            accumulate=2,
            lr=1e-3,
            warmup=1,
            train_backbone="frozen",
            checkpoint_minutes=0,
            seed=5,
        )
        return Trainer(_tiny_model(seed), data, config, tmp_path / f"run{seed}", progress=False)

    straight = make(0)
    straight.fit()
    first = make(0)
    first.fit(stop_at=2)  # 6 batches per epoch: steps 3-4 continue epoch 0, step 4 starts epoch 1
    assert first.step == 2
    resumed = make(7)  # another init: everything must come from the checkpoint
    resumed.out_dir = first.out_dir
    resumed.fit(resume="auto")
    assert resumed.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        resumed.optimizer.state_dict()["state"][0]["exp_avg"]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, photos: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        syn = SyntheticPairs(photos, size=SIZE, n_points=6, seed=0)
        config = TrainConfig(steps=2, batch_size=1, lr=1e-3, warmup=0, train_backbone="frozen", checkpoint_minutes=0)
        trainer = Trainer(_tiny_model(rank), syn, config, out, progress=False)  # rank 1 starts different...
        torch.distributed.barrier()
        trainer.fit()
        torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_processes(photo_dir: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(photo_dir), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # ...but DDP broadcasts rank 0's weights and averages gradients, so both end identical
    assert all(torch.equal(a[k], b[k]) for k in a)
    init = _tiny_model(0).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)
    assert (tmp_path / "last.pt").is_file()


def test_loss_levels_sum_the_coarsest_levels_only() -> None:
    from mmnet.models.mmnet import MMNet, MMNetConfig
    from mmnet.train.loss import mmnet_loss

    torch.manual_seed(0)
    model = MMNet(MMNetConfig(backbone="efficientnet_lite0"))
    src, tgt = torch.randn(2, 1, 3, 64, 96).unbind(0)
    kps = torch.tensor([[[10.0, 12.0], [50.0, 40.0], [80.0, 30.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    losses = [float(mmnet_loss(model, src, tgt, kps, kps.flip(-1).clamp(max=60), valid, levels=n)) for n in range(5)]
    assert losses[0] == pytest.approx(losses[4], rel=1e-6)
    assert losses[1] < losses[2] < losses[3] < losses[4]


def test_training_sees_the_pixels_inference_sees(tmp_path: Path) -> None:
    """An RGBA source: training composites it on white like `load_image` (not alpha dropped, as before), and the
    training tensor is exactly `prepare(load_image(path))`, the input a matcher builds."""
    from mmnet.matching.images import PreprocessConfig, load_image, prepare

    rng = np.random.default_rng(0)
    rgba = np.concatenate([_smooth_image(rng, 50, 70), rng.integers(0, 256, (50, 70, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(_smooth_image(rng, 40, 30)).save(tmp_path / "b.png")
    (tmp_path / "pairs.csv").write_text("source_image,target_image,XA,YA,XB,YB\na.png,b.png,5;60,7;40,3;20,4;30\n")
    sample = SupervisedPairs(CsvPairs(tmp_path / "pairs.csv"), size=SIZE, max_kps=4, augment=Augment.none())[0]
    config = PreprocessConfig(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    expected = prepare(load_image(tmp_path / "a.png")[None], config)[0]
    assert torch.equal(sample["src"], expected)
    alpha_dropped = torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255
    assert (sample["src"] - prepare(alpha_dropped[None], config)[0]).abs().max() > 0.5
    # synthetic pairs read photos the same way (no flip, whole photo: the base image is load_image resized)
    (tmp_path / "photos").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photos" / "a.png")
    syn = SyntheticPairs(tmp_path / "photos", size=SIZE, warp=WarpConfig(flip=0.0, crop=(1.0, 1.0)))
    base = syn.base_image(0, np.random.default_rng(0))
    assert torch.equal(
        base,
        F.interpolate(
            load_image(tmp_path / "a.png")[None], size=SIZE, mode="bilinear", align_corners=False, antialias=True
        )[0],
    )


def test_csv_keypoints_are_in_the_exif_oriented_frame(tmp_path: Path) -> None:
    """A photo stored sideways with EXIF orientation 6: csv keypoints are read in the frame a viewer (and
    `load_image`, `mmnet match`) shows, so the annotated spot is where the keypoint lands after preprocessing."""
    from mmnet.matching.images import load_image

    shown = np.zeros((60, 40, 3), np.uint8)  # as displayed: 60 high, 40 wide, a white block around (30, 10)
    shown[7:14, 27:34] = 255
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # 40 high, 60 wide on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "a.jpg", exif=exif, quality=95)
    Image.fromarray(shown).save(tmp_path / "b.png")
    assert load_image(tmp_path / "a.jpg").shape == (3, 60, 40)
    (tmp_path / "pairs.csv").write_text("source_image,target_image,XA,YA,XB,YB\na.jpg,b.png,30;5,10;50,30;5,10;50\n")
    data = CsvPairs(tmp_path / "pairs.csv")
    assert data[0].src_size == (60, 40)  # oriented (H, W), not the stored (40, 60)
    sample = SupervisedPairs(data, size=SIZE, max_kps=2, augment=Augment.none())[0]
    for image, kps in ((sample["src"], sample["src_kps"]), (sample["tgt"], sample["tgt_kps"])):
        values = _bilinear(image * 0.5 + 0.5, kps).mean(1)  # undo the (0.5, 0.5) normalisation
        assert values[0] > 0.8 and values[1] < 0.2  # on the block, off the block


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_kps": 0}, "max_kps must be an integer >= 1, got 0"),
        ({"size": (0, 32)}, "size must be"),
        ({"size": (64,)}, r"size must be \(height, width\)"),
    ],
)
def test_pair_sources_check_max_kps_and_size(tmp_path: Path, photo_dir: Path, kwargs: dict, message: str) -> None:
    from mmnet.errors import InputError

    with pytest.raises(InputError, match=message):
        SupervisedPairs(CsvPairs(_write_csv(tmp_path)), **kwargs)
    syn_kwargs = {"n_points" if k == "max_kps" else k: v for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message.replace("max_kps", "n_points")):
        SyntheticPairs(photo_dir, **syn_kwargs)


def _tiny_cats() -> torch.nn.Module:
    from mmnet.zoo import create_model

    torch.manual_seed(0)
    return create_model("cats_resnet18", hyperpixels=(0, 5, 6), feature_size=4, proj_dim=8, num_heads=2)


def _tiny_lpmflow() -> torch.nn.Module:
    from mmnet.models.lpmflow import LPMFlow, LpmflowConfig

    torch.manual_seed(0)
    return LPMFlow(LpmflowConfig.tiny())


@pytest.mark.parametrize(
    ("make", "options"),
    [(_tiny_cats, {}), (_tiny_cats, {"objective": "keypoint"}), (_tiny_lpmflow, {"flow_target": "official"})],
)
def test_cats_and_lpmflow_train_with_their_objectives_and_resume(
    photo_dir: Path, tmp_path: Path, make, options: dict
) -> None:
    """One step of each family's own loss moves the weights, and a resumed run is bit-identical."""
    from mmnet.train.families import CatsObjective, LpmflowObjective

    def trainer(run: str) -> Trainer:
        syn = SyntheticPairs(photo_dir, size=(64, 64), n_points=6, seed=0)
        config = TrainConfig(steps=2, batch_size=1, lr=1e-3, warmup=0, checkpoint_minutes=0, **options)
        return Trainer(make(), syn, config, tmp_path / run, progress=False)

    straight = trainer("a")
    assert isinstance(straight.objective, (CatsObjective, LpmflowObjective))
    before = {k: v.clone() for k, v in straight.model.state_dict().items()}
    straight.fit()
    assert any(not torch.equal(before[k], v) for k, v in straight.model.state_dict().items())
    first = trainer("b")
    first.fit(stop_at=1)
    resumed = trainer("b")
    resumed.fit(resume="auto")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert resumed.step == 2 and all(torch.equal(a[k], b[k]) for k in a)


def test_family_settings_that_do_not_apply_are_refused(photo_dir: Path, tmp_path: Path) -> None:
    from mmnet.errors import InputError

    syn = SyntheticPairs(photo_dir, size=(64, 64), n_points=6)
    for model, config, message in [
        (_tiny_model(), TrainConfig(objective="flow"), "objective 'flow' does not apply to mmnet_"),
        (_tiny_model(), TrainConfig(flow_target="official"), "flow_target 'official' does not apply to mmnet_"),
        (_tiny_cats(), TrainConfig(train_backbone="last2"), "train_backbone 'last2' needs MMNet"),
        (_tiny_cats(), TrainConfig(loss_levels=2), "loss_levels 2 applies to mmnet_"),
        (_tiny_lpmflow(), TrainConfig(objective="keypoint"), "allowed: 'default'"),
    ]:
        with pytest.raises(InputError, match=message):
            Trainer(model, syn, config, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="objective must be one of 'default', 'flow', 'keypoint', got 'epe'"):
        TrainConfig(objective="epe")


def test_resume_and_short_warmup_each_print_one_line(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    syn = SyntheticPairs(photo_dir, size=SIZE, n_points=6)
    config = TrainConfig(steps=2, batch_size=2, warmup=10, checkpoint_minutes=0)
    Trainer(_tiny_model(), syn, config, tmp_path / "run", progress=False).fit(stop_at=1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "warmup (10 steps) is longer than the run (2 steps)" in lines[0]
    Trainer(
        _tiny_model(),
        syn,
        TrainConfig(steps=2, batch_size=2, warmup=1, checkpoint_minutes=0),
        tmp_path / "run",
        progress=False,
    ).fit(resume="auto")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resuming from {tmp_path / 'run' / 'last.pt'} at step 1 of 2")


def _train_cli(args: list[str]) -> int:
    from mmnet.train.cli import main

    return main(args)


def test_cli_release_keeps_the_readout_of_init_and_records_a_runnable_command(tmp_path: Path) -> None:
    """`--init X --release DIR` writes X's readout (issue: it wrote {} and predictions moved); the recorded
    command is `mmnet train` with the real flags and parses to the same options, through `mmnet` itself too."""
    import json
    import shlex

    from mmnet.cli import build_parser as mmnet_parser
    from mmnet.train.cli import build_parser
    from mmnet.zoo import from_pretrained, save_pretrained

    save_pretrained(_tiny_model(), tmp_path / "init", readout={"level": 2})
    csv_path = _write_csv(tmp_path)
    argv = [
        "--init",
        str(tmp_path / "init"),
        "--csv",
        str(csv_path),
        "--size",
        "64",
        "96",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--warmup",
        "0",
        "--no-augment",
        "--freeze-bn",
        "false",
        "--out",
        str(tmp_path / "run"),
        "--release",
        str(tmp_path / "release"),
        "--no-progress",
        "--threads",
        "1",
    ]
    assert _train_cli(argv) == 0
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    assert config["readout"] == {"level": 2} and from_pretrained(tmp_path / "release").readout == {"level": 2}
    command = config["training"]["command"]
    words = shlex.split(command)
    assert words[:2] == ["mmnet", "train"]
    assert vars(build_parser().parse_args(words[2:])) == vars(build_parser().parse_args(argv))
    parsed = mmnet_parser("train").parse_args(words[1:])
    assert parsed.init == str(tmp_path / "init") and parsed.freeze_bn is False and parsed.size == [64, 96]
    # told otherwise: --release-readout; a bad one fails before any training
    assert _train_cli([*argv, "--release-readout", '{"level": 3}', "--resume", "none"]) == 0
    assert json.loads((tmp_path / "release" / "config.json").read_text())["readout"] == {"level": 3}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--release-readout", "{level: 2}"], "--release-readout must be a JSON object"),
        (["--release-readout", '{"lvl": 2}'], "lvl"),
        (["--release-best"], "--release-best needs validation"),
        (["--max-kps", "0"], "max_kps must be an integer >= 1, got 0"),
        (["--size", "0", "96"], r"size must be \(height, width\), two integers >= 1, got"),
        (["--model", "cats_resnet18", "--channels", "8"], "--channels shape an mmnet_<backbone> model"),
        (["--model", "scot_resnet18"], "'scot_resnet18' is not a trainable architecture"),
    ],
)
def test_cli_bad_training_options_fail_before_training(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--csv",
        str(_write_csv(tmp_path)),
        "--no-pretrained-backbone",
        "--model",
        "mmnet_resnet18",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--release",
        str(tmp_path / "rel"),
        "--no-progress",
        *extra,
    ]
    assert _train_cli(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_trains_and_releases_cats_and_lpmflow(tmp_path: Path) -> None:
    """`--model cats_<backbone>` and `--init <LPMFlow folder>` train with their own objectives and release through
    their family's save function."""
    import json

    from mmnet.matching.lpmflow import load_lpmflow, save_lpmflow

    csv_path = _write_csv(tmp_path)
    common = [
        "--csv",
        str(csv_path),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--warmup",
        "0",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert (
        _train_cli(
            [
                *common,
                "--model",
                "cats_resnet18",
                "--no-pretrained-backbone",
                "--size",
                "64",
                "64",
                "--objective",
                "keypoint",
                "--out",
                str(tmp_path / "cats"),
                "--release",
                str(tmp_path / "r1"),
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert config["architecture"] == "cats_resnet18" and config["training"]["command"].startswith("mmnet train ")
    assert json.loads((tmp_path / "cats" / "config.json").read_text())["train"]["objective"] == "keypoint"
    save_lpmflow(_tiny_lpmflow(), tmp_path / "lpm", readout={"preset": "official"})
    assert (
        _train_cli(
            [
                *common,
                "--init",
                str(tmp_path / "lpm"),
                "--flow-target",
                "official",
                "--out",
                str(tmp_path / "lpmrun"),
                "--release",
                str(tmp_path / "r2"),
            ]
        )
        == 0
    )
    released = load_lpmflow(tmp_path / "r2")
    assert released.readout == {"preset": "official"} and released.config == _tiny_lpmflow().config


def test_finetune_example_keeps_the_readout_of_its_weights(tmp_path: Path) -> None:
    """examples/finetune_custom_csv.py from the bundled weights: the release reads out like them (level 2)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    csv_path = _write_csv(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "finetune_custom_csv.py"),
            str(csv_path),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
        ],
        check=True,
        env=env,
        capture_output=True,
        cwd=tmp_path,
    )
    released = json.loads((tmp_path / "run" / "release" / "config.json").read_text())["readout"]
    original = json.loads((root / "weights" / "mmnet_efficientnet_lite2.cub_photos" / "config.json").read_text())
    assert released == original["readout"] and released["level"] == 2
