"""Fault catalogue, data import: masks read in the wrong encoding, labels mirrored against their image, NaN
volumes, a catastrophic group_regex, a zip bomb, DEST around the working directory, a malformed dataset.json,
and ids that lose their non-ASCII letters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, cli
from segdeploy.data import open_dataset
from segdeploy.data.importers.base import ImportOptions
from segdeploy.data.importers.build import import_dataset
from segdeploy.errors import SegdeployError

REPO = Path(__file__).resolve().parents[2]


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _dataset_folder(root: Path, ids: list[str], meta: dict) -> Path:
    rng = np.random.default_rng(0)
    for i in ids:
        _png(root / "images" / f"{i}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
        _png(root / "masks" / f"{i}.png", (rng.random((8, 8)) > 0.5).astype(np.uint8))
    (root / "meta.json").write_text(json.dumps(meta))
    return root


# -- 9: a catastrophic group_regex ---------------------------------------------------------------------------------

EVIL = "^(a+)+$"  # Python's re backtracks 2**36 times on 36 a's and a '!'


def test_a_catastrophic_group_regex_finishes_at_once(tmp_path):
    ids = ["a" * 36 + "!"] + [f"a{k}" for k in range(5)]
    root = _dataset_folder(tmp_path / "evil", ids, {"classes": ["background", "x"], "group_regex": EVIL})
    # in a child process under a time limit: with a backtracking engine this never returns
    start = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "segdeploy", "data", "info", str(root), "--format", "json"],
                             capture_output=True, text=True, timeout=30, cwd=REPO,
                             env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"data info with group_regex {EVIL!r} ran for more than 30 s")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert "does not match 6 ids" in info["groups"]["error"] and EVIL in info["groups"]["error"]
    # splits (training) refuse it at once, in one line
    ds = open_dataset(root)
    t = time.monotonic()
    with pytest.raises(SegdeployError, match=r"does not match 6 ids") as error:
        ds.split("train")
    assert error.value.path == str(root / "meta.json") and EVIL in str(error.value)
    assert time.monotonic() - t < 1.0 and time.monotonic() - start < 30


def test_a_group_regex_the_linear_engine_cannot_run_is_refused_naming_meta_json(tmp_path):
    root = _dataset_folder(tmp_path / "backref", ["aa1", "bb2"], {"classes": ["background", "x"],
                                                                  "group_regex": r"^(\w)\1"})
    with pytest.raises(SegdeployError) as info:
        open_dataset(root)
    assert str(root / "meta.json") in str(info.value) and r"^(\w)\1" in str(info.value)
    assert "backreferences" in str(info.value)
    result = cli("data", "check", root)
    assert result.exit_code == 1 and "RE2" in result.output


# -- 6: mask encoding decided once per data set --------------------------------------------------------------------

def _index_masks(src: Path, n: int = 4, border: int | None = None) -> dict[str, np.ndarray]:
    """n image/mask pairs of a 3-class index data set; the last mask has a ``border`` value frame if given."""
    labels = {}
    for k in range(n):
        mask = np.zeros((16, 16), np.uint8)
        mask[2:8, 2:8], mask[9:14, 9:14] = 1, 2
        mask[(k + 3) % 16, :] = 1
        _png(src / "images" / f"case{k}.png", (40 + mask * 60).astype(np.uint8))
        if border is not None and k == n - 1:
            labels[f"case{k}"] = mask.copy()
            mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = border
        else:
            labels[f"case{k}"] = mask
        _png(src / "masks" / f"case{k}.png", mask)
    return labels


def test_a_255_border_in_one_index_mask_is_refused_naming_the_option(tmp_path):
    src = tmp_path / "src"
    labels = _index_masks(src, border=255)
    result = cli("data", "import", "masks", src, tmp_path / "out")
    assert_one_line_error(result, names="masks/case3.png", says="--ignore-value 255")
    assert "'ignore' label" in result.output and not (tmp_path / "out").exists()
    # with the option, every mask keeps its classes 1 and 2; the border is background
    report = import_dataset("masks", src, tmp_path / "out", ImportOptions(ignore_value=255))
    ds = open_dataset(tmp_path / "out")
    assert report.classes == ["background", "class_1", "class_2"] and ds.num_classes == 3
    for i, want in labels.items():
        got = ds.load_mask(i)
        if i == "case3":
            want = want.copy()
            want[0, :] = want[-1, :] = want[:, 0] = want[:, -1] = 0
        np.testing.assert_array_equal(got, want)
    assert any("--ignore-value" in n and "1 masks" in n for n in report.notes)


def test_masks_that_disagree_on_their_encoding_are_refused_naming_both_kinds(tmp_path):
    src = tmp_path / "src"
    _index_masks(src, n=3)
    binary = np.zeros((16, 16), np.uint8)
    binary[3:9, 3:9] = 255
    binary[10:12, 10:12] = 128  # an anti-aliased edge: not one lone ignore value
    _png(src / "images" / "extra.png", np.full((16, 16), 90, np.uint8))
    _png(src / "masks" / "extra.png", binary)
    with pytest.raises(SegdeployError) as info:
        import_dataset("masks", src, tmp_path / "out")
    text = str(info.value)
    assert "disagree" in text and "masks/extra.png" in text and "masks/case0.png" in text
    assert not (tmp_path / "out").exists()


# -- 7, 8: ACDC labels in another geometry, NaN volumes -------------------------------------------------------------

def _acdc_case(root: Path, case: str, img: np.ndarray, lab: np.ndarray, lab_affine=None, img_affine=None) -> None:
    import nibabel as nib

    pdir = root / "training" / case.split("_")[0]
    pdir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img, np.eye(4) if img_affine is None else img_affine), str(pdir / f"{case}.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4) if lab_affine is None else lab_affine), str(pdir / f"{case}_gt.nii.gz"))


def _acdc_volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.zeros((12, 10, 3), np.uint8)
    lab[1:5, 2:8], lab[6:11, 1:4] = 1, 3  # asymmetric along x: a mirrored label differs
    img = (rng.normal(100, 10, lab.shape) + lab * 80).astype(np.float32)
    return img, lab


def test_acdc_labels_in_another_voxel_order_are_reoriented_and_other_grids_refused(tmp_path):
    src = tmp_path / "ACDC"
    truth = {}
    for p in (1, 2, 3):
        img, lab = _acdc_volume(p)
        truth[p] = lab
        case = f"patient{p:03d}_frame01"
        if p == 1:
            _acdc_case(src, case, img, lab)
        elif p == 2:  # same grid, x stored reversed: affine diag(-1, 1, 1, 1) moved to the far edge
            flip = np.diag([-1.0, 1, 1, 1])
            flip[0, 3] = lab.shape[0] - 1
            _acdc_case(src, case, img, np.ascontiguousarray(lab[::-1]), lab_affine=flip)
        else:  # affine diag(-1, 1, 1, 1) alone: the label covers another region of space
            _acdc_case(src, case, img, lab, lab_affine=np.diag([-1.0, 1, 1, 1]))
    report = import_dataset("acdc", src, tmp_path / "out", ImportOptions(dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    for p in (1, 2):
        for k in range(3):
            np.testing.assert_array_equal(ds.load_mask(f"patient{p:03d}_frame01_slice_{k:03d}"), truth[p][:, :, k].T)
    assert not any(i.startswith("patient003") for i in ds.ids)
    (refused,) = report.skipped
    assert "patient003_frame01" in refused.path and "geometry" in refused.reason and "not resampled" in refused.reason
    assert any("patient002_frame01_gt.nii.gz" in n and "reoriented" in n for n in report.notes)


def test_an_all_nan_volume_is_refused_naming_its_case(tmp_path):
    src = tmp_path / "ACDC"
    for p in (1, 2):
        img, lab = _acdc_volume(p)
        if p == 2:
            img[:] = np.nan
        _acdc_case(src, f"patient{p:03d}_frame01", img, lab)
    report = import_dataset("acdc", src, tmp_path / "out", ImportOptions(dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    assert ds.ids == [f"patient001_frame01_slice_{k:03d}" for k in range(3)]
    (refused,) = report.skipped
    assert "patient002_frame01" in refused.reason and "not finite" in refused.reason and "all " in refused.reason


# -- poor paths ------------------------------------------------------------------------------------------------------

def test_non_ascii_ids_keep_their_letters_and_collisions_name_both_sources(tmp_path):
    src = tmp_path / "src"
    names = ["ä1", "ö1", "ünï", "a\u0308x"]  # the last in NFD, as macOS file systems store it
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    for k, n in enumerate(names + ["\u00e4x"]):  # "äx" in NFC: the same id as "a\u0308x"
        _png(src / "images" / f"{n}.png", np.full((8, 8), 40 + 30 * k, np.uint8))
        _png(src / "masks" / f"{n}.png", mask)
    report = import_dataset("masks", src, tmp_path / "out", ImportOptions(dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    assert sorted(ds.ids) == sorted(["ä1", "ö1", "ünï", "\u00e4x"])
    (clash,) = report.skipped
    assert "already taken" in clash.reason and {Path(clash.path).name, Path(clash.reason.split("by ")[-1]
                                                                             .rstrip(".")).name} == {
        "a\u0308x.png", "\u00e4x.png"}


@pytest.mark.parametrize("labels, says", [("background, liver", "is str"), ([0, 1], "is list"),
                                          ({}, "is an empty object")])
def test_nnunet_labels_of_the_wrong_type_say_what_is_expected(tmp_path, labels, says):
    root = tmp_path / "Dataset001_X"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "channel_names": {"0": "CT"},
                                                   "file_ending": ".nii.gz"}))
    result = cli("data", "import", "nnunet", root, tmp_path / "out")
    assert_one_line_error(result, names=root / "dataset.json", says=says)
    assert "expected an object mapping class name -> label value" in " ".join(result.output.split())


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/images/a.png", b"\x89PNG")
        zf.writestr("data/masks/zeros.png", bytes(16 << 20))  # 16 MiB of zeros: about 1000x
    unpacked = []
    monkeypatch.setattr(zipfile.ZipFile, "extractall", lambda self, *a, **k: unpacked.append(a))
    result = cli("data", "import", "masks", bomb, tmp_path / "out")
    assert_one_line_error(result, names=bomb, says="data/masks/zeros.png")
    assert "--max-ratio 100" in " ".join(result.output.split()) and not unpacked
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bomb.zip"]
    # the total declared size is capped too (here below the archive's 16 MB), naming the largest member
    with pytest.raises(SegdeployError, match=r"over --max-unpacked-gb 0.01 \(largest member 'data/masks/zeros"):
        import_dataset("masks", bomb, tmp_path / "out", ImportOptions(max_ratio=10_000, max_unpacked_gb=0.01))
    assert not unpacked


@pytest.mark.parametrize("dest", [".", "..", "{cwd}"])
def test_dest_around_the_working_directory_is_refused_even_with_force(tmp_path, monkeypatch, dest):
    src = tmp_path / "src"
    _index_masks(src, n=2)
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    result = cli("data", "import", "masks", src, dest.format(cwd=cwd), "--force")
    assert_one_line_error(result, names=dest.format(cwd=cwd), says="working directory")
    assert (cwd / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["src", "work"]
