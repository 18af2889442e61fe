"""No loader of mmnet runs code from a file: crafted pickles are refused with a CheckpointError."""

from __future__ import annotations

import tokenize
from pathlib import Path

import pytest
import torch

from mmnet.errors import CheckpointError
from mmnet.train.trainer import load_training_checkpoint
from mmnet.zoo.convert.mmnet import read_official


class _Payload:
    """Unpickling this object creates `marker` (a stand-in for any code an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _crafted(path: Path, marker: Path, wrap: str | None = None) -> Path:
    payload = {"weight": torch.zeros(2), "evil": _Payload(marker)}
    torch.save({wrap: payload} if wrap else payload, path)
    assert not marker.exists()
    return path


@pytest.mark.parametrize("wrap", [None, "model"])
def test_training_checkpoint_with_code_is_refused(tmp_path: Path, wrap: str | None) -> None:
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "last.pt", marker, wrap)
    with pytest.raises(CheckpointError, match="never unpickles arbitrary objects"):
        load_training_checkpoint(path)
    assert not marker.exists()


def test_trainer_auto_resume_refuses_crafted_last_pt(tmp_path: Path) -> None:
    from mmnet.train.trainer import TrainConfig, Trainer
    from mmnet.zoo import create_model

    marker = tmp_path / "pwned"
    _crafted(tmp_path / "last.pt", marker, "model")

    class _Pairs:
        def __len__(self) -> int:
            return 4

        def set_epoch(self, epoch: int) -> None:
            pass

    model = create_model("mmnet_efficientnet_lite0", pretrained_backbone=False)
    trainer = Trainer(model, _Pairs(), TrainConfig(steps=1, batch_size=1), tmp_path, progress=False)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="resume"):
        trainer.fit(resume="auto")
    assert not marker.exists()


def test_missing_and_incomplete_training_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_training_checkpoint(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_training_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError):
        load_training_checkpoint(tmp_path / "truncated.pt")


def test_official_converter_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "official.pth", marker, "state_dict")
    with pytest.raises(CheckpointError, match="never unpickles arbitrary objects"):
        read_official(path)
    assert not marker.exists()


def test_restricted_unpickler_reads_namespaces_and_refuses_code(tmp_path: Path) -> None:
    import argparse
    import pickle

    from mmnet.zoo.safe_pickle import load_namespace

    good = tmp_path / "args.pkl"
    good.write_bytes(pickle.dumps(argparse.Namespace(lr=3e-5, hyperpixel="[2,17]", feature_proj_dim=128)))
    assert load_namespace(good) == {"lr": 3e-5, "hyperpixel": "[2,17]", "feature_proj_dim": 128}
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(argparse.Namespace(lr=_Payload(marker))))
    with pytest.raises(CheckpointError, match="never unpickles arbitrary objects"):
        load_namespace(evil)
    assert not marker.exists()


_SKIPPED = {tokenize.STRING, tokenize.COMMENT} | {getattr(tokenize, n, -1) for n in ("FSTRING_MIDDLE",)}


def _code_lines(path: Path) -> dict[int, list[str]]:
    """Tokens of each source line of `path`, without string literals and comments (messages may quote calls)."""
    lines: dict[int, list[str]] = {}
    with tokenize.open(path) as fh:
        for token in tokenize.generate_tokens(fh.readline):
            if token.type not in _SKIPPED:
                lines.setdefault(token.start[0], []).append(token.string)
    return lines


def _unsafe(tokens: list[str]) -> bool:
    code = "".join(tokens)
    triples = zip(["", *tokens[:-1]], tokens, [*tokens[1:], ""], strict=True)
    # calls of a bare name; `def eval(` (a method of that name) is no call
    calls = {name for prev, name, nxt in triples if nxt == "(" and prev not in (".", "def")}
    bad = ("torch.load(" in code and "weights_only=True" not in code) or "weights_only=False" in code
    return bad or bool(calls & {"eval", "exec"}) or "allow_pickle=True" in code or "pickle" in tokens


def test_no_unsafe_loading_in_sources() -> None:
    """Every torch.load in the package and examples passes weights_only=True; no pickle, eval, exec, allow_pickle."""
    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("mmnet/**/*.py"), *root.glob("examples/**/*.py"), root / "hubconf.py"]
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in sources
        if path.name != "safe_pickle.py"
        for number, tokens in _code_lines(path).items()
        if _unsafe(tokens)
    ]
    assert not offenders, offenders
