"""Known answers of the image-size rescaling baseline on the shared data, and `mmnet eval` end to end."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from mmnet.cli import build_parser, parse_frame
from mmnet.data import load_dataset
from mmnet.eval import RescaleMatcher, evaluate, pck_correct

pytestmark = pytest.mark.data


def test_rescale_on_pf_willow_dev(data_root):
    ds = load_dataset("pf-willow", data_root / "pf-willow-dev")
    res = evaluate(RescaleMatcher(), ds, progress=False)
    assert res.n_pairs == 270 and res.n_kps == 2700 and res.threshold == "bbox-kp"
    np.testing.assert_allclose(res.pck(), [7.8, 21.7, 40.2], atol=0.05)
    # All pairs have 10 keypoints, so the two means agree here.
    np.testing.assert_allclose(res.pck(mean="keypoint"), res.pck())
    # The -1 padding bug of peer code (box over the padded target keypoints) would inflate PCK@0.1 to 28.6.
    padded = [max(r.tgt_kps[:, 0].max() + 1, r.tgt_kps[:, 1].max() + 1) for r in ds]
    inflated = [pck_correct(p.distances, length, [0.1]).mean() for p, length in zip(res.pairs, padded, strict=True)]
    assert round(100 * float(np.mean(inflated)), 1) == 28.6


@pytest.mark.parametrize(
    ("pairs", "per_keypoint", "per_pair"),
    [
        ("test_pairs_cub_cls001-050_any_seed0.csv", [2.0, 7.8, 16.7], [1.9, 7.6, 16.3]),
        ("test_pairs_cub_cls001-050_sameclass_seed0.csv", [2.5, 9.5, 19.6], [2.4, 9.1, 19.0]),
    ],
)
def test_rescale_on_cub_matches_source_figures(data_root, pairs, per_keypoint, per_pair):
    """SOURCE.md's baseline figures are per-keypoint means (box threshold, original frame); the per-pair
    means of the same run are pinned too."""
    root = data_root / "cub-200-2011-cls001-050"
    res = evaluate(RescaleMatcher(), load_dataset("cub", root, pairs=root / "pairs" / pairs), progress=False)
    assert res.n_pairs == 5000 and res.threshold == "bbox" and res.frame is None
    np.testing.assert_allclose(res.pck(mean="keypoint"), per_keypoint, atol=0.05)
    np.testing.assert_allclose(res.pck(), per_pair, atol=0.05)


def test_frame_option_on_real_pairs(data_root):
    """In the 224 x 320 frame the image threshold is 320 for every pair and errors scale per axis."""
    ds = load_dataset("pf-willow", data_root / "pf-willow-dev")
    res = evaluate(RescaleMatcher(), ds, threshold="img", frame=(224, 320), progress=False, limit=30)
    assert {p.length for p in res.pairs} == {320.0}
    orig = evaluate(RescaleMatcher(), ds, threshold="img", progress=False, limit=30)
    assert not np.allclose(res.pck(), orig.pck())


def test_eval_command_end_to_end(data_root, tmp_path, capsys):
    parser = build_parser("eval")
    out = tmp_path / "report"
    args = parser.parse_args(
        [
            "eval",
            "--dataset",
            "pf-willow",
            "--root",
            str(data_root / "pf-willow-dev"),
            "--model",
            "rescale",
            "--limit",
            "20",
            "--alpha",
            "0.05",
            "0.1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "PF-WILLOW test | model rescale | 20 pairs, 200 keypoints | threshold bbox-kp" in printed
    report = json.loads((out / "results.json").read_text())["results"]
    assert len(report) == 1 and report[0]["n_pairs"] == 20 and list(report[0]["pck_per_pair"]) == ["0.05", "0.1"]
    with open(out / "per_pair.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and rows[0]["source"] == "PF-WILLOW/car(G)/Cars_006a.png"
    assert rows[0]["n_keypoints"] == "10" and "pck@0.1" in rows[0]
    summary = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert {r["group"] for r in summary} == {"all", "category=car(G)"}
    assert (out / "pck_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_frame_argument_parsing():
    assert parse_frame("224x320") == (224, 320) and parse_frame("224,320") == (224, 320)
    assert parse_frame("original") is None
    with pytest.raises(argparse.ArgumentTypeError):
        parse_frame("224")
