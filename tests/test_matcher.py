"""Matcher on the embedded example images: inputs of every kind, outputs, errors, sparse = dense."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmnet
from mmnet.errors import InputError
from mmnet.matching.geometry import bilinear_cells, blend_rows, grid_to_pixels, pixels_to_grid
from mmnet.matching.images import load_image
from mmnet.matching.readouts import read_scores

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SRC, TGT = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"
KPTS = [[91.0, 98.0], [136.0, 98.0], [114.0, 137.0], [0.0, 0.0], [223.0, 223.0]]


@pytest.fixture(scope="module")
def matcher():
    torch.manual_seed(0)
    return mmnet.Matcher(mmnet.create_model("mmnet_resnet18"), device="cpu", input_size=(128, 160))


def test_match_returns_target_pixels_and_scores(matcher):
    result = matcher.match(SRC, TGT, KPTS)
    assert result.keypoints.shape == (5, 2) and result.scores.shape == (5,)
    width, height = Image.open(TGT).size
    assert (result.keypoints[:, 0] >= -0.5).all() and (result.keypoints[:, 0] <= width - 0.5).all()
    assert (result.keypoints[:, 1] >= -0.5).all() and (result.keypoints[:, 1] <= height - 0.5).all()
    assert ((result.scores > 0) & (result.scores <= 1)).all()
    keypoints, _ = result  # unpacks like a tuple
    assert torch.equal(keypoints, result.keypoints)


def test_batch_equals_single_and_handles_ragged_pairs(matcher):
    single = [matcher.match(SRC, TGT, KPTS[:3]), matcher.match(TGT, SRC, KPTS[:1])]
    batch = matcher.match_batch([SRC, TGT], [TGT, SRC], [KPTS[:3], KPTS[:1]])
    for a, b in zip(single, batch, strict=True):
        torch.testing.assert_close(a.keypoints, b.keypoints, atol=1e-3, rtol=0)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)


def test_outside_points_are_nan_with_zero_score(matcher):
    result = matcher.match(SRC, TGT, [[-5.0, 10.0], [10.0, 10.0], [10.0, 300.0]])
    assert torch.isnan(result.keypoints[[0, 2]]).all() and torch.isfinite(result.keypoints[1]).all()
    assert result.scores[[0, 2]].tolist() == [0.0, 0.0]


def test_empty_keypoints(matcher):
    for empty in ([], np.zeros((0, 2)), torch.zeros(0, 2)):
        result = matcher.match(SRC, TGT, empty)
        assert result.keypoints.shape == (0, 2) and result.scores.shape == (0,)
    assert matcher.match_batch([], [], []) == []


def test_every_input_kind_gives_the_same_result(matcher, tmp_path):
    rgb = Image.open(SRC).convert("RGB")
    reference = matcher.match(SRC, TGT, KPTS).keypoints
    array = np.array(rgb)
    rgba = rgb.convert("RGBA")
    inputs = [
        rgb,
        array,
        torch.from_numpy(array).permute(2, 0, 1),
        torch.from_numpy(array).permute(2, 0, 1) / 255,
        np.dstack([array, np.full(array.shape[:2], 255, np.uint8)]),
        rgba,
        array.astype(np.uint16) * 257,
    ]
    for image in inputs:
        torch.testing.assert_close(matcher.match(image, TGT, KPTS).keypoints, reference, atol=0.05, rtol=0)
    gray = rgb.convert("L")
    variants = [
        gray,
        np.asarray(gray),
        gray.convert("P"),
        Image.fromarray(np.asarray(gray).astype(np.uint16) * 257),
        torch.from_numpy(np.array(gray)),
    ]
    gray_ref = matcher.match(gray.convert("RGB"), TGT, KPTS).keypoints
    for image in variants:
        torch.testing.assert_close(matcher.match(image, TGT, KPTS).keypoints, gray_ref, atol=0.05, rtol=0)


def test_load_image_modes():
    rgba = Image.new("RGBA", (4, 3), (255, 0, 0, 0))  # fully transparent: composited on white
    assert load_image(rgba)[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    sixteen = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert load_image(sixteen).min().item() == 1.0
    assert load_image(np.zeros((5, 6), np.float32)).shape == (3, 5, 6)


@pytest.mark.parametrize(
    ("image", "kpts", "message"),
    [
        ("missing.jpg", KPTS, "not found"),
        (np.zeros((0, 5, 3), np.uint8), KPTS, "zero size"),
        (np.zeros((4, 4, 2), np.uint8), KPTS, "must be"),
        (torch.zeros(2, 4, 4), KPTS, "must be"),
        (SRC, [[1.0, float("nan")]], "NaN"),
        (SRC, [1.0, 2.0, 3.0], r"shape \(N, 2\)"),
        (SRC, [[1.0, 2.0, 3.0]], r"shape \(N, 2\)"),
        (SRC, "ab", "keypoints"),
        (42, KPTS, "unsupported image type"),
    ],
)
def test_bad_input_raises_input_error(matcher, image, kpts, message):
    with pytest.raises(InputError, match=message):
        matcher.match(image, TGT, kpts)


def test_unreadable_file(matcher, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image"):
        matcher.match(bad, TGT, KPTS)


def test_sparse_transfer_equals_full_volume_transfer(matcher):
    """The query-rows path gives exactly what reading the full 4-D volume gives."""
    from mmnet.matching.images import prepare

    result = matcher.match(SRC, TGT, KPTS[:3])
    model, size = matcher.model, matcher.preprocess.size
    src = prepare(load_image(SRC)[None], matcher.preprocess)
    tgt = prepare(load_image(TGT)[None], matcher.preprocess)
    with torch.no_grad():
        volume = model(src, tgt)[-1]
    grid = volume.shape[1:3]
    points = pixels_to_grid(torch.tensor([KPTS[:3]]), load_image(SRC).shape[1:], size)
    cells, weights = bilinear_cells(pixels_to_grid(points, size, grid), grid)
    rows = volume.flatten(1, 2)[0, cells.flatten()][None]
    xy, _ = read_scores(blend_rows(rows, weights), matcher.readout)
    expected = grid_to_pixels(grid_to_pixels(xy, size, volume.shape[3:]), load_image(TGT).shape[1:], size)[0]
    torch.testing.assert_close(result.keypoints, expected, atol=1e-3, rtol=0)


def test_flow_layout_and_consistency_with_match(matcher):
    flow = matcher.flow(SRC, TGT)
    height, width = load_image(SRC).shape[1:]
    assert flow.flow.shape == (2, height, width) and flow.scores.shape == (height, width)
    # a 32x40 source has one pixel per cell of the finest 32x40 grid: there the flow is exactly `match`
    small = torch.nn.functional.interpolate(load_image(SRC)[None], size=(32, 40), mode="area")[0]
    dense = matcher.flow(small, TGT)
    points = torch.tensor([[3.0, 4.0], [20.0, 17.0], [39.0, 31.0]])
    sparse = matcher.match(small, TGT, points)
    xs, ys = points.long().T
    torch.testing.assert_close(points + dense.flow[:, ys, xs].T, sparse.keypoints, atol=1e-3, rtol=0)
    torch.testing.assert_close(dense.scores[ys, xs], sparse.scores, atol=1e-4, rtol=0)
    assert len(matcher.flow_batch([SRC, TGT], [TGT, SRC])) == 2


def test_warp_has_target_size(matcher):
    warped = matcher.warp(SRC, TGT)
    assert warped.shape == (3, *load_image(TGT).shape[1:])
    identity = mmnet.warp_image(load_image(SRC), torch.zeros(2, 224, 224))
    torch.testing.assert_close(identity, load_image(SRC), atol=1e-5, rtol=0)


def test_official_preset_quantises_to_cell_corners():
    model = mmnet.create_model("mmnet_resnet18")
    official = mmnet.Matcher(model, preset="official", device="cpu")
    assert official.preprocess.size == (224, 320) and not official.preprocess.antialias
    target = torch.zeros(3, 224, 320)  # same size as the model input: the corners are multiples of 8 px
    result = official.match(SRC, target, KPTS[:3])
    assert torch.equal(result.keypoints, (result.keypoints / 8).round() * 8)
    with pytest.raises(InputError, match="unknown preset"):
        mmnet.Matcher(model, preset="nope")
    with pytest.raises(InputError, match="out of range"):
        mmnet.Matcher(model, level=7)


def test_released_weights_match_the_example_faces():
    """The bundled weights on the embedded pair: hand-annotated eyes, nose and mouth (examples/keypoints.json)."""
    import json

    points = json.loads((EXAMPLES / "keypoints.json").read_text())
    matcher = mmnet.Matcher.from_pretrained("mmnet_efficientnet_lite2.cub_photos", device="cpu")
    result = matcher.match(SRC, TGT, points["astronaut.jpg"])
    errors = (result.keypoints - torch.tensor(points["grace_hopper.jpg"], dtype=torch.float32)).norm(dim=1)
    assert errors.max() < 25 and errors.mean() < 15  # measured 2026-11-23: 4, 9, 13, 21 px on a 217x240 image
    assert (result.scores[:2] > 0.5).all()
