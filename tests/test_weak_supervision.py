"""Weak supervision: pseudo-labels from forward-backward consistent teacher matches; validation carved from train."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mmnet.errors import DatasetError, InputError
from mmnet.matching.base import MatchResult
from mmnet.train.pairs import CsvPairs
from mmnet.train.pseudo import PseudoLabelConfig, category_pairs, consistent_matches, grid_points, pseudo_label
from mmnet.train.splits import carve_validation


class ShiftTeacher:
    """Moves points by +shift forward (source name < target name) and -shift back, except that points with
    x > `broken_x` come back 50 px off (an inconsistent teacher there); score = 1 - x / 1000."""

    def __init__(self, shift: float = 10.0, broken_x: float = 1e9) -> None:
        self.shift, self.broken_x = shift, broken_x

    def match(self, source: Any, target: Any, keypoints: Any) -> MatchResult:
        points = torch.as_tensor(keypoints, dtype=torch.float32)
        forward = str(source) < str(target)
        moved = points + (self.shift if forward else -self.shift)
        if not forward:
            moved[points[:, 0] - self.shift > self.broken_x, 1] += 50
        return MatchResult(moved, 1 - points[:, 0] / 1000)


def test_grid_points_are_cell_centres() -> None:
    points = grid_points((40, 80), 4)
    assert points.shape == (16, 2)
    assert torch.allclose(points[:4, 0], torch.tensor([9.5, 29.5, 49.5, 69.5]))
    assert torch.allclose(points[::4, 1], torch.tensor([4.5, 14.5, 24.5, 34.5]))


def test_consistent_matches_keep_only_cycle_consistent_points_best_first() -> None:
    points = grid_points((100, 100), 4)  # x in {12, 37, 62, 87}
    config = PseudoLabelConfig(max_points=20, cycle_tol=0.03)
    src, tgt, scores = consistent_matches(ShiftTeacher(broken_x=50), "a", "b", points, (100, 100), config)
    assert len(src) == 8 and (src[:, 0] < 50).all()  # the x = 62, 87 columns come back 50 px off
    assert torch.allclose(tgt, src + 10)
    assert (scores[:-1] >= scores[1:]).all()
    three = PseudoLabelConfig(max_points=3, min_points=1)
    few = consistent_matches(ShiftTeacher(), "a", "b", points, (100, 100), three)
    assert len(few[0]) == 3 and torch.allclose(few[0][:, 0], torch.full((3,), 12.0))


def test_category_pairs_are_distinct_same_category_and_seeded(tmp_path: Path) -> None:
    photos = {"cat": [tmp_path / f"c{i}.jpg" for i in range(3)], "dog": [tmp_path / f"d{i}.jpg" for i in range(5)]}
    pairs = category_pairs(photos, per_category=10, seed=0)
    assert len(pairs) == 6 + 10  # 3 photos have only 6 ordered pairs
    assert len(set(pairs)) == len(pairs) and all(a != b and a.name[0] == b.name[0] for a, b in pairs)
    assert pairs == category_pairs(photos, per_category=10, seed=0) != category_pairs(photos, 10, seed=1)


def test_pseudo_label_writes_a_csv_that_training_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for category in ("car", "duck"):
        (tmp_path / "photos" / category).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(
                tmp_path / "photos" / category / f"{i}.png"
            )
    out = tmp_path / "pseudo.csv"
    stats = pseudo_label(
        ShiftTeacher(), tmp_path / "photos", out, PseudoLabelConfig(pairs_per_category=2, grid=3), progress=False
    )
    assert stats["pairs_tried"] == 4
    pairs = CsvPairs(out, tmp_path / "photos")
    assert len(pairs) == stats["pairs_kept"] == 4 and stats["points_kept"] == 4 * 9
    for record in pairs:
        shift = 10 if str(record.src_path) < str(record.tgt_path) else -10
        assert np.allclose(record.tgt_kps, record.src_kps + shift, atol=0.06) and record.valid.all()


def test_pseudo_label_config_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cycle_tol"):
        PseudoLabelConfig(cycle_tol=0)
    with pytest.raises(InputError, match="min_points"):
        PseudoLabelConfig(min_points=30, max_points=20)
    with pytest.raises(DatasetError, match="not found"):
        pseudo_label(ShiftTeacher(), tmp_path / "missing", tmp_path / "x.csv", progress=False)
    (tmp_path / "empty" / "one").mkdir(parents=True)
    with pytest.raises(DatasetError, match="at least two photos"):
        pseudo_label(ShiftTeacher(), tmp_path / "empty", tmp_path / "x.csv", progress=False)


def test_carved_validation_is_image_disjoint_and_deterministic(tmp_path: Path) -> None:
    rows = [
        {"source_image": f"c{c}/{i}.jpg", "target_image": f"c{c}/{j}.jpg", "source_class": str(c)}
        for c in range(3)
        for i in range(10)
        for j in range(10)
        if i != j
    ]
    path = tmp_path / "trn.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    train, val = carve_validation(path, tmp_path / "out", fraction=0.2, seed=0)
    read = {name: list(csv.DictReader(p.read_text().splitlines())) for name, p in (("train", train), ("val", val))}
    val_images = {r[k] for r in read["val"] for k in ("source_image", "target_image")}
    train_images = {r[k] for r in read["train"] for k in ("source_image", "target_image")}
    assert len(val_images) == 6 and not val_images & train_images  # 2 of 10 images per class
    assert len(read["val"]) == 3 * 2 and len(read["train"]) == 3 * 8 * 7
    again = carve_validation(path, tmp_path / "again", fraction=0.2, seed=0)
    assert again[1].read_text() == val.read_text()
    with pytest.raises(InputError, match="fraction"):
        carve_validation(path, tmp_path, fraction=1.0)


def test_margin_keeps_queries_and_matches_off_the_border(tmp_path: Path) -> None:
    points = grid_points((100, 200), 5, margin=0.1)
    assert points[:, 0].min() == pytest.approx(0.1 * 200 + 0.8 * 200 / 10 - 0.5)
    assert points[:, 1].max() == pytest.approx(0.9 * 100 - 0.8 * 100 / 10 - 0.5)
    far = grid_points((100, 100), 4)  # x, y in {12, 37, 62, 87}; +10 puts the last column/row at 97
    config = PseudoLabelConfig(margin=0.05, max_points=20)
    src, tgt, _ = consistent_matches(ShiftTeacher(), "a", "b", far, (100, 100), config, target_size=(100, 100))
    assert len(src) == 9 and (tgt <= 94.5).all()


def test_refilter_applies_score_and_margin_to_an_earlier_csv(tmp_path: Path) -> None:
    from mmnet.train.pseudo import refilter

    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / name)
    row = {
        "source_image": "a.png",
        "target_image": "b.png",
        "XA": "10;50;60;2",
        "YA": "10;50;60;50",
        "XB": "20;50;61;50",
        "YB": "20;50;61;50",
        "score": "0.9;0.5;0.8;0.95",
    }
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    stats = refilter(
        tmp_path / "in.csv", tmp_path, tmp_path / "out.csv", PseudoLabelConfig(min_score=0.6, margin=0.05, min_points=1)
    )
    out = next(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert stats == {"pairs_in": 1, "pairs_kept": 1, "points_kept": 2}
    assert out["XA"] == "10.0;60.0" and out["score"] == "0.900;0.800"  # 0.5 too low; x=2 on the border


def test_several_validation_sets_are_averaged_first() -> None:
    from mmnet.train.validate import _averaged

    parts = [lambda model: {"pck@0.1": 60.0, "pck@0.05": 30.0}, lambda model: {"pck@0.1": 70.0, "pck@0.05": 40.0}]
    metrics = _averaged(parts, ["PF-WILLOW", "CUB"], 0.1)(None)
    assert next(iter(metrics.items())) == ("mean pck@0.1", 65.0)  # the trainer keeps the best by the first entry
    assert metrics["PF-WILLOW pck@0.05"] == 30.0 and metrics["CUB pck@0.1"] == 70.0
