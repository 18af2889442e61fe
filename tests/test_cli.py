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


def test_kpts_accepts_both_example_layouts():
    from mmnet.cli import keypoints_for

    listed = parse_keypoints(str(REPO / "examples" / "keypoints_astronaut.json"))
    named = parse_keypoints(str(REPO / "examples" / "keypoints.json"))
    assert listed == [(91.0, 98.0), (136.0, 98.0), (114.0, 120.0), (114.0, 137.0)]
    assert set(named) == {"astronaut.jpg", "grace_hopper.jpg"}  # "about" and "names" are not points
    assert keypoints_for(named, SRC) == listed and keypoints_for(listed, "anything.jpg") == listed
    with pytest.raises(mmnet.InputError, match=r"points for astronaut\.jpg, grace_hopper\.jpg, none for .*'b\.jpg'"):
        keypoints_for(named, "b.jpg")


def test_kpts_errors_explain_the_format_without_quoting_a_placeholder_as_input(capsys):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"for example 91,98;136,98.*has letters"):
        parse_keypoints("x,y;x,y")
    with pytest.raises(argparse.ArgumentTypeError, match=r"each pair 'x,y'.*got '1;2'"):
        parse_keypoints("1;2")


SUBCOMMANDS = ["match", "flow", "models", "download", "eval", "convert-official", "convert-lpmflow", "scot-layers"]


@pytest.mark.parametrize("command", [*SUBCOMMANDS, "train"])
def test_every_subcommand_help_describes_every_argument_and_has_examples(command):
    from mmnet.cli import build_parser

    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = sub.format_help()
    assert "examples:" in text and text.count(f"mmnet {command}") + text.count("-m mmnet.train") >= 2
    assert "::" not in text  # examples print as text, not reStructuredText
    if command == "train":  # its options belong to mmnet.train.cli
        return
    for action in sub._actions:
        assert action.help, f"{command} {action.dest} has no help line"
        if action.default not in (None, False, "==SUPPRESS==") and action.option_strings:
            help_line = sub._get_formatter()._get_help_string(action)
            assert "default" in help_line, f"{command} {action.dest}: default not shown"


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, contextlib, io\nfrom mmnet.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['match', '--help'], ['eval', '--help']):\n"
        "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
        "print(sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_choice_lists_match_the_package():
    from mmnet.cli import DATASET_NAMES, THRESHOLD_NAMES
    from mmnet.data import DATASETS
    from mmnet.eval.pck import THRESHOLDS

    assert tuple(DATASETS) == DATASET_NAMES and tuple(THRESHOLDS) == THRESHOLD_NAMES


def test_device_and_matplotlib_are_checked_before_any_work(monkeypatch, tmp_path, capsys):
    import importlib.util

    def refuse(*args, **kw):
        raise AssertionError("a model was loaded before the checks")

    monkeypatch.setattr("mmnet.zoo.create_matcher", refuse)
    if not torch.cuda.is_available():
        assert main(["match", SRC, TGT, "--kpts", "1,2", "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no CUDA GPU is available" in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    for argv in (
        ["match", SRC, TGT, "--kpts", "1,2", "--out", str(tmp_path / "m.png")],
        ["flow", SRC, TGT, "--out", str(tmp_path / "w.png")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "needs matplotlib: pip install 'mmnet[viz]'" in err


def test_threads_option_and_environment(checkpoint, monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        assert (
            main(["match", SRC, TGT, "--kpts", "1,2", "--model", str(checkpoint), "--device", "cpu", "--threads", "1"])
            == 0
        )
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("MMNET_THREADS", "0")
        assert main(["flow", SRC, TGT, "--model", str(checkpoint), "--device", "cpu"]) == 2
        assert "MMNET_THREADS must be an integer >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_match_writes_json_and_picture(checkpoint, tmp_path, capsys):
    out, js = tmp_path / "vis.png", tmp_path / "out.json"
    assert (
        main(
            [
                "match",
                SRC,
                TGT,
                "--kpts",
                "127,66;155,66",
                "--model",
                str(checkpoint),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--json",
                str(js),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("->") == 2 and "wrote" in printed and printed.startswith(" 1  (")
    data = json.loads(js.read_text())
    expected = mmnet.Matcher.from_pretrained(checkpoint, device="cpu").match(SRC, TGT, [[127, 66], [155, 66]])
    torch.testing.assert_close(
        torch.tensor([m["target"] for m in data["matches"]]), expected.keypoints, atol=0.01, rtol=0
    )
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_flow_writes_npy_and_picture(checkpoint, tmp_path):
    npy, png = tmp_path / "flow.npy", tmp_path / "warp.png"
    assert (
        main(["flow", SRC, TGT, "--model", str(checkpoint), "--device", "cpu", "--npy", str(npy), "--out", str(png)])
        == 0
    )
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


def test_models_lists_every_name_the_factories_accept_with_its_kind(capsys):
    from mmnet.cli import model_rows

    rows = {name: kind for name, kind, _ in model_rows()}
    assert set(rows) == set(mmnet.list_models()) | set(mmnet.list_models(pretrained=True))
    assert rows["mmnet_efficientnet_lite2.cub_photos"] == "trained"
    assert rows["mmnet_efficientnet_lite2.cub_caltech101"] == "retired"  # superseded, its folder no longer ships
    assert rows["mmnet_efficientnet_lite2"] == "architecture"
    assert rows["scot_efficientnet_lite2"] == "backbone-only" and rows["mmnet_resnet50"] == "architecture"
    assert {rows[n] for n in mmnet.list_models("cats_*", pretrained=True)} <= {"conversion", "trained"}
    assert main(["models", "--kind", "backbone-only"]) == 0
    printed = capsys.readouterr().out
    assert "scot_resnet50" in printed and "mmnet_efficientnet_lite2.cub_photos" not in printed
    assert main(["models", "mmnet_fcn_resnet101.spair_official", "--details"]) == 0
    assert "convert-official" in capsys.readouterr().out
    assert main(["models", "mmnet_efficientnet_lite2", "--details"]) == 0  # the default is the first registered tag
    assert "as a matcher name: mmnet_efficientnet_lite2.cub_caltech101_v2" in capsys.readouterr().out
    assert main(["models", "nothing*"]) == 1


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


def test_released_weights_are_found_from_a_source_checkout(monkeypatch):
    """CI installs the package (mmnet.weights in site-packages) but imports mmnet from the checkout, where the
    weights live in <repo>/weights."""
    import importlib.resources

    from mmnet.zoo.hub import released_dir

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    folder = released_dir("mmnet_efficientnet_lite2.cub_photos")
    assert folder == REPO / "weights" / "mmnet_efficientnet_lite2.cub_photos" and (folder / "config.json").is_file()
