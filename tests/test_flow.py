"""Dense flow from per-cell matches (`cells_to_flow`, shared by every matcher family) against exact ground truth:
identity, shifts, resizes and aspect-ratio changes, the border band included; SCOT's flow resampled the same way."""

from __future__ import annotations

import pytest
import torch

from mmnet.matching.base import cells_to_flow
from mmnet.matching.geometry import grid_to_pixels, pixel_grid, pixels_to_grid
from mmnet.matching.scot import dense_flow
from mmnet.models.scot.pipeline import ScotScores

# (source H, W), (target H, W), grid (h, w), shift (dx, dy) in target pixels
CASES = {
    "identity": ((48, 64), (48, 64), (6, 8), (0.0, 0.0)),
    "shift": ((48, 64), (48, 64), (6, 8), (7.5, -3.25)),
    "upsize x2": ((40, 60), (80, 120), (5, 7), (0.0, 0.0)),
    "downsize x0.5": ((80, 120), (40, 60), (10, 15), (0.0, 0.0)),
    "aspect change": ((50, 50), (30, 110), (7, 7), (2.0, 1.0)),
    "one-cell column": ((33, 21), (40, 21), (4, 1), (0.0, 0.0)),
}


def _truth(pixels: torch.Tensor, src: tuple[int, int], tgt: tuple[int, int], shift: tuple[float, float]):
    """The exact target of source pixels under a resize src -> tgt (pixel-centre aligned) plus a shift."""
    return pixels_to_grid(pixels, src, tgt, "center") + torch.tensor(shift)


@pytest.mark.parametrize("convention", ["center", "corner"])
@pytest.mark.parametrize("case", list(CASES))
def test_cells_to_flow_is_exact_for_affine_maps(case, convention):
    src, tgt, grid, shift = CASES[case]
    # each cell's exact target, at the cell's own source position (the matcher's convention)
    cell_src = grid_to_pixels(pixel_grid(grid), src, grid, convention)
    cell_map = torch.cat([_truth(cell_src, src, tgt, shift).permute(2, 0, 1), torch.full((1, *grid), 0.5)])
    pixels = pixel_grid(src)
    result = cells_to_flow(cell_map, pixels_to_grid(pixels, src, grid, convention))
    expected = (_truth(pixels, src, tgt, shift) - pixels).permute(2, 0, 1)
    assert result.flow.shape == (2, *src) and result.scores.shape == src
    # every pixel, the outer band beyond the outermost cell centres included
    torch.testing.assert_close(result.flow, expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(result.scores, torch.full(src, 0.5))


def test_cells_to_flow_scores_stay_in_range_and_extend_at_the_border():
    cell_map = torch.zeros(3, 2, 2)
    cell_map[2] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    result = cells_to_flow(cell_map, pixels_to_grid(pixel_grid((8, 8)), (8, 8), (2, 2)))
    assert result.scores.min() >= 0 and result.scores.max() <= 1
    assert result.scores[0, 0] == 0 and result.scores[-1, -1] == 1


def _perfect_scot(src_resized: tuple[int, int], grid: tuple[int, int]) -> ScotScores:
    """SCOT scores whose every source hyperpixel is matched to the same cell of an equal target grid."""
    m = grid[0] * grid[1]
    return ScotScores(torch.eye(m) + 0.01, grid, grid, src_resized, src_resized)


@pytest.mark.parametrize(("src", "tgt"), [((60, 80), (60, 80)), ((60, 80), (90, 120)), ((120, 160), (45, 60))])
def test_scot_dense_flow_is_exact_on_resizes(src, tgt):
    # both images have the same aspect ratio, so SCOT resizes them to the same frame and grid; a perfect matcher
    # pairs each cell with itself, and the flow must be the exact resize at every original source pixel
    pair = _perfect_scot((150, 200), (19, 25))
    result = dense_flow(pair, src, tgt, box_size=27.0)
    pixels = pixel_grid(src)
    expected = (_truth(pixels, src, tgt, (0.0, 0.0)) - pixels).permute(2, 0, 1)
    torch.testing.assert_close(result.flow, expected, atol=1e-3, rtol=0)


# -- presets: names that say what they are ----------------------------------------------------------------------


def test_mmnet_presets_none_is_the_checkpoints_readout_and_default_is_deprecated():
    import warnings

    import mmnet
    from mmnet.matching.readouts import PRESETS

    model = mmnet.create_model("mmnet_resnet18")
    model.readout = {"level": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mmnet.Matcher(model, device="cpu").readout.level == 2  # None: the checkpoint's
        assert mmnet.Matcher(model, device="cpu", preset="finest").readout == PRESETS["finest"]
        assert mmnet.Matcher(model, device="cpu", preset="finest").readout.level == -1
        assert mmnet.Matcher(model, device="cpu", preset="official").readout == PRESETS["official"]
    with pytest.warns(DeprecationWarning, match=r"preset='default' is deprecated .* it means preset='finest'"):
        old = mmnet.Matcher(model, device="cpu", preset="default")
    assert old.readout == PRESETS["finest"]


def test_scot_default_preset_is_deprecated():
    import mmnet

    with pytest.warns(DeprecationWarning, match="SCOT has one readout"):
        mmnet.create_matcher("scot_resnet18", pretrained=False, preset="default", device="cpu")
