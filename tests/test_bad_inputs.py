"""Every kind of bad input gets a library error: one table row per kind, each asserting the exception type and a
phrase of its message (which names the argument or the file and line, and says what is allowed).

Malformed files are built in tmp_path from small synthetic datasets; no benchmark data is needed.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import mmnet
from mmnet.cli import main as cli_main
from mmnet.data import CUB, PFPascal, PFWillow, SPair, load_dataset
from mmnet.data.base import PairRecord
from mmnet.errors import (
    CheckpointError,
    DatasetError,
    InputError,
    MMNetError,
    UnknownModelError,
    WeightsNotFoundError,
)
from mmnet.eval import RescaleMatcher, evaluate
from mmnet.matching.images import PreprocessConfig, load_image
from mmnet.train.trainer import TrainConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"

# --- synthetic datasets --------------------------------------------------------------------------------------


def save_image(path: Path, width: int = 40, height: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


CUB_HEADER = [
    "source_image",
    "target_image",
    "source_class",
    "target_class",
    "kp_ids",
    "XA",
    "YA",
    "XB",
    "YB",
    "src_bbox",
    "trg_bbox",
]
CUB_IMAGES = [f"00{c}.Bird_{c}/bird_{c}_{i}.jpg" for c in (1, 2) for i in range(3)]


def make_cub(tmp: Path) -> Path:
    """CUB_200_2011/ with 6 test images of 2 species (all parts visible) and a 2-row pair list `pairs.csv`."""
    root = tmp / "CUB_200_2011"
    for name in CUB_IMAGES:
        save_image(root / "images" / name)
    lines = {
        "images.txt": [],
        "parts/part_locs.txt": [],
        "bounding_boxes.txt": [],
        "train_test_split.txt": [],
        "image_class_labels.txt": [],
    }
    for i, name in enumerate(CUB_IMAGES, 1):
        lines["images.txt"].append(f"{i} {name}")
        lines["parts/part_locs.txt"] += [f"{i} {p} {10.0 + p} {5.0 + p} 1" for p in range(1, 16)]
        lines["bounding_boxes.txt"].append(f"{i} 2.0 3.0 30.0 20.0")
        lines["train_test_split.txt"].append(f"{i} 0")
        lines["image_class_labels.txt"].append(f"{i} {1 if i <= 3 else 2}")
    for name, content in lines.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(content) + "\n")
    write_csv(
        root / "pairs.csv",
        [
            CUB_HEADER,
            [
                CUB_IMAGES[0],
                CUB_IMAGES[1],
                1,
                1,
                "1;2;3",
                "10;11;12",
                "5;6;7",
                "13;14;15",
                "8;9;10",
                "2;3;30;20",
                "2;3;30;20",
            ],
            [CUB_IMAGES[0], CUB_IMAGES[4], 1, 2, "4;5", "10;11", "5;6", "13;14", "8;9", "2;3;30;20", "2;3;30;20"],
        ],
    )
    return root


def cub_list(tmp: Path, old: str, new: str) -> CUB:
    root = make_cub(tmp)
    edit(root / "pairs.csv", old, new)
    return CUB(root, pairs="pairs.csv")


def cub_table(tmp: Path, name: str, old: str, new: str, **kw: Any) -> CUB:
    root = make_cub(tmp)
    edit(root / name, old, new)
    return CUB(root, n_pairs=kw.pop("n_pairs", 4), **kw)


WILLOW_HEADER = ["imageA", "imageB"] + [f"{c}{i}" for c in ("XA", "YA", "XB", "YB") for i in range(1, 11)]


def make_willow(tmp: Path) -> Path:
    """PF-WILLOW/car/{a,b}.png + test_pairs.csv (two rows) and the per-image .mat files."""
    from scipy.io import savemat

    root = tmp / "willow"
    for name in ("a", "b"):
        save_image(root / "PF-WILLOW" / "car" / f"{name}.png")
        savemat(root / "PF-WILLOW" / "car" / f"{name}.mat", {"pts_coord": np.arange(20.0).reshape(2, 10)})
    values = [f"{v:.1f}" for v in np.linspace(1, 29, 40)]
    write_csv(
        root / "test_pairs.csv",
        [
            WILLOW_HEADER,
            ["PF-WILLOW/car/a.png", "PF-WILLOW/car/b.png", *values],
            ["PF-WILLOW/car/b.png", "PF-WILLOW/car/a.png", *values],
        ],
    )
    return root


def willow_csv(tmp: Path, old: str, new: str) -> PFWillow:
    root = make_willow(tmp)
    edit(root / "test_pairs.csv", old, new)
    return PFWillow(root)


def willow_mat(tmp: Path, content: dict[str, Any] | bytes) -> PFWillow:
    from scipy.io import savemat

    root = make_willow(tmp)
    (root / "test_pairs.csv").unlink()
    target = root / "PF-WILLOW" / "car" / "b.mat"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        savemat(target, content)
    return PFWillow(root / "PF-WILLOW")


def make_pascal(tmp: Path) -> Path:
    """HPF layout: PF-PASCAL/test_pairs.csv, JPEGImages/{a,b}.jpg, Annotations/cat/{a,b}.mat."""
    from scipy.io import savemat

    root = tmp / "PF-PASCAL"
    for name in ("a", "b"):
        save_image(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / "cat").mkdir(parents=True, exist_ok=True)
        savemat(
            root / "Annotations" / "cat" / f"{name}.mat",
            {"kps": np.array([[3.0, 4.0], [np.nan, np.nan], [10.0, 12.0]]), "bbox": [[1.0, 2.0, 30.0, 25.0]]},
        )
    write_csv(
        root / "test_pairs.csv",
        [["source_image", "target_image", "class"], ["JPEGImages/a.jpg", "JPEGImages/b.jpg", 8]],
    )
    write_csv(
        root / "trn_pairs.csv",
        [["source_image", "target_image", "class", "flip"], ["JPEGImages/a.jpg", "JPEGImages/b.jpg", 8, 0]],
    )
    write_csv(
        root / "ncnet_pairs.csv",
        [
            ["source_image", "target_image", "class", "XA", "YA", "XB", "YB"],
            ["JPEGImages/a.jpg", "JPEGImages/b.jpg", 8, "1;2;3", "4;5;6", "7;8;9", "1;2;3"],
        ],
    )
    return root


def pascal_csv(tmp: Path, name: str, old: str, new: str, **kw: Any) -> PFPascal:
    root = make_pascal(tmp)
    edit(root / name, old, new)
    return PFPascal(root, pairs=root / name, **kw)


def pascal_mat(tmp: Path, content: dict[str, Any] | bytes) -> PairRecord:
    from scipy.io import savemat

    root = make_pascal(tmp)
    target = root / "Annotations" / "cat" / "b.mat"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        savemat(target, content)
    return PFPascal(root)[0]


SPAIR_NAME = "000001-a-b:cat"


def make_spair(tmp: Path) -> Path:
    root = tmp / "SPair-71k"
    for name in ("a", "b"):
        save_image(root / "JPEGImages" / "cat" / f"{name}.jpg")
    (root / "Layout" / "large").mkdir(parents=True)
    (root / "Layout" / "large" / "test.txt").write_text(SPAIR_NAME + "\n")
    (root / "PairAnnotation" / "test").mkdir(parents=True)
    ann = {
        "src_kps": [[1, 2], [3, 4]],
        "trg_kps": [[5, 6], [7, 8]],
        "src_imsize": [40, 30, 3],
        "trg_imsize": [40, 30, 3],
        "src_bndbox": [0, 0, 20, 20],
        "trg_bndbox": [1, 1, 30, 25],
        "category": "cat",
        "kps_ids": ["0", "3"],
        "viewpoint_variation": 0,
    }
    (root / "PairAnnotation" / "test" / f"{SPAIR_NAME}.json").write_text(json.dumps(ann))
    return root


def spair_json(tmp: Path, change: Callable[[dict[str, Any]], Any] | str) -> PairRecord:
    root = make_spair(tmp)
    path = root / "PairAnnotation" / "test" / f"{SPAIR_NAME}.json"
    if isinstance(change, str):
        path.write_text(change)
    else:
        ann = json.loads(path.read_text())
        change(ann)
        path.write_text(json.dumps(ann))
    return SPair(root)[0]


def spair_list(tmp: Path, text: str) -> SPair:
    root = make_spair(tmp)
    (root / "Layout" / "large" / "test.txt").write_text(text)
    return SPair(root)


class ListDataset:
    """The smallest object `evaluate` accepts: records over two synthetic images."""

    name = "fake"
    default_threshold = "img"

    def __init__(self, tmp: Path, records: list[PairRecord]) -> None:
        save_image(tmp / "a.png")
        self.path, self.records = tmp / "a.png", records

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> tuple[Image.Image, Image.Image, PairRecord]:
        return Image.open(self.path), Image.open(self.path), self.records[i]


def record(tmp: Path, valid: list[bool]) -> PairRecord:
    kps = np.where(np.array(valid)[:, None], np.full((len(valid), 2), 5.0), np.nan).astype(np.float32)
    return PairRecord(
        tmp / "a.png", tmp / "a.png", kps, kps.copy(), np.array(valid), src_size=(30, 40), tgt_size=(30, 40)
    )


def eval_one(tmp: Path, **kw: Any) -> Any:
    return evaluate(RescaleMatcher(), ListDataset(tmp, [record(tmp, [True, True, False])]), progress=False, **kw)


class NoMatch:
    pass


class ShortMatcher:
    def match(self, source: Any, target: Any, keypoints: Any) -> Any:
        return RescaleMatcher().match(source, target, np.asarray(keypoints)[:1])


# --- models, checkpoints, images -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def tiny_model() -> mmnet.MMNet:
    return mmnet.create_model("mmnet_resnet18", channels=4, sem_channels=4)


def matcher(**kw: Any) -> mmnet.Matcher:
    return mmnet.Matcher(tiny_model(), **{"device": "cpu", **kw})


@functools.lru_cache(maxsize=1)
def saved_checkpoint() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mmnet-bad-inputs-")) / "ckpt"
    return mmnet.save_pretrained(tiny_model(), folder)


def checkpoint(
    tmp: Path,
    config: Callable[[dict[str, Any]], Any] | None = None,
    weights: Callable[[dict[str, torch.Tensor]], Any] | None = None,
) -> mmnet.MMNet:
    """Load a copy of a saved checkpoint whose config.json and/or weights were changed in place."""
    folder = tmp / "ckpt"
    folder.mkdir()
    source = saved_checkpoint()
    data = json.loads((source / "config.json").read_text())
    if config is not None:
        config(data)
    (folder / "config.json").write_text(json.dumps(data))
    if weights is None:
        os.symlink(source / "model.safetensors", folder / "model.safetensors")
    else:
        state = load_file(source / "model.safetensors")
        weights(state)
        save_file(state, folder / "model.safetensors")
    return mmnet.from_pretrained(folder)


def set_model(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["model"].__setitem__(key, value)


def set_preprocess(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["preprocess"].__setitem__(key, value)


def first_weight(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit_state(state: dict[str, torch.Tensor]) -> None:
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[key] = change(state[key])

    return edit_state


def with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def bomb(tmp: Path) -> Any:
    save_image(tmp / "big.png", 100, 100)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # 10,000 pixels is more than twice the limit: PIL refuses to decode
    try:
        return load_image(tmp / "big.png")
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def scot(**kw: Any) -> mmnet.ScotMatcher:
    return mmnet.ScotMatcher("resnet18", pretrained=False, device="cpu", **kw)


def match_points(points: Any) -> Any:
    return matcher().match(torch.rand(3, 40, 50), torch.rand(3, 40, 50), points)


def official_file(tmp: Path, change: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    """An official-layout ResNet-50 MMNet state dict (constant tensors, expanded views: tiny on disk) whose
    first floating weight is changed by `change`."""
    from mmnet.zoo.convert.mmnet import official_layout

    with torch.device("meta"):
        model = mmnet.MMNet(mmnet.MMNetConfig(backbone="resnet50"))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    used, dead = official_layout(shapes)
    layout = {**{k: tuple(shapes[v]) for k, v in used.items()}, **dead}
    state = {
        k: (torch.tensor(1) if "num_batches" in k else torch.tensor(0.01)).expand(shape) for k, shape in layout.items()
    }
    key = next(k for k in used if "weight" in k)
    state[key] = change(torch.tensor(0.01)).expand(layout[key])
    torch.save(state, tmp / "official.pth")
    return tmp / "official.pth"


def convert(tmp: Path, change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    from mmnet.zoo.convert.mmnet import convert_official

    return convert_official(official_file(tmp, change), "resnet50", log=None)


# --- the table -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One kind of bad input: `run(tmp_path)` must raise `error` with `phrase` (a regex) in its message."""

    id: str
    run: Callable[[Path], Any]
    error: type[Exception]
    phrase: str


def header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def cub_list_file(tmp: Path, change: Callable[[Path], None]) -> CUB:
    root = make_cub(tmp)
    change(root / "pairs.csv")
    return CUB(root, pairs="pairs.csv")


def cub_truncated_parts(tmp: Path, keep_partial_line: bool) -> CUB:
    root = make_cub(tmp)
    path = root / "parts" / "part_locs.txt"
    text = path.read_text()
    cut = text.rindex("6 11 ") + (8 if keep_partial_line else 0)  # image 6 loses parts 11-15
    path.write_text(text[:cut])
    return CUB(root, n_pairs=4)


def truncated_image(tmp: Path) -> Any:
    root = make_cub(tmp)
    path = root / "images" / CUB_IMAGES[1]
    path.write_bytes(path.read_bytes()[:100])
    return CUB(root, pairs="pairs.csv").load(0)


ROWS: list[Bad] = [
    # CUB pair lists: every cell is parsed with the file and line in the error
    Bad(
        "cub-list-missing-column",
        lambda t: cub_list(t, "kp_ids,XA", "ids,XA"),
        DatasetError,
        r"pairs\.csv, line 1: missing column\(s\) 'kp_ids'",
    ),
    Bad(
        "cub-list-header-only",
        lambda t: cub_list_file(t, header_only),
        DatasetError,
        r"pairs\.csv: lists no pairs \(only a header row\)",
    ),
    Bad(
        "cub-list-empty-file",
        lambda t: cub_list_file(t, lambda p: p.write_text("")),
        DatasetError,
        r"pairs\.csv: the file is empty",
    ),
    Bad(
        "cub-list-malformed-number",
        lambda t: cub_list(t, "10;11;12", "10;1x;12"),
        DatasetError,
        r"pairs\.csv, line 2: column 'XA': '1x' is not a number",
    ),
    Bad(
        "cub-list-empty-cell",
        lambda t: cub_list(t, "13;14,8;9", "13;14,"),
        DatasetError,
        r"line 3: empty cell in column 'YB'",
    ),
    Bad(
        "cub-list-short-row",
        lambda t: cub_list(t, ",2;3;30;20\n", "\n"),
        DatasetError,
        r"line 2: 10 cells, expected 11",
    ),
    Bad(
        "cub-list-kp-id-out-of-range",
        lambda t: cub_list(t, "1;2;3", "1;2;16"),
        DatasetError,
        r"line 2: column 'kp_ids': part id 16 is outside 1\.\.15",
    ),
    Bad("cub-list-kp-id-zero", lambda t: cub_list(t, "1;2;3", "0;1;2"), DatasetError, r"part id 0 is outside 1\.\.15"),
    Bad("cub-list-kp-id-twice", lambda t: cub_list(t, "1;2;3", "1;2;2"), DatasetError, r"lists a part twice"),
    Bad(
        "cub-list-kp-id-fraction",
        lambda t: cub_list(t, "1;2;3", "1;2.5;3"),
        DatasetError,
        r"column 'kp_ids': '2\.5' is not an integer",
    ),
    Bad(
        "cub-list-nan-keypoint",
        lambda t: cub_list(t, "13;14;15", "13;nan;15"),
        DatasetError,
        r"line 2: column 'XB': 'nan' is not a finite number",
    ),
    Bad(
        "cub-list-inf-keypoint",
        lambda t: cub_list(t, "5;6;7", "5;inf;7"),
        DatasetError,
        r"column 'YA': 'inf' is not a finite number",
    ),
    Bad(
        "cub-list-count-mismatch",
        lambda t: cub_list(t, "10;11;12", "10;11"),
        DatasetError,
        r"line 2: column 'XA' has 2 values, expected 3",
    ),
    Bad(
        "cub-list-box-3-values",
        lambda t: cub_list(t, "2;3;30;20,", "2;3;30,"),
        DatasetError,
        r"column 'src_bbox' has 3 values, expected 4",
    ),
    Bad(
        "cub-list-box-zero-width",
        lambda t: cub_list(t, ",2;3;30;20\n", ",2;3;0;20\n"),
        DatasetError,
        r"column 'trg_bbox': box x;y;w;h needs a positive width and height",
    ),
    Bad(
        "cub-list-bad-class",
        lambda t: cub_list(t, ",1,1,", ",1,one,"),
        DatasetError,
        r"column 'target_class': 'one' is not a number",
    ),
    # CUB official tables (the sampler reads them)
    Bad(
        "cub-images-txt-no-path",
        lambda t: cub_table(t, "images.txt", f"2 {CUB_IMAGES[1]}", "2"),
        DatasetError,
        r"images\.txt, line 2: expected '<image id> <path>'",
    ),
    Bad(
        "cub-images-txt-duplicate-id",
        lambda t: cub_table(t, "images.txt", "3 ", "2 "),
        DatasetError,
        r"images\.txt, line 3: image id 2 is listed twice",
    ),
    Bad(
        "cub-parts-truncated-mid-line",
        lambda t: cub_truncated_parts(t, True),
        DatasetError,
        r"part_locs\.txt, line 86: 3 values, expected 5 .*the file may be truncated",
    ),
    Bad(
        "cub-parts-truncated-rows",
        lambda t: cub_truncated_parts(t, False),
        DatasetError,
        r"part_locs\.txt: image id 6 has 10 row\(s\), expected 15; the file may be truncated",
    ),
    Bad(
        "cub-parts-nan",
        lambda t: cub_table(t, "parts/part_locs.txt", "2 3 13.0", "2 3 nan"),
        DatasetError,
        r"part_locs\.txt, line 18: column 'x': 'nan' is not a finite number",
    ),
    Bad(
        "cub-parts-visible-not-0-1",
        lambda t: cub_table(t, "parts/part_locs.txt", "8.0 1\n", "8.0 2\n"),
        DatasetError,
        r"column 'visible' must be 0 or 1, found 2",
    ),
    Bad(
        "cub-box-malformed",
        lambda t: cub_table(t, "bounding_boxes.txt", "3 2.0 3.0 30.0", "3 2.0 3.0 3o"),
        DatasetError,
        r"bounding_boxes\.txt, line 3: column 'width': '3o' is not a number",
    ),
    Bad(
        "cub-box-zero-height",
        lambda t: cub_table(t, "bounding_boxes.txt", "4 2.0 3.0 30.0 20.0", "4 2 3 30 0"),
        DatasetError,
        r"image id 4: the box needs a positive width and height",
    ),
    Bad(
        "cub-split-unknown-image",
        lambda t: cub_table(t, "train_test_split.txt", "6 0", "99 0"),
        DatasetError,
        r"train_test_split\.txt: image id 99 is not listed in images\.txt",
    ),
    Bad(
        "cub-labels-empty",
        lambda t: cub_table(t, "image_class_labels.txt", "1 1\n2 1\n3 1\n4 2\n5 2\n6 2\n", "\n"),
        DatasetError,
        r"image_class_labels\.txt: the file is empty",
    ),
    # CUB sampler arguments
    Bad(
        "cub-n-pairs-zero", lambda t: CUB(make_cub(t), n_pairs=0), InputError, r"n_pairs must be an integer >= 1, got 0"
    ),
    Bad(
        "cub-n-pairs-float",
        lambda t: CUB(make_cub(t), n_pairs=2.5),
        InputError,
        r"n_pairs must be an integer >= 1, got 2\.5",
    ),
    Bad(
        "cub-n-pairs-impossible",
        lambda t: CUB(make_cub(t), n_pairs=10**9),
        InputError,
        r"cannot draw 1000000000 distinct pairs: the test split \(6 images\) has only 12 ordered same-species",
    ),
    Bad("cub-seed-negative", lambda t: CUB(make_cub(t), seed=-1), InputError, r"seed must be an integer >= 0"),
    Bad(
        "cub-same-class-string",
        lambda t: CUB(make_cub(t), same_class="yes"),
        InputError,
        r"same_class must be True or False, got 'yes'",
    ),
    Bad("cub-unknown-split", lambda t: CUB(make_cub(t), split="dev"), InputError, r"unknown split 'dev'"),
    Bad("cub-truncated-image", truncated_image, DatasetError, r"bird_1_1\.jpg cannot be read .*truncated"),
    # PF-WILLOW
    Bad(
        "willow-short-row",
        lambda t: willow_csv(t, ",29.0\nPF-WILLOW/car/b.png", "\nPF-WILLOW/car/b.png"),
        DatasetError,
        r"test_pairs\.csv, line 2: 41 cells, expected 42",
    ),
    Bad(
        "willow-malformed-number",
        lambda t: willow_csv(t, "png,1.0,", "png,1.0.0,"),
        DatasetError,
        r"line 2: column 'XA1': '1\.0\.0' is not a number",
    ),
    Bad(
        "willow-header-only",
        lambda t: PFWillow(t, pairs=write_csv(t / "p.csv", [WILLOW_HEADER])),
        DatasetError,
        r"p\.csv: lists no pairs",
    ),
    Bad(
        "willow-nan",
        lambda t: willow_csv(t, "png,1.0,", "png,NaN,"),
        DatasetError,
        r"column 'XA1': 'NaN' is not a finite number",
    ),
    Bad(
        "willow-empty-image-cell",
        lambda t: willow_csv(t, "PF-WILLOW/car/a.png,PF", ",PF"),
        DatasetError,
        r"line 2: empty cell in column 'imageA'",
    ),
    Bad(
        "willow-mat-truncated",
        lambda t: willow_mat(t, b"MATLAB 5.0 MAT-file truncated"),
        DatasetError,
        r"b\.mat: not a readable MATLAB file",
    ),
    Bad(
        "willow-mat-no-variable",
        lambda t: willow_mat(t, {"points": np.zeros((2, 10))}),
        DatasetError,
        r"b\.mat: no variable 'pts_coord'",
    ),
    Bad(
        "willow-mat-nine-points",
        lambda t: willow_mat(t, {"pts_coord": np.zeros((2, 9))}),
        DatasetError,
        r"pts_coord holds 9 keypoints, expected 10",
    ),
    Bad(
        "willow-mat-inf",
        lambda t: willow_mat(t, {"pts_coord": np.full((2, 10), np.inf)}),
        DatasetError,
        r"b\.mat: keypoint 1 is not finite",
    ),
    # PF-PASCAL
    Bad(
        "pascal-class-out-of-range",
        lambda t: pascal_csv(t, "test_pairs.csv", ",8", ",21"),
        DatasetError,
        r"test_pairs\.csv, line 2: class 21 is outside 1\.\.20",
    ),
    Bad(
        "pascal-class-not-number",
        lambda t: pascal_csv(t, "test_pairs.csv", ",8", ",cat"),
        DatasetError,
        r"line 2: column 'class': 'cat' is not a number",
    ),
    Bad(
        "pascal-flip-not-0-1",
        lambda t: pascal_csv(t, "trn_pairs.csv", ",8,0", ",8,2", split="trn"),
        DatasetError,
        r"trn_pairs\.csv, line 2: column 'flip' must be 0 or 1, got '2'",
    ),
    Bad(
        "pascal-xy-count-mismatch",
        lambda t: pascal_csv(t, "ncnet_pairs.csv", "4;5;6", "4;5"),
        DatasetError,
        r"line 2: XA, YA, XB, YB must have the same number of values, got 3, 2, 3, 3",
    ),
    Bad(
        "pascal-empty-csv",
        lambda t: PFPascal(make_pascal(t), pairs=write_csv(t / "e.csv", [])),
        DatasetError,
        r"e\.csv: the file is empty",
    ),
    Bad(
        "pascal-extra-cells",
        lambda t: pascal_csv(t, "ncnet_pairs.csv", ",1;2;3\n", ",1;2;3,9,9\n"),
        DatasetError,
        r"line 2: 9 cells, expected 7",
    ),
    Bad(
        "pascal-mat-half-nan-row",
        lambda t: pascal_mat(t, {"kps": [[1.0, 2.0], [np.nan, 3.0]], "bbox": [1, 2, 3, 4]}),
        DatasetError,
        r"b\.mat: keypoint 2 is not finite .*NaN in both x and y",
    ),
    Bad(
        "pascal-mat-truncated",
        lambda t: pascal_mat(
            t, (t / "PF-PASCAL/Annotations/cat/a.mat").read_bytes()[:150] if (t / "PF-PASCAL").exists() else b"\0" * 150
        ),
        DatasetError,
        r"b\.mat: not a readable MATLAB file .*truncated",
    ),
    Bad(
        "pascal-mat-bad-box",
        lambda t: pascal_mat(t, {"kps": [[1.0, 2.0]], "bbox": [5, 2, 3]}),
        DatasetError,
        r"b\.mat: the box must be 4 finite numbers x1 y1 x2 y2",
    ),
    Bad(
        "pascal-mat-no-kps", lambda t: pascal_mat(t, {"bbox": [1, 2, 3, 4]}), DatasetError, r"b\.mat: no variable 'kps'"
    ),
    Bad(
        "pascal-mat-kps-shape",
        lambda t: pascal_mat(t, {"kps": np.zeros((3, 3)), "bbox": [1, 2, 3, 4]}),
        DatasetError,
        r"keypoints must be an N x 2 array, got shape \(3, 3\)",
    ),
    # SPair-71k
    Bad(
        "spair-truncated-json",
        lambda t: spair_json(t, '{"src_kps": [[1, 2], [3'),
        DatasetError,
        r"\.json: not valid JSON .*the file may be truncated",
    ),
    Bad(
        "spair-missing-key",
        lambda t: spair_json(t, lambda a: a.pop("trg_kps")),
        DatasetError,
        r"missing key\(s\) 'trg_kps'",
    ),
    Bad(
        "spair-nan-keypoint",
        lambda t: spair_json(t, lambda a: a["src_kps"][1].__setitem__(0, float("nan"))),
        DatasetError,
        r"src_kps\[1\] = \[nan, 4\.0\] is not finite",
    ),
    Bad(
        "spair-count-mismatch",
        lambda t: spair_json(t, lambda a: a["trg_kps"].pop()),
        DatasetError,
        r"2 src_kps but 1 trg_kps",
    ),
    Bad(
        "spair-bad-imsize",
        lambda t: spair_json(t, lambda a: a.__setitem__("src_imsize", [0, 30, 3])),
        DatasetError,
        r"src_imsize must be \[width, height, channels\] with positive integers, got \[0, 30, 3\]",
    ),
    Bad(
        "spair-inverted-box",
        lambda t: spair_json(t, lambda a: a.__setitem__("trg_bndbox", [30, 1, 1, 25])),
        DatasetError,
        r"the box must be 4 finite numbers x1 y1 x2 y2 with x1 <= x2",
    ),
    Bad(
        "spair-bad-kps-ids",
        lambda t: spair_json(t, lambda a: a.__setitem__("kps_ids", ["x", "1"])),
        DatasetError,
        r"kps_ids must be integers",
    ),
    Bad(
        "spair-bad-layout-line",
        lambda t: spair_list(t, SPAIR_NAME + "\nnot a pair\n"),
        DatasetError,
        r"test\.txt, line 2: bad line 'not a pair' \(expected NNNNNN-<src>-<trg>:<category>\)",
    ),
    Bad("spair-empty-list", lambda t: spair_list(t, "\n\n"), DatasetError, r"test\.txt: lists no pairs"),
    Bad(
        "spair-bad-size-option",
        lambda t: SPair(make_spair(t), size="medium"),
        InputError,
        r"layout size must be 'large' or 'small', not 'medium'",
    ),
    # load_dataset
    Bad("dataset-unknown-name", lambda t: load_dataset("pascal", t), InputError, r"unknown dataset 'pascal'"),
    Bad(
        "dataset-unknown-keyword",
        lambda t: load_dataset("cub", make_cub(t), n_pair=3),
        InputError,
        r"unknown keyword argument\(s\) for CUB-200-2011 'n_pair'; allowed: n_pairs, same_class, seed",
    ),
    Bad(
        "dataset-root-not-a-folder",
        lambda t: load_dataset("spair", t / "nope"),
        DatasetError,
        r"dataset folder .*nope' not found",
    ),
    Bad(
        "dataset-root-none",
        lambda t: load_dataset("cub", None),
        InputError,
        r"root must be the path of the CUB-200-2011 folder, got None",
    ),
    # evaluation
    Bad("eval-limit-zero", lambda t: eval_one(t, limit=0), InputError, r"limit must be an integer >= 1, got 0"),
    Bad("eval-limit-negative", lambda t: eval_one(t, limit=-5), InputError, r"limit must be an integer >= 1, got -5"),
    Bad(
        "eval-alpha-nan",
        lambda t: eval_one(t, alphas=(0.1, float("nan"))),
        InputError,
        r"alphas must be a finite number > 0, got nan",
    ),
    Bad("eval-alphas-empty", lambda t: eval_one(t, alphas=()), InputError, r"alphas must be a non-empty list"),
    Bad(
        "eval-frame-zero",
        lambda t: eval_one(t, frame=(0, 320)),
        InputError,
        r"frame must be \(height, width\), two integers >= 1, got \(0, 320\)",
    ),
    Bad("eval-unknown-threshold", lambda t: eval_one(t, threshold="box"), InputError, r"unknown PCK threshold 'box'"),
    Bad(
        "eval-zero-pairs",
        lambda t: evaluate(RescaleMatcher(), ListDataset(t, []), progress=False),
        DatasetError,
        r"fake: nothing to evaluate, the dataset has 0 pairs",
    ),
    Bad(
        "eval-no-valid-keypoint",
        lambda t: evaluate(RescaleMatcher(), ListDataset(t, [record(t, [False, False])]), progress=False),
        DatasetError,
        r"none of the 1 evaluated pair\(s\) has a keypoint valid in both images",
    ),
    Bad(
        "eval-not-a-matcher",
        lambda t: evaluate(NoMatch(), ListDataset(t, [])),
        InputError,
        r"matcher must have a match\(source, target, keypoints\) method",
    ),
    Bad(
        "eval-wrong-prediction-count",
        lambda t: evaluate(ShortMatcher(), ListDataset(t, [record(t, [True, True])]), progress=False),
        InputError,
        r"expected 2 predicted keypoints, got array of shape \(1, 2\)",
    ),
    # matcher construction (MMNet Matcher, ReadoutConfig)
    Bad(
        "matcher-device-bogus",
        lambda t: matcher(device="bogus"),
        InputError,
        r"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or a torch\.device, got 'bogus'",
    ),
    Bad(
        "matcher-device-missing-gpu",
        lambda t: mmnet.Matcher(tiny_model(), device="cuda:99"),
        InputError,
        r"device 'cuda:99': (no CUDA GPU is available|this machine has \d+ CUDA device)",
    ),
    Bad("matcher-device-number", lambda t: matcher(device=3.5), InputError, r"device must be .*, got 3\.5"),
    Bad(
        "matcher-level-out-of-range",
        lambda t: matcher(level=7),
        InputError,
        r"level 7 out of range: level must be an integer in \[-4, 3\]",
    ),
    Bad("matcher-level-float", lambda t: matcher(level=1.5), InputError, r"level must be an integer, got 1\.5"),
    Bad(
        "matcher-method",
        lambda t: matcher(method="mean"),
        InputError,
        r"method must be one of 'softargmax', 'argmax', 'ot', got 'mean'",
    ),
    Bad(
        "matcher-convention",
        lambda t: matcher(convention="middle"),
        InputError,
        r"convention must be one of 'center', 'corner', got 'middle'",
    ),
    Bad("matcher-window-even", lambda t: matcher(window=4), InputError, r"window must be an odd integer >= 1"),
    Bad("matcher-window-zero", lambda t: matcher(window=0), InputError, r"window must be an integer >= 1, got 0"),
    Bad(
        "matcher-chunk-size-zero",
        lambda t: matcher(chunk_size=0),
        InputError,
        r"chunk_size must be an integer >= 1, got 0",
    ),
    Bad(
        "matcher-input-size-zero",
        lambda t: matcher(input_size=(0, 320)),
        InputError,
        r"input_size must be \(height, width\), two integers >= 32, got \(0, 320\)",
    ),
    Bad(
        "matcher-input-size-1x1",
        lambda t: matcher(input_size=(1, 1)),
        InputError,
        r"input_size must be .* >= 32, got \(1, 1\)",
    ),
    Bad(
        "matcher-input-size-float",
        lambda t: matcher(input_size=(224.0, 320)),
        InputError,
        r"input_size must be \(height, width\), two integers",
    ),
    Bad(
        "matcher-input-size-negative",
        lambda t: matcher(input_size=(-224, 320)),
        InputError,
        r"input_size must be .*got \(-224, 320\)",
    ),
    Bad(
        "matcher-unknown-keyword",
        lambda t: matcher(levle=2),
        InputError,
        r"unknown keyword argument\(s\) of Matcher 'levle'; allowed: convention, level, method, ot_epsilon, "
        r"ot_exponent, ot_hough, ot_iterations, ot_masses, window",
    ),
    Bad("matcher-amp-string", lambda t: matcher(amp="yes"), InputError, r"amp must be True or False, got 'yes'"),
    Bad(
        "matcher-unknown-preset",
        lambda t: matcher(preset="fast"),
        InputError,
        r"unknown preset 'fast': preset must be None \(the checkpoint's readout\) or one of 'finest', 'official'",
    ),
    Bad(
        "matcher-not-a-model",
        lambda t: mmnet.Matcher("mmnet_resnet18"),
        InputError,
        r"model must be an MMNet .*got 'mmnet_resnet18'",
    ),
    Bad(
        "readout-config-method",
        lambda t: mmnet.ReadoutConfig(method="max"),
        InputError,
        r"method must be one of 'softargmax', 'argmax', 'ot', got 'max'",
    ),
    # model construction (create_model, MMNetConfig, PreprocessConfig)
    Bad(
        "config-channels-zero",
        lambda t: mmnet.MMNetConfig(channels=0),
        InputError,
        r"channels must be an integer >= 1, got 0",
    ),
    Bad(
        "config-channels-string",
        lambda t: mmnet.MMNetConfig(channels="21"),
        InputError,
        r"channels must be an integer >= 1, got '21'",
    ),
    Bad(
        "config-attention-kernel-even",
        lambda t: mmnet.MMNetConfig(attention_kernel=4),
        InputError,
        r"attention_kernel must be an odd integer >= 1, got 4",
    ),
    Bad(
        "config-dilations-empty",
        lambda t: mmnet.MMNetConfig(sem_dilations=()),
        InputError,
        r"sem_dilations must be a non-empty list of integers >= 1",
    ),
    Bad(
        "create-model-unknown-keyword",
        lambda t: mmnet.create_model("mmnet_resnet18", chanels=4),
        InputError,
        r"unknown keyword argument\(s\) of create_model\('mmnet_resnet18'\) 'chanels'",
    ),
    Bad(
        "create-model-unknown-name",
        lambda t: mmnet.create_model("mmnet_resnet17"),
        UnknownModelError,
        r"mmnet_resnet17",
    ),
    Bad(
        "preprocess-std-zero",
        lambda t: PreprocessConfig(std=(0.2, 0.0, 0.2)),
        InputError,
        r"std\[1\] must be a finite number > 0, got 0\.0",
    ),
    Bad(
        "preprocess-mean-two-values",
        lambda t: PreprocessConfig(mean=(0.5, 0.5)),
        InputError,
        r"mean must be 3 numbers \(one per RGB channel\), got \(0\.5, 0\.5\)",
    ),
    # checkpoints: config.json that parses but is wrong, weights that load but are wrong
    Bad(
        "ckpt-channels-string",
        lambda t: checkpoint(t, set_model("channels", "21")),
        CheckpointError,
        r"config\.json: channels must be an integer >= 1, got '21'",
    ),
    Bad(
        "ckpt-mean-two-values",
        lambda t: checkpoint(t, set_preprocess("mean", [0.5, 0.5])),
        CheckpointError,
        r"config\.json: mean must be 3 numbers",
    ),
    Bad(
        "ckpt-std-zero",
        lambda t: checkpoint(t, set_preprocess("std", [0, 0, 0])),
        CheckpointError,
        r"config\.json: std\[0\] must be a finite number > 0, got 0",
    ),
    Bad(
        "ckpt-size-zero",
        lambda t: checkpoint(t, set_preprocess("size", [0, 0])),
        CheckpointError,
        r"config\.json: size must be \(height, width\), two integers >= 1",
    ),
    Bad(
        "ckpt-unknown-model-key",
        lambda t: checkpoint(t, set_model("depth", 3)),
        CheckpointError,
        r"unknown MMNet config key\(s\) 'depth'",
    ),
    Bad(
        "ckpt-unknown-preprocess-key",
        lambda t: checkpoint(t, set_preprocess("scale", 2)),
        CheckpointError,
        r"unknown preprocess key\(s\) 'scale'",
    ),
    Bad(
        "ckpt-model-null",
        lambda t: checkpoint(t, lambda c: c.__setitem__("model", None)),
        CheckpointError,
        r"config\.json: \"model\" must be a JSON object, got None",
    ),
    Bad(
        "ckpt-bad-readout",
        lambda t: checkpoint(t, lambda c: c.__setitem__("readout", {"method": "x"})),
        CheckpointError,
        r"config\.json: method must be one of 'softargmax', 'argmax', 'ot', got 'x'",
    ),
    Bad("ckpt-config-list", lambda t: checkpoint(t, lambda c: c.clear()), CheckpointError, r"is not an mmnet config"),
    Bad(
        "ckpt-nan-weight",
        lambda t: checkpoint(t, weights=first_weight(with_nan)),
        CheckpointError,
        r"model\.safetensors: tensor '.*' holds 1 NaN or infinite value\(s\)",
    ),
    Bad(
        "ckpt-integer-weight",
        lambda t: checkpoint(t, weights=first_weight(lambda w: w.to(torch.int64))),
        CheckpointError,
        r"is stored as int64, but the model needs floating-point weights",
    ),
    Bad(
        "save-pretrained-int-dtype",
        lambda t: mmnet.save_pretrained(tiny_model(), t / "o", dtype=torch.int8),
        InputError,
        r"dtype must be a floating torch dtype",
    ),
    Bad(
        "save-pretrained-into-a-file",
        lambda t: mmnet.save_pretrained(tiny_model(), write_csv(t / "f", [])),
        InputError,
        r"is a file, not a folder",
    ),
    Bad(
        "save-pretrained-bad-readout",
        lambda t: mmnet.save_pretrained(tiny_model(), t, readout={"level": "2"}),
        InputError,
        r"level must be an integer, got '2'",
    ),
    # images (documented rules: docs/conventions.md)
    Bad(
        "image-float-0-255",
        lambda t: load_image(np.full((4, 5, 3), 200.0)),
        InputError,
        r"a float image array must hold values in \[0, 1\], got range \[200, 200\] .*divide by 255",
    ),
    Bad(
        "image-negative-float-tensor",
        lambda t: load_image(torch.full((3, 4, 5), -0.5)),
        InputError,
        r"a float image tensor must hold values in \[0, 1\], got range \[-0\.5, -0\.5\]",
    ),
    Bad(
        "image-int64-tensor",
        lambda t: load_image(torch.zeros(3, 4, 5, dtype=torch.int64)),
        InputError,
        r"image tensor dtype int64 is not supported: use uint8 \(0-255\), uint16 \(0-65535\) or float",
    ),
    Bad(
        "image-bool-array",
        lambda t: load_image(np.zeros((4, 5), bool)),
        InputError,
        r"image array dtype bool is not supported",
    ),
    Bad(
        "image-channels-first-array",
        lambda t: load_image(np.zeros((3, 40, 50), np.uint8)),
        InputError,
        r"got shape \(3, 40, 50\) \(channels first\? numpy images are \(H, W, C\)",
    ),
    Bad(
        "image-channels-last-tensor",
        lambda t: load_image(torch.zeros(40, 50, 3)),
        InputError,
        r"got \(40, 50, 3\) \(channels last\? tensors are \(C, H, W\)",
    ),
    Bad(
        "image-nan",
        lambda t: load_image(torch.full((3, 4, 5), float("nan"))),
        InputError,
        r"image tensor contains NaN or infinite values",
    ),
    Bad(
        "image-url",
        lambda t: load_image("https://example.org/cat.jpg"),
        InputError,
        r"is a URL: mmnet does not download images",
    ),
    Bad(
        "image-decompression-bomb",
        bomb,
        InputError,
        r"big\.png is too large to open safely: .*10000 pixels.*PIL\.Image\.MAX_IMAGE_PIXELS",
    ),
    Bad("image-missing-file", lambda t: load_image(t / "nope.jpg"), InputError, r"image file not found: .*nope"),
    Bad("image-folder", lambda t: load_image(t), InputError, r"image file not found: .*\(it is a folder\)"),
    Bad(
        "image-not-an-image",
        lambda t: load_image(write_csv(t / "x.jpg", [["a"]])),
        InputError,
        r"cannot read image .*x\.jpg",
    ),
    Bad("image-wrong-type", lambda t: load_image(42), InputError, r"unsupported image type int"),
    # keypoints
    Bad(
        "keypoints-nan",
        lambda t: match_points([[1.0, float("nan")]]),
        InputError,
        r"keypoints contain NaN or infinite values",
    ),
    Bad(
        "keypoints-three-columns",
        lambda t: match_points(np.zeros((4, 3))),
        InputError,
        r"keypoints must have shape \(N, 2\) of x, y pixels; got \(4, 3\)",
    ),
    Bad(
        "keypoints-strings",
        lambda t: match_points([["a", "b"]]),
        InputError,
        r"keypoints must be an \(N, 2\) array of x, y pixels",
    ),
    Bad(
        "match-batch-length-mismatch",
        lambda t: matcher().match_batch([EXAMPLE], [EXAMPLE, EXAMPLE], [[[1, 2]]]),
        InputError,
        r"got 1 sources, 2 targets, 1 keypoint sets",
    ),
    # SCOT construction and its hub options
    Bad("scot-epsilon-zero", lambda t: scot(epsilon=0), InputError, r"epsilon must be a finite number > 0, got 0\.0"),
    Bad(
        "scot-epsilon-string",
        lambda t: scot(epsilon="0.05"),
        InputError,
        r"epsilon must be a finite number > 0, got '0\.05'",
    ),
    Bad("scot-bins-zero", lambda t: scot(bins=0), InputError, r"bins must be an integer >= 1, got 0"),
    Bad(
        "scot-iterations-negative",
        lambda t: scot(iterations=-1),
        InputError,
        r"iterations must be an integer >= 1, got -1",
    ),
    Bad("scot-long-side-zero", lambda t: scot(long_side=0), InputError, r"long_side must be an integer >= 16, got 0"),
    Bad(
        "scot-box-size-nan",
        lambda t: scot(box_size=float("nan")),
        InputError,
        r"box_size must be a finite number > 0, got nan",
    ),
    Bad(
        "scot-saliency",
        lambda t: scot(saliency="grad"),
        InputError,
        r"saliency must be one of 'cam', 'norm', 'uniform', got 'grad'",
    ),
    Bad(
        "scot-unknown-setting",
        lambda t: scot(epsilom=0.1),
        InputError,
        r"unknown SCOT setting\(s\) 'epsilom'; allowed: bins, box_size, epsilon",
    ),
    Bad("scot-layer-out-of-range", lambda t: scot(layers=[0, 99]), InputError, r"layer ids must be in \[0, 7\]"),
    Bad(
        "scot-unknown-preset",
        lambda t: mmnet.create_matcher("scot_resnet18", pretrained=False, preset="official"),
        InputError,
        r"SCOT has no preset 'official'",
    ),
    Bad(
        "scot-offline-miss",
        lambda t: mmnet.create_matcher("scot_resnet18", local_files_only=True, cache_dir=t / "hub", device="cpu"),
        WeightsNotFoundError,
        r"timm/resnet18\.a1_in1k@main: offline mode .* is on and it is not in the cache",
    ),
    # trainer configuration
    Bad("train-steps-zero", lambda t: TrainConfig(steps=0), InputError, r"steps must be an integer >= 1, got 0"),
    Bad(
        "train-batch-size-float",
        lambda t: TrainConfig(batch_size=2.0),
        InputError,
        r"batch_size must be an integer >= 1, got 2\.0",
    ),
    Bad(
        "train-accumulate-zero",
        lambda t: TrainConfig(accumulate=0),
        InputError,
        r"accumulate must be an integer >= 1, got 0",
    ),
    Bad("train-lr-nan", lambda t: TrainConfig(lr=float("nan")), InputError, r"lr must be a finite number > 0, got nan"),
    Bad(
        "train-backbone-mode",
        lambda t: TrainConfig(train_backbone="last9"),
        InputError,
        r"train_backbone must be one of 'frozen', 'last1', 'last2', 'last3', 'full', got 'last9'",
    ),
    Bad("train-amp", lambda t: TrainConfig(amp="fp8"), InputError, r"amp must be one of 'bf16', 'fp16', 'off'"),
    # official checkpoint conversion
    Bad(
        "convert-official-nan-weight",
        lambda t: convert(t, lambda w: w * float("nan")),
        CheckpointError,
        r"official\.pth: the official checkpoint: tensor '.*' holds \d+ NaN or infinite value\(s\)",
    ),
    Bad(
        "convert-official-integer-weight",
        lambda t: convert(t, lambda w: w.to(torch.int64)),
        CheckpointError,
        r"official\.pth: the official checkpoint: tensor '.*' is stored as int64, but the model needs floating",
    ),
]


@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_raises_a_library_error(case: Bad, tmp_path: Path) -> None:
    with pytest.raises(case.error, match=case.phrase) as info:
        case.run(tmp_path)
    assert isinstance(info.value, MMNetError)


def test_table_has_one_row_per_kind() -> None:
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids))


def test_good_synthetic_datasets_load(tmp_path: Path) -> None:
    """The fixtures the table breaks are valid as built: each error above comes from its one change."""
    assert len(CUB(make_cub(tmp_path / "c"), pairs="pairs.csv")) == 2
    assert len(CUB(make_cub(tmp_path / "d"), n_pairs=12)) == 12  # every same-species pair there is
    assert len(PFWillow(make_willow(tmp_path / "w"))) == 2
    assert len(PFWillow(make_willow(tmp_path / "m") / "PF-WILLOW")) == 2
    root = make_pascal(tmp_path / "p")
    assert PFPascal(root)[0].valid.tolist() == [True, False, True]
    assert PFPascal(root, split="trn")[0].flip is False
    assert len(PFPascal(root, pairs=root / "ncnet_pairs.csv")[0].valid) == 3
    assert SPair(make_spair(tmp_path / "s"))[0].kp_ids.tolist() == [0, 3]
    assert eval_one(tmp_path / "e").n_pairs == 1


def test_cub_sampler_refuses_at_once_and_is_linear(tmp_path: Path) -> None:
    root = make_cub(tmp_path)
    start = time.perf_counter()
    with pytest.raises(InputError, match="only 30 ordered pairs"):
        CUB(root, n_pairs=31, same_class=False)
    assert time.perf_counter() - start < 2.0
    every = CUB(root, n_pairs=30, same_class=False)  # dense request: all of them, each once
    assert len({(r.src_path, r.tgt_path) for r in every}) == 30
    assert all(r.src_path != r.tgt_path for r in every)


def test_save_pretrained_round_trip_keeps_predictions_and_writes_plain_files(tmp_path: Path) -> None:
    """load -> save -> load gives the same predictions (the checkpoint's own readout is kept), files are
    written by rename (no temporary files left) with ordinary permissions."""
    name = "mmnet_efficientnet_lite2.cub_photos"
    model = mmnet.from_pretrained(name)
    folder = mmnet.save_pretrained(model, tmp_path / "copy")
    again = mmnet.from_pretrained(folder)
    assert again.readout == model.readout and again.preprocess == model.preprocess
    points = [[91, 98], [136, 98], [114, 137]]
    first = mmnet.Matcher(model, device="cpu").match(EXAMPLE, EXAMPLE.with_name("grace_hopper.jpg"), points)
    second = mmnet.Matcher(again, device="cpu").match(EXAMPLE, EXAMPLE.with_name("grace_hopper.jpg"), points)
    torch.testing.assert_close(first.keypoints, second.keypoints, rtol=0, atol=1e-4)
    torch.testing.assert_close(first.scores, second.scores, rtol=0, atol=1e-5)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_keypoints_are_transferred_in_chunks(tmp_path: Path) -> None:
    """Many points go through in `chunk_size` steps with the same answer as one step."""
    src, tgt = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(0)), torch.rand(3, 50, 70)
    points = torch.rand(3000, 2) * torch.tensor([79.0, 59.0])
    whole = matcher(chunk_size=4096).match(src, tgt, points)
    chunked = matcher(chunk_size=7).match(src, tgt, points)
    torch.testing.assert_close(chunked.keypoints, whole.keypoints, rtol=0, atol=1e-4)
    torch.testing.assert_close(chunked.scores, whole.scores, rtol=0, atol=1e-5)


def test_default_keypoint_steps_follow_the_row_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `chunk_size`, a step takes as many points as keep its rows within ROW_BUDGET floats (here: one
    point per step), with the same answer as one step."""
    import mmnet.matching.mmnet as matching

    src, tgt = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(0)), torch.rand(3, 50, 70)
    points = torch.rand(40, 2) * torch.tensor([79.0, 59.0])
    whole = matcher(chunk_size=4096).match(src, tgt, points)
    stepped = matcher()
    calls = []
    rows = stepped.model.correlation_rows
    monkeypatch.setattr(stepped.model, "correlation_rows", lambda *a: calls.append(1) or rows(*a))
    monkeypatch.setattr(matching, "ROW_BUDGET", 1)
    result = stepped.match(src, tgt, points)
    assert len(calls) == 40
    torch.testing.assert_close(result.keypoints, whole.keypoints, rtol=0, atol=1e-4)
    torch.testing.assert_close(result.scores, whole.scores, rtol=0, atol=1e-5)


def test_save_pretrained_leaves_no_half_written_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = mmnet.save_pretrained(tiny_model(), tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args: Any, **kw: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("mmnet.zoo.hub.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        mmnet.save_pretrained(tiny_model(), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # old checkpoint intact, no temp files
    shutil.rmtree(folder)


def test_scot_offline_miss_fails_at_once(tmp_path: Path) -> None:
    """The SCOT path honours local_files_only / revision / cache_dir like Matcher.from_pretrained."""
    mmnet.ScotMatcher("resnet18", pretrained=False, device="cpu")  # imports and builds once, outside the timing
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"timm/resnet50\.tv_in1k@v0: offline mode"):
        mmnet.create_matcher("scot_resnet50", revision="v0", cache_dir=tmp_path, local_files_only=True, device="cpu")
    assert time.perf_counter() - start < 3.0


# --- the command line: argument errors exit with status 2 and say what was wrong ----------------------------

ASTRONAUT, GRACE = str(EXAMPLE), str(EXAMPLE.with_name("grace_hopper.jpg"))


def cub_eval(tmp: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", "cub", "--root", str(make_cub(tmp)), "--model", "rescale", "--no-progress", *extra]


def header_only_list(tmp: Path) -> list[str]:
    argv = cub_eval(tmp, "--pairs", "pairs.csv")
    header_only(tmp / "CUB_200_2011" / "pairs.csv")
    return argv


CLI_ROWS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("eval-limit-zero", lambda t: cub_eval(t, "--limit", "0"), r"--limit: must be an integer >= 1, got '0'"),
    ("eval-limit-text", lambda t: cub_eval(t, "--limit", "ten"), r"--limit: must be an integer >= 1, got 'ten'"),
    ("eval-num-pairs-negative", lambda t: cub_eval(t, "--num-pairs", "-3"), r"--num-pairs: must be an integer >= 1"),
    ("eval-seed-negative", lambda t: cub_eval(t, "--seed", "-1"), r"--seed: must be an integer >= 0"),
    ("eval-alpha-nan", lambda t: cub_eval(t, "--alpha", "nan"), r"--alpha: must be a finite number > 0, got 'nan'"),
    (
        "eval-too-many-pairs",
        lambda t: cub_eval(t, "--num-pairs", "13"),
        r"mmnet: error: CUB-200-2011: cannot draw 13 distinct pairs",
    ),
    ("eval-header-only-list", header_only_list, r"mmnet: error: .*pairs\.csv: lists no pairs"),
    (
        "eval-out-is-a-file",
        lambda t: cub_eval(t, "--out", str(write_csv(t / "taken", []))),
        r"--out must be a folder, but .*taken' is a file",
    ),
    (
        "match-json-folder-missing",
        lambda t: ["match", ASTRONAUT, GRACE, "--kpts", "1,2", "--json", str(t / "no" / "such" / "m.json")],
        r"--json: the folder .*no/such' of .* does not exist",
    ),
    (
        "match-out-is-a-folder",
        lambda t: ["match", ASTRONAUT, GRACE, "--kpts", "1,2", "--out", str(t)],
        r"--out must be a file path, but .* is a folder",
    ),
    (
        "flow-npy-folder-missing",
        lambda t: ["flow", ASTRONAUT, GRACE, "--npy", str(t / "none" / "f.npy")],
        r"--npy: the folder .*none' of .* does not exist",
    ),
    ("match-kpts-empty", lambda t: ["match", ASTRONAUT, GRACE, "--kpts", ";"], r"no keypoints in ';'"),
    (
        "match-kpts-bad-json",
        lambda t: ["match", ASTRONAUT, GRACE, "--kpts", str(write_csv(t / "k.json", [["{1: 2}"]]))],
        r"k\.json must hold a JSON list of \[x, y\] pairs",
    ),
    (
        "match-image-url",
        lambda t: ["match", "https://example.org/a.jpg", GRACE, "--kpts", "1,2"],
        r"mmnet: error: image 'https://example\.org/a\.jpg' is a URL",
    ),
    (
        "match-device-bogus",
        lambda t: ["match", ASTRONAUT, GRACE, "--kpts", "1,2", "--device", "gpu0"],
        r"mmnet: error: device must be .*, got 'gpu0'",
    ),
]


@pytest.mark.parametrize(("argv", "phrase"), [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_bad_command_line_exits_with_an_error(
    argv: Callable[[Path], list[str]], phrase: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli_main(argv(tmp_path))
    except SystemExit as exc:  # argparse refuses the value itself
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(phrase, err), err


def test_output_files_are_checked_before_any_model_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: Any, **kw: Any) -> None:
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr("mmnet.zoo.create_matcher", refuse)
    assert cli_main(["match", ASTRONAUT, GRACE, "--kpts", "1,2", "--out", str(tmp_path / "x" / "m.png")]) == 2
    assert cli_main(["flow", ASTRONAUT, GRACE, "--npy", str(tmp_path / "x" / "f.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_input_table_size() -> None:
    """The issue asks for at least 60 kinds of bad input with their error type and message."""
    assert len(ROWS) + len(CLI_ROWS) >= 60
