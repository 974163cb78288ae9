"""`segdeploy data import`: each format on fixtures written here in the original layout and encoding, checked
against the labels they were made from (pixel-exact, or within a stated tolerance for JPEG sources)."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from segdeploy.data import open_dataset
from segdeploy.commands.data import app
from segdeploy.data.importers.base import ImportOptions
from segdeploy.data.importers.build import import_dataset
from segdeploy.errors import SegdeployError

RNG = np.random.default_rng(0)


def _blob_mask(h: int, w: int, seed: int, labels=(1,)) -> np.ndarray:
    """Class-index mask with one ellipse per label (later labels drawn over earlier ones)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), np.uint8)
    for lab in labels:
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = lab
    return mask


def _image_for(mask: np.ndarray, seed: int, rgb: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 90, (*mask.shape, 3 if rgb else 1)).astype(np.int32)
    base += (mask[..., None] * 60).astype(np.int32)
    out = np.clip(base, 0, 255).astype(np.uint8)
    return out if rgb else out[..., 0]


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _edge_band(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels within ``width`` of a boundary between two labels."""
    band = np.zeros(mask.shape, bool)
    for v in np.unique(mask):
        region = mask == v
        band |= ndimage.binary_dilation(region, iterations=width) & ~ndimage.binary_erosion(region, iterations=width)
    return band


def _masks_of(root: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(root)
    return {i: ds.load_mask(i) for i in ds.ids}


# -- masks -------------------------------------------------------------------------------------------------------

def test_kvasir_zip_with_jpeg_masks_thresholds_compression_noise(tmp_path):
    """Kvasir-SEG as downloaded: a zip with a nested folder, JPEG images and JPEG 0/255 masks."""
    truth = {}
    zpath = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(6):
            m = _blob_mask(90, 120, i)
            truth[f"cju{i}"] = m
            for sub, arr in (("images", _image_for(m, i)), ("masks", (m * 255).astype(np.uint8))):
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG", quality=75)
                zf.writestr(f"Kvasir-SEG/{sub}/cju{i}.jpg", buf.getvalue())
        zf.writestr("Kvasir-SEG/kavsir_bboxes.json", "{}")
    report = import_dataset("masks", zpath, tmp_path / "kvasir")
    got = _masks_of(tmp_path / "kvasir")
    assert sorted(got) == sorted(truth) and report.classes == ["background", "foreground"]
    for i, m in truth.items():
        jpeg = np.asarray(Image.open(io.BytesIO(_jpeg_bytes((m * 255).astype(np.uint8), 75))))
        assert len(np.unique(jpeg)) > 2  # the source really is noisy, not 0/255
        wrong = got[i] != m
        # stated tolerance: thresholding recovers the labels except at most 0.5% of pixels, all on an edge
        assert wrong.mean() <= 0.005 and not (wrong & ~_edge_band(m)).any()
    assert report.duplicates is not None and report.duplicates["exact_duplicates"] == 0
    images = sorted((tmp_path / "kvasir" / "images").iterdir())
    assert [p.suffix for p in images] == [".jpg"] * 6  # JPEG sources are copied, not re-encoded


def _jpeg_bytes(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_isic_layout_suffix_pairing_and_unreadable_files_are_listed(tmp_path):
    src = tmp_path / "isic"
    truth = {}
    for i in range(4):
        m = _blob_mask(64, 80, 10 + i)
        truth[f"ISIC_000000{i}"] = m
        _save(src / "ISIC2018_Task1-2_Training_Input" / f"ISIC_000000{i}.jpg", _image_for(m, i), quality=95)
        _save(src / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_000000{i}_segmentation.png", m * 255)
    _save(src / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000009.jpg", _image_for(truth["ISIC_0000000"], 9))
    (src / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000010.jpg").write_bytes(b"not a jpeg")
    _save(src / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000010_segmentation.png", truth["ISIC_0000000"])
    (src / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC")
    report = import_dataset("masks", src, tmp_path / "out")
    got = _masks_of(tmp_path / "out")
    assert set(got) == set(truth)
    assert all(np.array_equal(got[i], truth[i]) for i in truth)  # PNG 0/255 masks: pixel-exact
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert "no mask" in reasons["ISIC_0000009.jpg"]
    assert "ISIC_0000010.jpg" in reasons and "cannot identify" in reasons["ISIC_0000010.jpg"].lower()
    saved = json.loads((tmp_path / "out" / "import.json").read_text())
    assert {Path(s["path"]).name for s in saved["skipped"]} == set(reasons)


def test_busi_several_masks_per_image_are_merged(tmp_path):
    src = tmp_path / "Dataset_BUSI_with_GT" / "benign"
    a, b = _blob_mask(70, 70, 1), _blob_mask(70, 70, 2)
    _save(src / "benign (1).png", _image_for(a | b, 1, rgb=False))
    _save(src / "benign (1)_mask.png", a * 255)
    _save(src / "benign (1)_mask_1.png", b * 255)
    _save(src / "benign (2).png", _image_for(a, 2, rgb=False))
    _save(src / "benign (2)_mask.png", a * 255)
    import_dataset("masks", tmp_path / "Dataset_BUSI_with_GT", tmp_path / "busi", ImportOptions(dedupe="off"))
    got = _masks_of(tmp_path / "busi")
    assert sorted(got) == ["benign_1", "benign_2"]
    assert np.array_equal(got["benign_1"], (a | b).astype(np.uint8)) and np.array_equal(got["benign_2"], a)


def test_palette_masks_png_exact_and_jpeg_within_tolerance(tmp_path):
    colours = {1: (0, 255, 0), 2: (255, 0, 0)}
    palette = "0,255,0=non_neoplastic;255,0,0=neoplastic"
    truth = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpeg")):
        for i in range(3):
            m = _blob_mask(96, 128, 20 + i, labels=(1, 2))
            rgb = np.zeros((*m.shape, 3), np.uint8)
            for lab, c in colours.items():
                rgb[m == lab] = c
            sid = f"{ext}{i}"
            truth[sid] = m
            _save(tmp_path / "src" / "train" / f"{sid}.jpeg", _image_for(m, i), quality=95)
            _save(tmp_path / "src" / "train_gt" / f"{sid}.{ext}", rgb, **({"quality": 90} if fmt == "JPEG" else {}))
    report = import_dataset("masks", tmp_path / "src", tmp_path / "out", ImportOptions(palette=palette))
    assert report.classes == ["background", "non_neoplastic", "neoplastic"]
    got = _masks_of(tmp_path / "out")
    for sid, m in truth.items():
        if sid.startswith("png"):
            assert np.array_equal(got[sid], m)
        else:  # stated tolerance: nearest palette colour, at most 1% of pixels differ, all on an edge
            wrong = got[sid] != m
            assert wrong.mean() <= 0.01 and not (wrong & ~_edge_band(m)).any()
    # a palette without the green class: the file is refused with its reason, not silently relabelled
    report = import_dataset("masks", tmp_path / "src", tmp_path / "out2", ImportOptions(palette="255,0,0=neo"))
    reasons = [s.reason for s in report.skipped]
    assert reasons and all("palette" in r for r in reasons)


def test_class_index_png_and_float_tiff_images(tmp_path):
    src = tmp_path / "src"
    truth = {}
    for i in range(3):
        m = _blob_mask(40, 50, 30 + i, labels=(1, 2, 3))
        truth[f"c{i}"] = m
        img = (m.astype(np.float32) * 100.0 + 5.0)[..., None].repeat(3, axis=2)  # RGB float: tifffile only
        import tifffile

        (src / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(src / "images" / f"c{i}.tif", img, photometric="rgb")
        _save(src / "masks" / f"c{i}.png", m)
    report = import_dataset("masks", src, tmp_path / "out", ImportOptions(classes=["bg", "a", "b", "c"]))
    ds = open_dataset(tmp_path / "out")
    assert ds.classes == ["bg", "a", "b", "c"] and report.pairs == 3
    for i, m in truth.items():
        s = ds.load(i)
        assert np.array_equal(s.mask, m)
        # float intensities -> 8 bits by the 0.5/99.5 percentiles: the ordering of the labels' intensities stays
        assert s.image[..., 0][m == 3].min() > s.image[..., 0][m == 0].max()


def test_drive_layout_needs_explicit_folders_and_pair_regex(tmp_path):
    src = tmp_path / "DRIVE" / "training"
    truth = {}
    for n in (21, 22):
        m = _blob_mask(60, 56, n)
        truth[str(n)] = m
        _save(src / "images" / f"{n}_training.tif", _image_for(m, n))
        _save(src / "1st_manual" / f"{n}_manual1.gif", m * 255)
        _save(src / "mask" / f"{n}_training_mask.gif", np.full(m.shape, 255, np.uint8))  # field of view, no label
    import_dataset("masks", tmp_path / "DRIVE", tmp_path / "drive",
                   ImportOptions(images="training/images", masks="training/1st_manual", pair_regex=r"^(\d+)_"))
    got = _masks_of(tmp_path / "drive")
    assert set(got) == {"21", "22"} and all(np.array_equal(got[k], truth[k]) for k in truth)


# -- archives, atomicity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["../evil.png", "/tmp/evil_abs.png", "data/../../evil.png", "link"])
def test_zip_entries_escaping_the_destination_are_refused(tmp_path, entry):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ds/images/a.png", _png(np.zeros((4, 4), np.uint8)))
        zf.writestr("ds/masks/a.png", _png(np.zeros((4, 4), np.uint8)))
        if entry == "link":
            info = zipfile.ZipInfo("ds/masks/b.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(entry, b"x")
    with pytest.raises(SegdeployError, match="refused"):
        import_dataset("masks", zpath, tmp_path / "work" / "out")
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil_abs.png").exists()
    assert not (tmp_path / "work" / "out").exists()
    assert [p.name for p in (tmp_path / "work").iterdir()] == []  # the temporary folder is gone too


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_existing_destination_needs_force_and_is_replaced_whole(tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        m = _blob_mask(30, 30, i)
        _save(src / "images" / f"a{i}.png", _image_for(m, i))
        _save(src / "masks" / f"a{i}.png", m)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("user data")
    with pytest.raises(SegdeployError, match="--force"):
        import_dataset("masks", src, dest)
    assert (dest / "keep.txt").read_text() == "user data"
    import_dataset("masks", src, dest, ImportOptions(force=True))
    assert not (dest / "keep.txt").exists() and len(open_dataset(dest)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]  # no temporary folder left


def test_cli_import_prints_summary_and_check(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        m = _blob_mask(30, 40, i)
        _save(src / "images" / f"a{i}.png", _image_for(m, i))
        _save(src / "masks" / f"a{i}.png", m * 255)
    result = CliRunner().invoke(app, ["import", "masks", str(src), str(tmp_path / "out"), "--resize-longer", "20"])
    assert result.exit_code == 0, result.output
    assert "3 pairs" in result.output and "data check: OK" in result.output
    assert open_dataset(tmp_path / "out").load("a0").mask.shape == (15, 20)
    again = CliRunner().invoke(app, ["import", "masks", str(src), str(tmp_path / "out")])
    assert again.exit_code != 0 and "--force" in str(again.exception or again.output)


def test_ph2_per_case_folders_with_roi_files_listed(tmp_path):
    root = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    truth = {}
    for n in (2, 3):
        case = root / f"IMD00{n}"
        m = _blob_mask(48, 64, n)
        truth[f"IMD00{n}"] = m
        _save(case / f"IMD00{n}_Dermoscopic_Image" / f"IMD00{n}.bmp", _image_for(m, n))
        _save(case / f"IMD00{n}_lesion" / f"IMD00{n}_lesion.bmp", m * 255)
        _save(case / f"IMD00{n}_roi" / f"IMD00{n}_R1_Label4.bmp", m * 255)
    (tmp_path / "PH2Dataset" / "PH2_dataset.txt").write_text("|| Name ||")
    report = import_dataset("masks", tmp_path / "PH2Dataset", tmp_path / "ph2")
    got = _masks_of(tmp_path / "ph2")
    assert sorted(got) == sorted(truth) and all(np.array_equal(got[k], truth[k]) for k in truth)
    assert sorted(Path(s.path).name for s in report.skipped) == ["IMD002_R1_Label4.bmp", "IMD003_R1_Label4.bmp"]


def test_destination_inside_the_source_is_refused(tmp_path):
    m = _blob_mask(20, 20, 0)
    _save(tmp_path / "src" / "images" / "a.png", _image_for(m, 0))
    _save(tmp_path / "src" / "masks" / "a.png", m)
    for dest in (tmp_path / "src" / "out", tmp_path):
        with pytest.raises(SegdeployError, match="contain one another"):
            import_dataset("masks", tmp_path / "src", dest, ImportOptions(force=True))
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["images", "masks"]
