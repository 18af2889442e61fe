"""The PCK protocol pinned on hand-made cases (no data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmnet.data.base import PairRecord
from mmnet.errors import InputError
from mmnet.eval import EvalResult, PairScore, RescaleMatcher, evaluate, pck_correct, score_pair, threshold_length
from mmnet.eval.plot import plot_pck_curves


def record(tgt_kps, valid=None, size=(100, 200), bbox=None, category="c", flags=None, src_kps=None) -> PairRecord:
    tgt = np.asarray(tgt_kps, np.float32).reshape(-1, 2)
    valid = np.ones(len(tgt), bool) if valid is None else np.asarray(valid, bool)
    src = tgt.copy() if src_kps is None else np.asarray(src_kps, np.float32).reshape(-1, 2)
    return PairRecord(
        Path("/stub/src.jpg"),
        Path("/stub/tgt.jpg"),
        src,
        tgt,
        valid,
        None,
        None if bbox is None else np.asarray(bbox, np.float32),
        category,
        False,
        flags or {},
        size,
        size,
    )


class StubDataset:
    """In-memory pairs for `evaluate`: blank images of each record's size."""

    name, split, default_threshold, root = "stub", "test", "img", Path("/stub")

    def __init__(self, records: list[PairRecord]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int):
        rec = self.records[i]
        (hs, ws), (ht, wt) = rec.src_size, rec.tgt_size
        return Image.new("RGB", (ws, hs)), Image.new("RGB", (wt, ht)), rec


class FixedMatcher:
    """Returns preset target keypoints per call, as a torch tensor (like mmnet.Matcher)."""

    def __init__(self, answers: list[np.ndarray]) -> None:
        self.answers, self.calls = list(answers), []

    def match(self, source, target, keypoints):
        self.calls.append(np.asarray(keypoints).copy())
        return type("M", (), {"keypoints": torch.as_tensor(self.answers.pop(0)), "scores": None})()


# --- thresholds ------------------------------------------------------------------------------------------------


def test_img_threshold_is_max_side_of_target_image_or_frame():
    assert threshold_length("img", np.zeros((1, 2)), None, (100, 200)) == 200
    # the official MMNet frame: every PF-PASCAL pair gets L = 320, whatever the image size
    assert threshold_length("img", np.zeros((1, 2)), None, (375, 500), frame=(224, 320)) == 320


def test_bbox_threshold_is_max_side_of_target_box_scaled_per_axis_in_a_frame():
    box = [10, 20, 60, 100]  # w 50, h 80
    assert threshold_length("bbox", np.zeros((1, 2)), box, (100, 200)) == 80
    # (100, 200) -> (50, 400): x * 2, y * 0.5: w 100, h 40
    assert threshold_length("bbox", np.zeros((1, 2)), box, (100, 200), frame=(50, 400)) == 100
    with pytest.raises(InputError, match="box"):
        threshold_length("bbox", np.zeros((1, 2)), None, (100, 200))


def test_bbox_kp_ignores_invalid_and_padded_points():
    """Peer code pads keypoints with -1 before taking the box (PF-WILLOW): L becomes ~max coordinate + 1."""
    pts = [[50, 60], [80, 90], [70, 100], [-1, -1], [-1, -1]]
    rec = record(pts, valid=[True, True, True, False, False])
    pred = rec.tgt_kps[:3] + np.array([5.0, 0.0])  # every prediction 5 px off
    distances, length = score_pair(pred, rec, "bbox-kp")
    assert length == 40.0  # max(80 - 50, 100 - 60) over the three valid points only
    np.testing.assert_allclose(distances, 5.0)
    assert not pck_correct(distances, length, [0.1]).any()  # 5 > 0.1 * 40
    padded = threshold_length("bbox-kp", np.asarray(pts, np.float32), None, (100, 200))
    assert padded == 101.0  # the bug: max(80 + 1, 100 + 1)
    assert pck_correct(distances, padded, [0.1]).all()  # 5 <= 10.1: every point "correct"


def test_unknown_threshold_rejected():
    with pytest.raises(InputError, match="threshold"):
        threshold_length("box", np.zeros((1, 2)), None, (10, 10))


# --- frames --------------------------------------------------------------------------------------------------


def test_anisotropic_frame_scales_errors_per_axis():
    """Target 100 x 200 (H x W) seen in a 100 x 100 frame: x errors halve, y errors stay, L(img) halves."""
    rec = record([[100, 50], [100, 50]], size=(100, 200), bbox=[50, 25, 150, 75])
    pred = np.array([[110, 50], [100, 65]], np.float32)  # 10 px off in x, 15 px off in y
    d_orig, l_orig = score_pair(pred, rec, "img")
    d_frame, l_frame = score_pair(pred, rec, "img", frame=(100, 100))
    np.testing.assert_allclose(d_orig, [10, 15])
    np.testing.assert_allclose(d_frame, [5, 15])
    assert (l_orig, l_frame) == (200, 100)
    assert pck_correct(d_orig, l_orig, [0.1]).tolist() == [[True, True]]  # 10, 15 <= 20
    assert pck_correct(d_frame, l_frame, [0.1]).tolist() == [[True, False]]  # 5 <= 10 < 15
    # box 100 x 50 -> 50 x 50 in the frame
    d_box, l_box = score_pair(pred, rec, "bbox", frame=(100, 100))
    assert l_box == 50 and score_pair(pred, rec, "bbox")[1] == 100
    assert pck_correct(d_box, l_box, [0.2]).tolist() == [[True, False]]  # 5 <= 10 < 15


def test_isotropic_frame_changes_nothing():
    rec = record([[30, 40], [90, 10]], size=(100, 200), bbox=[0, 0, 120, 60])
    pred = rec.tgt_kps + np.array([[3, 4], [-6, 8]])
    for kind in ("img", "bbox", "bbox-kp"):
        d0, l0 = score_pair(pred, rec, kind)
        d1, l1 = score_pair(pred, rec, kind, frame=(50, 100))
        np.testing.assert_allclose(d1 / l1, d0 / l0)


# --- means and alphas ----------------------------------------------------------------------------------------


def scores(*pairs, flags=None):
    return [
        PairScore(i, "s", "t", cat, np.asarray(d, float), length, (flags or {}).get(i, {}))
        for i, (cat, d, length) in enumerate(pairs)
    ]


def test_alpha_list_is_inclusive_at_the_boundary():
    res = EvalResult(
        scores(("c", [1, 2, 3, 4], 20.0)),
        alphas=(0.05, 0.1, 0.15, 0.2),
        threshold="img",
        frame=None,
        dataset="d",
        split="test",
        model="m",
    )
    np.testing.assert_allclose(res.pck(), [25, 50, 75, 100])
    np.testing.assert_allclose(res.pck([0.01, 0.06]), [0, 25])


def test_per_pair_and_per_keypoint_means_differ():
    # pair A: 1 of 1 correct; pair B: 0 of 3 correct
    res = EvalResult(
        scores(("a", [1.0], 100.0), ("b", [50.0, 60.0, 70.0], 100.0)),
        alphas=(0.1,),
        threshold="img",
        frame=None,
        dataset="d",
        split="test",
        model="m",
    )
    assert res.pck().tolist() == [50.0]
    assert res.pck(mean="keypoint").tolist() == [25.0]
    cats = res.by_category()
    assert cats["a"]["pck_per_pair"] == {"0.1": 100.0} and cats["b"]["pck_per_pair"] == {"0.1": 0.0}
    assert res.n_pairs == 2 and res.n_kps == 4


def test_breakdown_by_difficulty_flag():
    pairs = scores(
        ("x", [1.0], 100.0),
        ("x", [50.0], 100.0),
        ("x", [2.0, 90.0], 100.0),
        flags={0: {"occlusion": 0}, 1: {"occlusion": 1}, 2: {"occlusion": 1}},
    )
    res = EvalResult(pairs, alphas=(0.1,), threshold="bbox", frame=None, dataset="d", split="test", model="m")
    by = res.by_flag()["occlusion"]
    assert by["0"]["pck_per_pair"]["0.1"] == 100.0
    assert by["1"]["n_pairs"] == 2 and by["1"]["pck_per_pair"]["0.1"] == 25.0  # mean of 0 % and 50 %
    assert by["1"]["pck_per_keypoint"]["0.1"] == pytest.approx(100 / 3, abs=1e-3)
    assert "by occlusion" in res.table()


# --- evaluate ------------------------------------------------------------------------------------------------


def test_pair_without_valid_keypoints_is_excluded_and_reported(tmp_path):
    recs = [record([[10, 10], [20, 20]]), record([[5, 5]], valid=[False], category="e"), record([[50, 50]])]
    matcher = FixedMatcher([np.array([[10, 10], [90, 20]]), np.array([[50, 50]])])
    res = evaluate(matcher, StubDataset(recs), alphas=(0.1,), progress=False)
    assert len(matcher.calls) == 2  # the empty pair is never matched
    assert res.excluded == [1] and res.n_pairs == 2
    assert res.pck().tolist() == [75.0]  # mean of 50 % and 100 %, the empty pair left out
    assert res.pck(mean="keypoint").tolist() == pytest.approx([200 / 3])
    assert "excluded from the means: 1 pair(s) without a valid keypoint (index 1)" in res.table()
    assert res.to_dict()["excluded_pairs"] == [1]
    assert res.by_category()["e"] == {
        "n_pairs": 0,
        "n_keypoints": 0,
        "pck_per_pair": {"0.1": None},
        "pck_per_keypoint": {"0.1": None},
    }
    assert json.loads(res.save_json(tmp_path / "r.json").read_text())["results"][0]["n_pairs"] == 2
    rows = res.save_per_pair_csv(tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[2].split(",")[5] == "0"


def test_evaluate_passes_only_valid_source_keypoints_and_uses_the_frame():
    rec = record(
        [[100, 50], [0, 0], [100, 50]],
        valid=[True, False, True],
        size=(100, 200),
        src_kps=[[1, 2], [np.nan, np.nan], [3, 4]],
    )
    matcher = FixedMatcher([np.array([[110, 50], [100, 65]])])
    res = evaluate(matcher, StubDataset([rec]), alphas=(0.1,), frame=(100, 100), progress=False)
    np.testing.assert_array_equal(matcher.calls[0], [[1, 2], [3, 4]])
    assert matcher.calls[0].dtype == np.float32
    assert res.pck().tolist() == [50.0] and res.frame_name == "100x100"
    assert evaluate(
        FixedMatcher([np.array([[110, 50], [100, 65]])]), StubDataset([rec]), alphas=(0.1,), progress=False
    ).pck().tolist() == [100.0]


def test_evaluate_rejects_wrong_prediction_count_and_bad_arguments():
    rec = record([[1, 1], [2, 2]])
    with pytest.raises(InputError, match="expected 2 predicted keypoints"):
        evaluate(FixedMatcher([np.zeros((3, 2))]), StubDataset([rec]), progress=False)
    with pytest.raises(InputError, match="alphas"):
        evaluate(RescaleMatcher(), StubDataset([rec]), alphas=(), progress=False)
    with pytest.raises(InputError, match="needs a target box"):
        evaluate(RescaleMatcher(), StubDataset([rec]), threshold="bbox", progress=False)


def test_rescale_matcher_maps_relative_positions():
    out = RescaleMatcher().match(Image.new("RGB", (200, 100)), Image.new("RGB", (50, 400)), [[100, 50], [0, 100]])
    np.testing.assert_allclose(out.keypoints, [[25, 200], [0, 400]])
    assert out.keypoints.dtype == np.float32 and out.scores.tolist() == [1.0, 1.0]


def test_reports_and_curve_plot(tmp_path):
    res = EvalResult(
        scores(("a", [1.0, 15.0], 100.0)),
        alphas=(0.05, 0.1),
        threshold="img",
        frame=(224, 320),
        dataset="d",
        split="test",
        model="m",
    )
    data = res.to_dict()
    assert data["pck_per_pair"] == {"0.05": 50.0, "0.1": 50.0} and data["frame"] == "224x320"
    assert data["curve"]["alpha"][0] == 0.0 and data["curve"]["pck_per_pair"][-1] == 100.0
    header, *rows = res.save_csv(tmp_path / "r.csv").read_text().splitlines()
    assert header.startswith("model,dataset,split,threshold,frame,group") and len(rows) == 4
    png = plot_pck_curves([res, res], tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_legend_names_a_folder_by_its_last_part():
    from mmnet.eval.plot import _label

    assert _label("/root/.cache/mmnet/runs/release/mmnet_efficientnet_lite2.v2") == "mmnet_efficientnet_lite2.v2"
    assert _label("runs/r6/best/") == "best"
    assert _label("mmnet_efficientnet_lite2.cub_photos") == "mmnet_efficientnet_lite2.cub_photos"
