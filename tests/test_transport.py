"""The optimal-transport readout (``method="ot"``): settings checks, plan marginals, hand-checkable assignments,
the limit where it equals the plain readout, Hough voting, the Matcher on an identical pair, checkpoints."""

from pathlib import Path

import pytest
import torch
from PIL import Image

import mmnet
from mmnet.errors import CheckpointError, InputError
from mmnet.matching.readouts import ReadoutConfig, read_scores
from mmnet.matching.transport import gather_rows, point_masses, transport_plan, transport_scores

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _readout(**kw):
    return ReadoutConfig(method="ot", **kw)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("ot_epsilon", 0, "> 0"),
        ("ot_epsilon", float("nan"), "finite"),
        ("ot_epsilon", "1", "finite number"),
        ("ot_iterations", 0, ">= 1"),
        ("ot_iterations", 2.0, "integer"),
        ("ot_exponent", -1.0, "> 0"),
        ("ot_masses", "saliency", "'uniform', 'confidence'"),
        ("ot_hough", 1, "True or False"),
        ("method", "sinkhorn", "'ot'"),
    ],
)
def test_settings_are_checked_at_construction(field, value, allowed):
    with pytest.raises(InputError, match=field) as info:
        ReadoutConfig(**{field: value})
    assert allowed in str(info.value) and repr(value) in str(info.value)
    with pytest.raises(InputError, match=field):
        ReadoutConfig.from_dict({"method": "ot", field: value})


def test_settings_are_normalised():
    config = ReadoutConfig.from_dict({"method": "ot", "ot_epsilon": 1, "ot_exponent": 2})
    assert config.ot_epsilon == 1.0 and isinstance(config.ot_epsilon, float) and isinstance(config.ot_exponent, float)


@pytest.mark.parametrize("masses", ["uniform", "confidence"])
def test_plan_has_the_requested_marginals(masses):
    torch.manual_seed(0)
    scores = torch.randn(2, 12, 15) * 3
    a, b = point_masses(scores, masses)
    torch.testing.assert_close(a.sum(-1), torch.ones(2)) and torch.testing.assert_close(b.sum(-1), torch.ones(2))
    plan = transport_plan(scores, epsilon=1.0, iterations=500, masses=masses)
    assert (plan >= 0).all()
    torch.testing.assert_close(plan.sum(-1), a, atol=1e-3, rtol=0)  # Sinkhorn's stopping tolerance (L1)
    torch.testing.assert_close(plan.sum(-2), b, atol=1e-6, rtol=0)  # exact after each column update
    if masses == "uniform":
        assert torch.equal(a, torch.full((2, 12), 1 / 12)) and torch.equal(b, torch.full((2, 15), 1 / 15))


def test_confidence_masses_favour_peaked_rows():
    scores = torch.tensor([[9.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # row 0 is sure of its match, row 1 is flat
    a, b = point_masses(scores, "confidence")
    assert a[0] > a[1] and b[0] == b.max()


def test_identical_pair_scores_give_the_identity_where_argmax_does_not():
    # dot-product scores of an image with itself: f1 has the largest norm, so row 0's argmax is cell 1, but the
    # identity is the best one-to-one assignment (sum_i <f_i, f_s(i)> <= sum_i |f_i|^2 for any permutation s)
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.5], [0.0, 1.0]])
    scores = (feats @ feats.T)[None]
    assert scores[0].argmax(-1).tolist() == [1, 1, 2]
    plan = transport_plan(scores, epsilon=0.05, iterations=200)
    assert plan[0].argmax(-1).tolist() == [0, 1, 2]
    torch.testing.assert_close(plan[0], torch.eye(3) / 3, atol=5e-3, rtol=0)  # within the stopping tolerance


def test_a_permuted_target_is_recovered():
    torch.manual_seed(0)
    feats = torch.randn(20, 8)
    perm = torch.randperm(20)
    scores = (feats @ feats[perm].T)[None]  # target cell j shows source cell perm[j]
    plan = transport_plan(scores, epsilon=0.1, iterations=300)
    assert torch.equal(plan[0].argmax(-1), perm.argsort())


def _torus_scores(h, w, dy, dx):
    """Scores of every (y, x) -> (y', x') on an h x w torus: a function of the cyclic offset only, peaked at
    (dy, dx). Every column of the row softmax then sums to the same value: nothing for the transport to move."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    oy = (ys[None] - ys[:, None] - dy) % h
    ox = (xs[None] - xs[:, None] - dx) % w
    oy, ox = torch.minimum(oy, h - oy).float(), torch.minimum(ox, w - ox).float()
    return (-(oy**2 + ox**2) / 2 + 0.3 * torch.cos(oy + 2 * ox))[None]


def test_balanced_scores_give_the_plain_readout_exactly():
    # the limit where the transport changes nothing: epsilon 1 (the model's softmax), exponent 1, no Hough, and
    # scores whose row softmax already has uniform column sums: log plan = scores + a constant per row
    h, w = 6, 8
    scores = _torus_scores(h, w, 1, 2)
    log_final = transport_scores(scores, _readout(), (h, w), (h, w), (48, 64), (48, 64))
    torch.testing.assert_close(
        log_final - log_final.amax(-1, keepdim=True), scores - scores.amax(-1, keepdim=True), atol=1e-4, rtol=0
    )
    plain = read_scores(scores.view(1, h * w, h, w), ReadoutConfig(method="softargmax"))
    ours = read_scores(log_final.view(1, h * w, h, w), _readout())
    torch.testing.assert_close(ours[0], plain[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[1], plain[1], atol=1e-4, rtol=0)
    # and the reading is the shift: cell (y, x) -> (y + 1, x + 2) where the window lies inside the grid
    torch.testing.assert_close(ours[0][0, 2 * w + 3], torch.tensor([5.0, 3.0]), atol=1e-4, rtol=0)


def test_hough_votes_pick_the_consistent_shift_among_ties():
    # every source cell scores two target cells equally: the cell 2 columns to the right (the same shift for all)
    # and a random one; only Hough voting can tell them apart
    torch.manual_seed(0)
    h, w, shift = 4, 8, 2
    m = h * w
    scores = torch.zeros(1, m, m)
    rows = torch.tensor([y * w + x for y in range(h) for x in range(w - shift)])
    scores[0, rows, rows + shift] = 6.0
    scores[0, rows, torch.randint(0, m, (len(rows),))] = 6.0
    plain = transport_scores(scores, _readout(), (h, w), (h, w), (32, 64), (32, 64))
    voted = transport_scores(scores, _readout(ot_hough=True), (h, w), (h, w), (32, 64), (32, 64))
    assert torch.equal(voted[0, rows].argmax(-1), rows + shift)
    assert not torch.equal(plain[0, rows].argmax(-1), rows + shift)


def test_gather_rows():
    table = torch.arange(2 * 5 * 6.0).view(2, 5, 2, 3)
    cells = torch.tensor([[4, 0], [1, 1]])
    out = gather_rows(table, cells)
    assert out.shape == (2, 2, 2, 3) and torch.equal(out[0, 0], table[0, 4]) and torch.equal(out[1, 1], table[1, 1])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mmnet.create_model("mmnet_resnet18")


def test_matcher_identical_pair_maps_cells_onto_themselves(model):
    # an image against itself: the scores are a Gram matrix, so the identity is the best one-to-one assignment
    # (this random model's scores span only about 1.1 to 1.6, so epsilon must be small to approach the assignment)
    ot = mmnet.Matcher(
        model, device="cpu", input_size=(64, 96), level=2, method="ot", ot_epsilon=0.01, ot_iterations=2000, window=1
    )
    assert ot.readout.method == "ot" and ot.readout.ot_epsilon == 0.01
    image = EXAMPLES / "astronaut.jpg"
    size = 224  # the example is 224 x 224; cells of the 8 x 12 grid of level 2 (stride 8 on 64 x 96)
    xs = (torch.arange(12) + 0.5) * size / 12 - 0.5
    ys = (torch.arange(8) + 0.5) * size / 8 - 0.5
    points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    result = ot.match(image, image, points)
    torch.testing.assert_close(result.keypoints, points, atol=1e-3, rtol=0)
    plain = mmnet.Matcher(model, device="cpu", input_size=(64, 96), level=2, window=1).match(image, image, points)
    assert not torch.allclose(plain.keypoints, points, atol=1e-3)  # the row argmax prefers large-norm cells
    flow = ot.flow(image, image)
    assert flow.flow.shape == (2, size, size) and flow.flow.abs().max() < 1e-3


def test_matcher_ot_keypoints_equal_its_dense_flow_at_cell_centres(model):
    # a 72 x 108 source on a 64 x 96 input: level 2 cells are 9 x 9 source pixels, centred on whole pixels
    matcher = mmnet.Matcher(model, device="cpu", input_size=(64, 96), level=2, method="ot", ot_hough=True)
    src = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((108, 72))
    tgt = EXAMPLES / "grace_hopper.jpg"
    ys, xs = torch.meshgrid(torch.arange(8) * 9 + 4.0, torch.arange(12) * 9 + 4.0, indexing="ij")
    points = torch.stack([xs, ys], -1).reshape(-1, 2)
    result = matcher.match(src, tgt, points)
    flow = matcher.flow(src, tgt)
    at_cells = flow.flow[:, ys.long().flatten(), xs.long().flatten()].T
    torch.testing.assert_close(result.keypoints, points + at_cells, atol=1e-3, rtol=0)
    assert ((result.scores > 0) & (result.scores <= 1)).all()


def test_readout_round_trips_through_a_checkpoint(model, tmp_path):
    readout = {
        "level": 2,
        "method": "ot",
        "window": 3,
        "ot_epsilon": 0.5,
        "ot_iterations": 50,
        "ot_exponent": 2.0,
        "ot_masses": "confidence",
        "ot_hough": True,
    }
    folder = mmnet.save_pretrained(model, tmp_path / "ot", readout=readout)
    loaded = mmnet.from_pretrained(folder)
    assert loaded.readout == readout
    matcher = mmnet.Matcher(loaded, device="cpu")
    assert matcher.readout == ReadoutConfig(**readout)
    with pytest.raises(InputError, match="ot_epsilon"):
        mmnet.save_pretrained(model, tmp_path / "bad", readout={**readout, "ot_epsilon": -1})
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"ot_masses": "confidence"', '"ot_masses": "cams"'))
    with pytest.raises(CheckpointError, match="ot_masses"):
        mmnet.from_pretrained(folder)
