"""Round trips on the real data in ../shared/datasets: a few ACDC patients stacked back into per-patient NIfTI
volumes in ACDC's layout, and NeoPolyp masks written as RGB palette JPEGs (as the challenge ships them), re-import
to the same images and labels."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segdeploy.data import open_dataset
from segdeploy.data.importers.base import ImportOptions
from segdeploy.data.importers.build import import_dataset

nib = pytest.importorskip("nibabel")
PATIENTS = ("patient001", "patient002", "patient074")


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a boundary between two labels."""
    band = np.zeros(mask.shape, bool)
    for v in np.unique(mask):
        region = mask == v
        band |= ndimage.binary_dilation(region, iterations=width) & ~ndimage.binary_erosion(region, iterations=width)
    return band


def test_acdc_slices_stacked_into_nifti_reimport_equal(shared_datasets, tmp_path):
    src = open_dataset(shared_datasets / "acdc")
    frames: dict[str, dict[int, str]] = {}
    for i in src.ids:
        m = re.match(r"^(patient\d+_frame\d+)_slice_(\d+)$", i)
        if m and m.group(1).startswith(PATIENTS):
            frames.setdefault(m.group(1), {})[int(m.group(2))] = i
    assert len(frames) == 2 * len(PATIENTS)
    for frame, slices in frames.items():
        order = [slices[k] for k in sorted(slices)]
        vol = np.stack([src.load(i).image[..., 0].T for i in order], axis=-1).astype(np.int16)  # (x, y, z)
        lab = np.stack([src.load_mask(i).T for i in order], axis=-1)
        pdir = tmp_path / "ACDC" / "training" / frame.split("_")[0]
        pdir.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(pdir / f"{frame}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(pdir / f"{frame}_gt.nii.gz"))
    report = import_dataset("acdc", tmp_path / "ACDC", tmp_path / "out", ImportOptions(percentiles=(0, 100)))
    out = open_dataset(tmp_path / "out")
    assert out.classes == src.classes and report.groups == len(PATIENTS) and not report.skipped
    n = 0
    for frame, slices in frames.items():
        order = [slices[k] for k in sorted(slices)]
        stack = np.stack([src.load(i).image[..., 0] for i in order]).astype(np.float64)
        lo, hi = stack.min(), stack.max()  # ACDC's slices were min-max scaled per volume: 0 and 255
        for k, orig in enumerate(order):
            a, b = src.load(orig), out.load(f"{frame}_slice_{k:03d}")
            expected = np.clip(np.rint((a.image[..., 0] - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
            assert np.array_equal(b.image[..., 0], expected) and np.array_equal(b.mask, a.mask)
            n += 1
    assert n == report.pairs
    # patient074 and patient076 of this ACDC copy are pixel-identical; only 074 is here, so no exact duplicate
    assert report.duplicates["exact_duplicates"] == 0


def test_neopolyp_palette_jpeg_masks_reimport_within_tolerance(shared_datasets, tmp_path):
    src = open_dataset(shared_datasets / "neopolyp")
    ids = src.ids[:40]
    root = tmp_path / "bkai-igh-neopolyp"
    (root / "train" / "train").mkdir(parents=True)
    (root / "train_gt" / "train_gt").mkdir(parents=True)
    for i in ids:
        m = src.load_mask(i)
        rgb = np.zeros((*m.shape, 3), np.uint8)
        rgb[m == 1], rgb[m == 2] = (0, 255, 0), (255, 0, 0)  # the challenge's colours
        Image.fromarray(rgb).save(root / "train_gt" / "train_gt" / f"{i}.jpeg", quality=75)
        shutil.copy(src.image_path(i), root / "train" / "train" / f"{i}.jpeg")
    report = import_dataset("masks", root, tmp_path / "out",
                            ImportOptions(palette="0,255,0=non_neoplastic;255,0,0=neoplastic", dedupe="off"))
    out = open_dataset(tmp_path / "out")
    assert report.pairs == 40 and not report.skipped and out.classes == ["background", "non_neoplastic", "neoplastic"]
    for i in ids:
        m = src.load_mask(i)
        wrong = out.load_mask(i) != m
        # stated tolerance for JPEG (q75) palette masks: at most 0.1% of the pixels differ, all within 1 px of an
        # edge between classes (measured: at most 0.005%)
        assert wrong.mean() <= 0.001 and not (wrong & ~_edge_band(m, 1)).any()
        assert np.array_equal(out.load(i).image, src.load(i).image)  # JPEG images copied, not re-encoded
