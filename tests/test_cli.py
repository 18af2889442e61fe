"""The `mmnet` command and the torch.hub entry points."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mmnet
from mmnet.cli import main, parse_keypoints

REPO = Path(__file__).resolve().parents[1]
SRC, TGT = str(REPO / "examples" / "astronaut.jpg"), str(REPO / "examples" / "grace_hopper.jpg")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return mmnet.save_pretrained(mmnet.create_model("mmnet_resnet18"), tmp_path_factory.mktemp("cli") / "tiny")


def test_parse_keypoints(tmp_path):
    assert parse_keypoints("1,2; 3.5,4") == [(1.0, 2.0), (3.5, 4.0)]
    path = tmp_path / "k.json"
    path.write_text("[[5, 6]]")
    assert parse_keypoints(str(path)) == [(5.0, 6.0)]


def test_match_writes_json_and_picture(checkpoint, tmp_path, capsys):
    out, js = tmp_path / "vis.png", tmp_path / "out.json"
    assert main(["match", SRC, TGT, "--kpts", "127,66;155,66", "--model", str(checkpoint), "--device", "cpu",
                 "--out", str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("->") == 2 and "wrote" in printed
    data = json.loads(js.read_text())
    expected = mmnet.Matcher.from_pretrained(checkpoint, device="cpu").match(SRC, TGT, [[127, 66], [155, 66]])
    torch.testing.assert_close(torch.tensor([m["target"] for m in data["matches"]]), expected.keypoints, atol=0.01,
                               rtol=0)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_flow_writes_npy_and_picture(checkpoint, tmp_path):
    npy, png = tmp_path / "flow.npy", tmp_path / "warp.png"
    assert main(["flow", SRC, TGT, "--model", str(checkpoint), "--device", "cpu", "--npy", str(npy),
                 "--out", str(png)]) == 0
    import numpy as np

    assert np.load(npy).shape == (2, 224, 224) and png.stat().st_size > 1000


def test_errors_are_one_line_with_exit_code_2(checkpoint, capsys):
    assert main(["match", "missing.jpg", TGT, "--kpts", "1,1", "--model", str(checkpoint)]) == 2
    assert "mmnet: error: image file not found: missing.jpg" in capsys.readouterr().err
    assert main(["match", SRC, TGT, "--kpts", "1,1", "--model", "nope/nope", "--offline"]) == 2
    assert "offline mode" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["match", SRC, TGT, "--kpts", "1;2"])


def test_models_lists_architectures(capsys):
    assert main(["models", "*lite*"]) == 0
    printed = capsys.readouterr().out
    assert "mmnet_efficientnet_lite2" in printed and "mmnet_resnet101" not in printed


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "mmnet", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"mmnet {mmnet.__version__}"


def test_torch_hub_local(checkpoint):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert {"mmnet_efficientnet_lite2", "mmnet_fcn_resnet101", "matcher"} <= set(dir(hubconf))
    assert "pretrained=True" in hubconf.mmnet_resnet18.__doc__
    model = torch.hub.load(str(REPO), "mmnet_resnet18", source="local", pretrained=False)
    assert isinstance(model, mmnet.MMNet)
    matcher = torch.hub.load(str(REPO), "matcher", source="local", name=str(checkpoint), device="cpu")
    assert matcher.match(SRC, TGT, [[10, 10]]).keypoints.shape == (1, 2)


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme


def test_packaging_lists_every_subpackage():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mmnet").rglob("__init__.py")}
    assert listed == on_disk | {"mmnet.weights"}


def test_viz_pictures(tmp_path):
    from mmnet import viz

    points = [[127, 66], [155, 66]]
    figure = viz.plot_matches(SRC, TGT, points, [[117, 103], [float("nan"), 0]], correct=[True, False], title="t")
    assert viz.save(figure, tmp_path / "m.png").stat().st_size > 1000
    assert viz.save(viz.plot_keypoints(SRC, points, ["eye", "eye"]), tmp_path / "k.png").stat().st_size > 1000
