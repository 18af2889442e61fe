"""Dataset loaders on the shared data (PF-WILLOW dev, CUB) and on PF-PASCAL / SPair-71k fixtures built in tmp_path
from the real split and annotation files (tiny synthetic JPEGs stand in for the images)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmnet.data import CUB, PFPascal, PFWillow, SPair, load_dataset
from mmnet.data.pfpascal import PASCAL_CLASSES
from mmnet.errors import DatasetError, InputError
from mmnet.eval import RescaleMatcher, evaluate

pytestmark = pytest.mark.data

CUB_LISTS = {
    "test_pairs_cub_cls001-050_any_seed0.csv": 5000,
    "test_pairs_cub_cls001-050_sameclass_seed0.csv": 5000,
    "trn_pairs_cub_cls001-050_sameclass_seed0.csv": 10000,
}
SPAIR_PAIR = "000250-2008_008607-2009_002388:aeroplane"


def assert_in_image(rec):
    for kps, (h, w) in ((rec.src_kps, rec.src_size), (rec.tgt_kps, rec.tgt_size)):
        assert kps.shape == (len(rec.valid), 2) and kps.dtype == np.float32
        assert np.isnan(kps[~rec.valid]).all()  # invalid rows are NaN, never -1
        good = kps[rec.valid]
        assert (good >= 0).all() and (good[:, 0] <= w).all() and (good[:, 1] <= h).all()


def save_jpeg(path: Path, width: int, height: int) -> None:
    """A small JPEG whose left half is white: a mirror shows up in the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = 255
    Image.fromarray(pixels).save(path, quality=90)


# --- PF-WILLOW (real) ----------------------------------------------------------------------------------------


def test_pf_willow_reads_every_pair(data_root):
    ds = load_dataset("pf-willow", data_root / "pf-willow-dev")
    recs = list(ds)
    assert len(recs) == 270 and ds.default_threshold == "bbox-kp"
    assert {r.category for r in recs} == {"car(G)", "car(M)", "car(S)"}
    assert sum(r.category == "car(S)" for r in recs) == 90
    for rec in recs:
        assert rec.valid.all() and rec.n_valid == 10 and rec.tgt_bbox is None and max(rec.tgt_size) == 300
        assert_in_image(rec)


def test_pf_willow_from_mat_files_matches_the_csv(data_root):
    from_csv = {(r.src_path.name, r.tgt_path.name, r.category): r for r in PFWillow(data_root / "pf-willow-dev")}
    from_mat = PFWillow(data_root / "pf-willow-dev" / "PF-WILLOW")  # no csv there: every ordered pair per class
    assert from_mat.pairs_file is None and len(from_mat) == len(from_csv)
    for rec in from_mat:
        ref = from_csv[(rec.src_path.name, rec.tgt_path.name, rec.category)]
        np.testing.assert_allclose(rec.src_kps, ref.src_kps, atol=1e-4)
        np.testing.assert_allclose(rec.tgt_kps, ref.tgt_kps, atol=1e-4)


def test_pf_willow_missing_files_are_named(tmp_path, data_root):
    with pytest.raises(DatasetError, match=r"test_pairs\.csv.*proposalflow"):
        PFWillow(tmp_path)
    (tmp_path / "test_pairs.csv").write_text((data_root / "pf-willow-dev" / "test_pairs.csv").read_text())
    with pytest.raises(DatasetError, match=r"image 'PF-WILLOW/car\(G\)/Cars_006a\.png' not found \(expected at /"):
        PFWillow(tmp_path)
    with pytest.raises(InputError, match="only a test split"):
        PFWillow(data_root / "pf-willow-dev", split="trn")


# --- CUB (real) ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CUB_LISTS))
def test_cub_reads_every_listed_pair(data_root, name):
    root = data_root / "cub-200-2011-cls001-050"
    ds = load_dataset("cub", root, pairs=root / "pairs" / name)
    assert len(ds) == CUB_LISTS[name]
    rows = list(csv.DictReader((root / "pairs" / name).read_text().splitlines()))
    for rec, row in zip(ds, rows, strict=True):
        assert rec.n_valid == len(row["kp_ids"].split(";")) > 0
        assert rec.tgt_bbox[2] - rec.tgt_bbox[0] == float(row["trg_bbox"].split(";")[2])
        assert_in_image(rec)
    assert ("sameclass" in name) == all(r.category != "cross-species" for r in ds)


def test_cub_pair_list_found_by_name_and_mirror_swaps_left_and_right(data_root):
    ds = CUB(data_root / "cub-200-2011-cls001-050", pairs="test_pairs_cub_cls001-050_sameclass_seed0.csv")
    rec = next(r for r in ds if r.valid[6] and not r.valid[10])  # left eye visible, right eye not
    mirrored = ds.mirror(rec)
    w = rec.tgt_size[1]
    assert mirrored.valid[10] and not mirrored.valid[6]
    np.testing.assert_allclose(mirrored.tgt_kps[10], [w - 1 - rec.tgt_kps[6, 0], rec.tgt_kps[6, 1]])
    np.testing.assert_allclose(mirrored.tgt_bbox[[0, 2]], w - 1 - rec.tgt_bbox[[2, 0]])
    np.testing.assert_allclose(ds.mirror(mirrored).tgt_kps, rec.tgt_kps, equal_nan=True)


def test_cub_sampling_is_seeded_and_respects_split_and_class(data_root):
    root = data_root / "cub-200-2011-cls001-050"
    test = CUB(root, split="test", n_pairs=300, seed=3)
    again = CUB(root, split="test", n_pairs=300, seed=3)
    assert [(r.src_path, r.tgt_path) for r in test] == [(r.src_path, r.tgt_path) for r in again]
    train = CUB(root, split="train", n_pairs=300, seed=3, same_class=False)
    test_images = {p for r in test for p in (r.src_path, r.tgt_path)}
    assert test_images.isdisjoint({p for r in train for p in (r.src_path, r.tgt_path)})
    assert all(r.src_path.parent == r.tgt_path.parent for r in test)
    assert any(r.category == "cross-species" for r in train)
    assert len({(r.src_path, r.tgt_path) for r in train}) == 300
    for rec in list(test)[:50]:
        assert rec.n_valid > 0 and rec.src_path != rec.tgt_path
        assert_in_image(rec)


def test_cub_missing_annotation_is_named(tmp_path, data_root):
    src = data_root / "cub-200-2011-cls001-050" / "CUB_200_2011"
    root = tmp_path / "CUB_200_2011"
    root.mkdir()
    (root / "images").symlink_to(src / "images")
    for name in ("images.txt", "bounding_boxes.txt", "train_test_split.txt", "image_class_labels.txt"):
        shutil.copy(src / name, root / name)
    with pytest.raises(DatasetError, match=r"parts/part_locs\.txt.*expected at.*vision\.caltech\.edu"):
        CUB(tmp_path, n_pairs=5)
    with pytest.raises(DatasetError, match=r"pair list 'nope\.csv'"):
        CUB(tmp_path, pairs="nope.csv")


# --- PF-PASCAL (fixtures from the real split files) ---------------------------------------------------------


def ncnet_rows(data_root: Path, split: str, n: int) -> tuple[list[str], list[list[str]]]:
    """Header and the first `n` rows of the NCNet split csv whose images are not used twice."""
    with open(data_root / "pf-pascal-splits" / "splits_ncnet" / f"{split}_pairs.csv", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    chosen, seen = [], set()
    for row in rows:
        if not seen & {row[0], row[1]}:
            chosen.append(row)
            seen |= {row[0], row[1]}
        if len(chosen) == n:
            break
    return header, chosen


def kps_of(row: list[str], side: int) -> np.ndarray:
    xs, ys = row[3 + 2 * side], row[4 + 2 * side]
    return np.stack([np.array(xs.split(";"), float), np.array(ys.split(";"), float)], 1)


def image_size_for(kps: np.ndarray) -> tuple[int, int]:
    return int(kps[:, 0].max()) + 25, int(kps[:, 1].max()) + 15


@pytest.fixture()
def pascal_hpf(tmp_path, data_root) -> tuple[Path, list[list[str]], list[list[str]]]:
    """PF-PASCAL/{test,trn}_pairs.csv + JPEGImages + Annotations/<class>/<img>.mat built from the split files."""
    from scipy.io import savemat

    root = tmp_path / "PF-PASCAL"
    _, test_rows = ncnet_rows(data_root, "test", 4)
    _, trn_rows = ncnet_rows(data_root, "train", 6)
    for row in test_rows:
        cls = PASCAL_CLASSES[int(row[2]) - 1]
        for side, extra in ((0, [np.nan, np.nan]), (1, [5.0, 5.0])):  # row 1 visible in the target only
            kps = np.insert(kps_of(row, side), 1, extra, axis=0)
            name = Path(row[side]).name
            save_jpeg(root / "JPEGImages" / name, *image_size_for(kps_of(row, side)))
            box = np.r_[np.nanmin(kps, 0), np.nanmax(kps, 0)]
            (root / "Annotations" / cls).mkdir(parents=True, exist_ok=True)
            savemat(root / "Annotations" / cls / f"{Path(name).stem}.mat", {"kps": kps, "bbox": box[None]})
    rng = np.random.default_rng(0)
    for row in trn_rows:
        for entry in row[:2]:
            name, cls = Path(entry).name, PASCAL_CLASSES[int(row[2]) - 1]
            save_jpeg(root / "JPEGImages" / name, 120, 80)
            kps = rng.uniform([0, 0], [119, 79], size=(5, 2))
            (root / "Annotations" / cls).mkdir(parents=True, exist_ok=True)
            savemat(root / "Annotations" / cls / f"{Path(name).stem}.mat", {"kps": kps, "bbox": [[1, 2, 100, 70]]})
    for name, rows, extra in (("test", test_rows, []), ("trn", trn_rows, ["flip"])):
        with open(root / f"{name}_pairs.csv", "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["source_image", "target_image", "class", *extra])
            out.writerows(
                [f"JPEGImages/{Path(r[0]).name}", f"JPEGImages/{Path(r[1]).name}", *r[2 : 3 + len(extra)]] for r in rows
            )
    return root, test_rows, trn_rows


def test_pf_pascal_hpf_layout(pascal_hpf):
    root, test_rows, _ = pascal_hpf
    ds = load_dataset("pf-pascal", root.parent)  # the parent of PF-PASCAL/ works too
    assert len(ds) == 4 and ds.root == root and ds.default_threshold == "img"
    for rec, row in zip(ds, test_rows, strict=True):
        n = len(kps_of(row, 0)) + 1
        assert rec.valid.tolist() == [True, False] + [True] * (n - 2)
        np.testing.assert_allclose(rec.src_kps[rec.valid], kps_of(row, 0), rtol=1e-6)
        np.testing.assert_allclose(rec.tgt_kps[rec.valid], kps_of(row, 1), rtol=1e-6)
        np.testing.assert_allclose(rec.tgt_bbox[:2], np.minimum(5.0, kps_of(row, 1).min(0)), rtol=1e-6)
        assert rec.category == PASCAL_CLASSES[int(row[2]) - 1] and not rec.flip
        assert rec.tgt_size == image_size_for(kps_of(row, 1))[::-1]
        assert_in_image(rec)


def test_pf_pascal_training_rows_honour_flip(pascal_hpf):
    root, _, trn_rows = pascal_hpf
    ds = PFPascal(root, split="train")
    assert [r.flip for r in ds] == [row[3] == "1" for row in trn_rows]
    i = next(i for i, r in enumerate(ds) if r.flip)
    rec = ds[i]
    src, _, shown = ds.load(i)
    assert not shown.flip and src.size == (120, 80)
    assert np.asarray(src)[:, :50].mean() < 10 and np.asarray(src)[:, 70:].mean() > 245  # white half moved right
    np.testing.assert_allclose(shown.src_kps[:, 0], 119 - rec.src_kps[:, 0], rtol=1e-6)
    np.testing.assert_allclose(shown.tgt_kps[:, 1], rec.tgt_kps[:, 1])
    np.testing.assert_allclose(shown.tgt_bbox, [19, 2, 118, 70])
    j = next(j for j, r in enumerate(ds) if not r.flip)
    assert np.asarray(ds.load_images(j)[0])[:, :50].mean() > 245


def test_pf_pascal_missing_annotation_is_named(pascal_hpf):
    root, test_rows, _ = pascal_hpf
    cls, stem = PASCAL_CLASSES[int(test_rows[2][2]) - 1], Path(test_rows[2][1]).stem
    (root / "Annotations" / cls / f"{stem}.mat").unlink()
    with pytest.raises(DatasetError, match=rf"annotation 'Annotations/{cls}/{stem}\.mat' not found"):
        PFPascal(root)


def test_pf_pascal_ncnet_layout(tmp_path, data_root):
    header, rows = ncnet_rows(data_root, "test", 5)
    root = tmp_path / "pf-pascal"
    (root / "image_pairs").mkdir(parents=True)
    with open(root / "image_pairs" / "test_pairs.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    for row in rows:
        for side in (0, 1):
            save_jpeg(root / row[side], *image_size_for(kps_of(row, side)))
    ds = PFPascal(root, split="test")
    assert len(ds) == 5 and ds.pairs_file == root / "image_pairs" / "test_pairs.csv"
    for rec, row in zip(ds, rows, strict=True):
        assert rec.valid.all() and rec.tgt_bbox is None
        np.testing.assert_allclose(rec.tgt_kps, kps_of(row, 1), rtol=1e-6)
        assert_in_image(rec)
    (root / rows[3][1]).unlink()
    with pytest.raises(DatasetError, match=rf"image '{rows[3][1]}' not found \(expected at .*proposalflow"):
        PFPascal(root)
    with pytest.raises(DatasetError, match=r"'val_pairs\.csv' not found"):
        PFPascal(root, split="val")
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("pascal", root)


# --- SPair-71k (fixture from the real Layout and annotation sample) -----------------------------------------


@pytest.fixture()
def spair(tmp_path, data_root) -> Path:
    """SPair-71k/ with the sample pair, its mirror image pair (harder flags) and the real Layout folder."""
    sample = data_root / "spair-71k-annotations-sample"
    root = tmp_path / "SPair-71k"
    shutil.copytree(sample / "Layout", root / "Layout")
    ann = json.loads((sample / "PairAnnotation" / "test" / f"{SPAIR_PAIR}.json").read_text())
    swapped = {
        **ann,
        "src_imname": ann["trg_imname"],
        "trg_imname": ann["src_imname"],
        "src_imsize": ann["trg_imsize"],
        "trg_imsize": ann["src_imsize"],
        "src_bndbox": ann["trg_bndbox"],
        "trg_bndbox": ann["src_bndbox"],
        "src_kps": ann["trg_kps"],
        "trg_kps": ann["src_kps"],
        "viewpoint_variation": 2,
        "occlusion": 1,
    }
    names = [SPAIR_PAIR, "900000-2009_002388-2008_008607:aeroplane"]
    (root / "PairAnnotation" / "test").mkdir(parents=True)
    for name, content in zip(names, (ann, swapped), strict=True):
        (root / "PairAnnotation" / "test" / f"{name}.json").write_text(json.dumps(content))
    for image, size in ((ann["src_imname"], ann["src_imsize"]), (ann["trg_imname"], ann["trg_imsize"])):
        save_jpeg(root / "JPEGImages" / "aeroplane" / image, size[0], size[1])
    (root / "fixture_test.txt").write_text("\n".join(names) + "\n")
    return root


def test_spair_reads_pairs_and_difficulty_flags(spair, data_root):
    ann = json.loads(
        (data_root / "spair-71k-annotations-sample" / "PairAnnotation" / "test" / f"{SPAIR_PAIR}.json").read_text()
    )
    ds = load_dataset("spair", spair.parent / "SPair-71k", pairs="fixture_test.txt")
    assert len(ds) == 2 and ds.default_threshold == "bbox"
    rec, swapped = ds[0], ds[1]
    np.testing.assert_array_equal(rec.src_kps, ann["src_kps"])
    np.testing.assert_array_equal(rec.tgt_bbox, ann["trg_bndbox"])
    assert rec.src_size == (500, 375) and rec.tgt_size == (333, 500)  # json sizes are [W, H, C]
    assert rec.valid.all() and rec.kp_ids.tolist() == [int(k) for k in ann["kps_ids"]]
    assert rec.flags == {"viewpoint_variation": 0, "scale_variation": 0, "truncation": 0, "occlusion": 0, "mirror": 0}
    assert swapped.flags["occlusion"] == 1 and swapped.flags["viewpoint_variation"] == 2
    assert rec.category == "aeroplane" and rec.src_path.name == "2008_008607.jpg"
    assert_in_image(rec)
    assert_in_image(swapped)
    result = evaluate(RescaleMatcher(), ds, progress=False)
    assert set(result.by_flag()["occlusion"]) == {"0", "1"}
    assert result.by_flag()["viewpoint_variation"]["2"]["n_pairs"] == 1


def test_spair_real_split_list_names_the_missing_annotation(spair):
    with pytest.raises(
        DatasetError,
        match=r"pair annotation 'PairAnnotation/test/000001-2008_002719-2008_004100:"
        r"aeroplane\.json' not found.*cvlab\.postech\.ac\.kr",
    ):
        SPair(spair, split="test")
    with pytest.raises(DatasetError, match=r"split list 'Layout/large/val\.txt'"):
        shutil.rmtree(spair / "Layout" / "large")
        SPair(spair, split="val")
    with pytest.raises(InputError, match="unknown split"):
        SPair(spair, split="dev")
