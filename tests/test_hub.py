"""Checkpoints: round trips, strict loading errors, checksums, the hub cache and offline behaviour."""

import json
import shutil
import time

import pytest
import torch
from safetensors.torch import save_file

import mmnet
from mmnet.errors import CheckpointError, UnknownModelError, WeightsNotFoundError
from mmnet.models import backbones
from mmnet.zoo._registry import _PRETRAINED
from mmnet.zoo.hub import sha256_of


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = mmnet.create_model("mmnet_resnet18")
    folder = mmnet.save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "tiny", readout={"level": 2})
    return model, folder


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_is_bit_exact(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = mmnet.from_pretrained(folder)
    assert _equal(model.state_dict(), loaded.state_dict())
    assert not loaded.training and loaded.readout == {"level": 2}
    assert loaded.preprocess == model.preprocess
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "mmnet_resnet18" and config["model"]["channels"] == 21
    assert _equal(model.state_dict(), mmnet.from_pretrained(folder / "model.safetensors").state_dict())


def test_fp16_storage_halves_the_file(saved, tmp_path):
    model, folder = saved
    half = mmnet.save_pretrained(model, tmp_path / "half", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.55 * (folder / "model.safetensors").stat().st_size
    loaded = mmnet.from_pretrained(half)
    weight = "sems.0.0.conv.weight"
    torch.testing.assert_close(loaded.state_dict()[weight], model.state_dict()[weight].half().float())


def test_loading_never_fetches_backbone_weights(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("backbone weights were requested")

    monkeypatch.setattr(backbones, "load_pretrained_backbone", refuse)
    mmnet.from_pretrained(saved[1])


def test_corrupted_and_truncated_files(saved, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(saved[1], folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        mmnet.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        mmnet.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not an mmnet config"):
        mmnet.from_pretrained(folder)


def test_mismatched_checkpoint_lists_keys(saved, tmp_path):
    model, folder = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop("attentions.0.theta.weight")
    state["extra.weight"] = torch.zeros(1)
    state["sems.0.0.down.bias"] = torch.zeros(5)
    bad = tmp_path / "mismatch"
    shutil.copytree(folder, bad)
    save_file(state, bad / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        mmnet.from_pretrained(bad)
    message = str(info.value)
    assert "1 missing ['attentions.0.theta.weight']" in message
    assert "1 unexpected ['extra.weight']" in message and "sems.0.0.down.bias: (5,) vs (21,)" in message


def test_missing_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"config\.json is missing"):
        mmnet.from_pretrained(tmp_path)
    with pytest.raises(UnknownModelError, match="neither a file, a folder"):
        mmnet.from_pretrained("no_such_thing")


def _write_hub_cache(cache, repo_id, folder, commit="a" * 40):
    """The huggingface_hub cache layout: blobs, a snapshot per commit, and refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_hub_cache_loading_with_revision_and_sha256(saved, tmp_path, monkeypatch):
    model, folder = saved
    commit = _write_hub_cache(tmp_path / "hub", "mmnet-test/tiny", folder)
    loaded = mmnet.from_pretrained("mmnet-test/tiny", cache_dir=tmp_path / "hub", local_files_only=True)
    assert _equal(model.state_dict(), loaded.state_dict())
    pinned = mmnet.from_pretrained(
        "hf-hub:mmnet-test/tiny", revision=commit, cache_dir=tmp_path / "hub", local_files_only=True
    )
    assert _equal(model.state_dict(), pinned.state_dict())

    digest = sha256_of(folder / "model.safetensors")
    monkeypatch.setitem(
        _PRETRAINED, "mmnet_resnet18.test", mmnet.PretrainedCfg(hub_id="mmnet-test/tiny", sha256=digest)
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    matcher = mmnet.Matcher.from_pretrained(
        "mmnet_resnet18.test", cache_dir=tmp_path / "hub", local_files_only=True, fold_batchnorm=False
    )  # the weights as stored (folding changes them)
    assert _equal(model.state_dict(), matcher.model.state_dict())
    assert "mmnet_resnet18.test" in mmnet.list_models(pretrained=True)
    monkeypatch.setitem(
        _PRETRAINED, "mmnet_resnet18.test", mmnet.PretrainedCfg(hub_id="mmnet-test/tiny", sha256="0" * 64)
    )
    with pytest.raises(CheckpointError, match="expected 0000"):
        mmnet.from_pretrained("mmnet_resnet18.test", cache_dir=tmp_path / "hub", local_files_only=True)


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_miss_fails_fast_with_a_fix(tmp_path, monkeypatch, how):
    kwargs = {"cache_dir": tmp_path}
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        kwargs["local_files_only"] = True
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        mmnet.from_pretrained("mmnet-test/absent", **kwargs)
    assert time.perf_counter() - start < 1.0
    assert "offline mode" in str(info.value) and "mmnet download" in str(info.value)


def test_registered_tag_bundled_folder(saved, monkeypatch):
    model, folder = saved
    monkeypatch.setitem(
        _PRETRAINED,
        "mmnet_resnet18.bundled",
        mmnet.PretrainedCfg(local_dir=str(folder), sha256=sha256_of(folder / "model.safetensors")),
    )
    assert _equal(model.state_dict(), mmnet.create_model("mmnet_resnet18.bundled").state_dict())
    assert _equal(model.state_dict(), mmnet.create_model("mmnet_resnet18", pretrained=True).state_dict())
    with pytest.raises(ValueError, match="cannot be combined"):
        mmnet.create_model("mmnet_resnet18.bundled", channels=8)


def test_default_weights_are_bundled_and_the_default_everywhere() -> None:
    import importlib.util
    import inspect
    from pathlib import Path

    from mmnet.cli import build_parser
    from mmnet.defaults import DEFAULT_WEIGHTS
    from mmnet.zoo import get_pretrained_cfg

    spec = importlib.util.spec_from_file_location("hubconf", Path(__file__).resolve().parents[1] / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    arch = DEFAULT_WEIGHTS.partition(".")[0]
    assert get_pretrained_cfg(arch) is get_pretrained_cfg(DEFAULT_WEIGHTS)  # the architecture's first tag
    assert inspect.signature(hubconf.matcher).parameters["name"].default == DEFAULT_WEIGHTS
    assert build_parser().parse_args(["match", "a.jpg", "b.jpg", "--kpts", "1,2"]).model == DEFAULT_WEIGHTS
    model = mmnet.from_pretrained(DEFAULT_WEIGHTS)
    assert model.readout["method"] == "ot" and model.readout["level"] == 2
    assert mmnet.from_pretrained("mmnet_efficientnet_lite2.cub_photos").readout["method"] == "softargmax"
