"""Coordinate conventions and readouts."""

import pytest
import torch

from mmnet.matching.geometry import (
    argmax_readout,
    bilinear_cells,
    blend_rows,
    grid_to_pixels,
    pixels_to_grid,
    rescale_points,
    soft_argmax_readout,
)


def test_center_and_corner_conventions():
    points = torch.tensor([[0.0, 0.0], [319.0, 223.0], [3.5, 3.5]])
    grid = pixels_to_grid(points, (224, 320), (28, 40), "center")
    torch.testing.assert_close(grid, torch.tensor([[-0.4375, -0.4375], [39.4375, 27.4375], [0.0, 0.0]]))
    corner = pixels_to_grid(points, (224, 320), (28, 40), "corner")
    torch.testing.assert_close(corner, points / 8)
    for convention in ("center", "corner"):
        back = grid_to_pixels(
            pixels_to_grid(points, (224, 320), (28, 40), convention), (224, 320), (28, 40), convention
        )
        torch.testing.assert_close(back, points)


def test_rescale_points_aligns_pixel_centres():
    # a 2x down-size maps pixel centres 0.5 and 2.5 onto 0 and 1
    out = rescale_points(torch.tensor([[0.5, 2.5]]), (4, 4), (2, 2))
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0]]))


def test_bilinear_cells_weights_and_clamping():
    cells, weights = bilinear_cells(torch.tensor([[[1.25, 0.5], [3.0, 2.0], [-2.0, 9.0]]]), (3, 4))
    assert cells[0, 0].tolist() == [1, 2, 5, 6]
    torch.testing.assert_close(weights[0, 0], torch.tensor([0.375, 0.125, 0.375, 0.125]))
    assert weights[0, 1].tolist() == [1.0, 0.0, 0.0, 0.0] and cells[0, 1, 0] == 2 * 4 + 3  # integer point
    assert cells[0, 2, 0] == 2 * 4 + 0  # clamped into the grid
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 3))


def test_blend_rows_is_weighted_sum():
    rows = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    blended = blend_rows(rows, torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]))
    torch.testing.assert_close(blended, torch.full((1, 1, 2, 2), 2.0))


def test_argmax_readout():
    scores = torch.zeros(1, 1, 3, 4)
    scores[0, 0, 2, 1] = 10
    xy, prob = argmax_readout(scores)
    assert xy.tolist() == [[[1.0, 2.0]]]
    assert prob.item() == pytest.approx(torch.e**10 / (torch.e**10 + 11))


def test_soft_argmax_is_sub_cell_and_symmetric():
    scores = torch.full((1, 1, 7, 7), -30.0)
    scores[0, 0, 3, 3] = scores[0, 0, 3, 4] = 5.0  # two equal peaks: the mean lies between them
    xy, mass = soft_argmax_readout(scores, window=5)
    torch.testing.assert_close(xy, torch.tensor([[[3.5, 3.0]]]))
    assert mass.item() == pytest.approx(1.0, abs=1e-6)


def test_soft_argmax_near_border_ignores_outside():
    scores = torch.zeros(1, 1, 4, 4)
    scores[0, 0, 0, 0] = 20.0
    xy, _ = soft_argmax_readout(scores, window=5)
    assert xy[0, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
