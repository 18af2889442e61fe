"""Package layout: every module imports alone (no import cycles), light modules stay light, old paths warn."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import mmnet
from mmnet.errors import UnknownModelError

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"mmnet.__main__", "mmnet.train.__main__"}  # they run a command when imported

_EACH_ALONE = """
import importlib, os, sys, traceback
import numpy, PIL.Image, safetensors, timm, torch, torchvision  # third-party only: cycles are between mmnet modules
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
print("FAILED", *failed)
sys.exit(bool(failed))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted((REPO / "mmnet").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in ENTRY_POINTS:
            names.append(name)
    return names


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", _EACH_ALONE, *_modules()], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def test_light_modules_import_neither_torch_nor_timm():
    code = (
        "import sys, mmnet, mmnet.eval.pck, mmnet.data, mmnet.cli; mmnet.cli.build_parser(); "
        "print(sorted({'torch', 'timm'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("matcher", "Matcher", "mmnet.matching.mmnet"),
        ("model", "MMNet", "mmnet.models.mmnet"),
        ("scot", "ScotMatcher", "mmnet.matching.scot"),
        ("scot", "sinkhorn", "mmnet.models.scot.ot"),
        ("hub", "from_pretrained", "mmnet.zoo._factory"),
        ("registry", "create_model", "mmnet.zoo._factory"),
        ("backbones", "BackboneSpec", "mmnet.models.backbones"),
        ("components", "SEM", "mmnet.models.components"),
        ("images", "load_image", "mmnet.matching.images"),
        ("geometry", "pixels_to_grid", "mmnet.matching.geometry"),
        ("convert", "convert_official", "mmnet.zoo.convert.mmnet"),
        ("loss", "mmnet_loss", "mmnet.train.loss"),
        ("pretrained", "PretrainedCfg", "mmnet.zoo._pretrained"),
    ],
)
def test_old_import_paths_still_work_with_a_deprecation_warning(old, name, new):
    import importlib

    module = importlib.import_module(f"mmnet.{old}")
    with pytest.warns(DeprecationWarning, match=f"mmnet.{old}.{name} moved"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_public_names_resolve_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(getattr(mmnet, name) is not None for name in mmnet.__all__)


def test_registry_knows_every_family_and_says_what_exists():
    assert {"mmnet_efficientnet_lite2", "scot_efficientnet_lite2"} <= set(mmnet.list_models())
    with pytest.raises(UnknownModelError, match=r"registered weights: .*mmnet_efficientnet_lite2\.cub_photos"):
        mmnet.create_matcher("mmnet_resnet50")
    with pytest.raises(UnknownModelError, match="training-free"):
        mmnet.create_model("scot_resnet18")
    with pytest.raises(UnknownModelError, match="neither a file, a folder, a registered model nor a hub repo id"):
        mmnet.create_matcher("nope_resnet18.tag")
    matcher = mmnet.create_matcher("mmnet_resnet18", pretrained=False, device="cpu")
    assert isinstance(matcher, mmnet.BaseMatcher) and matcher.name == "mmnet_resnet18"
