"""`segdeploy data import` of volume formats (nnU-Net v2, MSD, ACDC, CAMUS) on files written here with nibabel
and SimpleITK; every slice is compared with the array it was made from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segdeploy.data import open_dataset
from segdeploy.data.importers.base import ImportOptions
from segdeploy.data.importers.build import import_dataset
from segdeploy.data.splits import group_of

nib = pytest.importorskip("nibabel")


def _volume(shape, seed: int, labels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An int16 'CT' volume (x, y, z) and its labels: spheres of increasing label."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]]
    lab = np.zeros(shape, np.uint8)
    for k in range(1, labels + 1):
        c = rng.uniform(0.35, 0.65, 3) * np.array(shape)
        r = rng.uniform(0.15, 0.25) * min(shape[:2])
        lab[(x - c[0]) ** 2 + (y - c[1]) ** 2 + ((z - c[2]) * 2) ** 2 <= r * r] = k
    img = (rng.normal(-500, 80, shape) + lab.astype(np.float64) * 400).astype(np.int16)
    return img, lab


def _nii(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def _window(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.rint((a.astype(np.float64) - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _nnunet_v2(root: Path, n_tr: int = 6, with_ts: bool = True, ending: str = ".nii.gz") -> dict:
    vols = {}
    for i in range(n_tr + (2 if with_ts else 0)):
        case = f"liver_{i:03d}"
        sub = ("imagesTr", "labelsTr") if i < n_tr else ("imagesTs", "labelsTs")
        img, lab = _volume((24, 20, 6), i)
        vols[case] = (img, lab)
        _nii(root / sub[0] / f"{case}_0000{ending}", img)
        _nii(root / sub[1] / f"{case}{ending}", lab)
    (root / "dataset.json").write_text(json.dumps({
        "name": "Dataset003_Liver", "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumor": 2},
        "numTraining": n_tr, "file_ending": ending}))
    return vols


def test_nnunet_v2_volumes_sliced_with_ct_window_and_case_groups(tmp_path):
    vols = _nnunet_v2(tmp_path / "Dataset003_Liver")
    report = import_dataset("nnunet", tmp_path / "Dataset003_Liver", tmp_path / "out",
                            ImportOptions(window=(-160, 240), dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    assert ds.classes == ["background", "liver", "tumor"] and report.pairs == 8 * 6
    for case, (img, lab) in vols.items():
        for k in range(img.shape[2]):
            s = ds.load(f"{case}_slice_{k:03d}")
            assert np.array_equal(s.mask, lab[:, :, k].T)  # rows = y, as ITK viewers show an axial slice
            assert np.array_equal(s.image[..., 0], _window(img[:, :, k].T, -160, 240))
    # the case is the group: no case's slices are split apart, and imagesTs is the test split
    groups = group_of(ds.ids, ds.group_regex)
    assert len(set(groups.values())) == 8
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert {split[i] for i in ds.ids if i.startswith(("liver_006", "liver_007"))} == {"test"}
    for case in vols:
        assert len({split[i] for i in ds.ids if i.startswith(case)}) == 1
    for fold in range(5):
        parts = {s: {groups[i] for i in ds.split(s, fold=fold, use_split_file=False)} for s in ("train", "val", "test")}
        assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])


def test_percentiles_and_skip_empty(tmp_path):
    vols = _nnunet_v2(tmp_path / "ds", n_tr=2, with_ts=False)
    import_dataset("nnunet", tmp_path / "ds", tmp_path / "out",
                   ImportOptions(percentiles=(1, 99), skip_empty=True, dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    for case, (img, lab) in vols.items():
        lo, hi = np.percentile(img.astype(np.float64), (1, 99))  # over the whole volume, not per slice
        kept = [k for k in range(img.shape[2]) if lab[:, :, k].any()]
        assert [i for i in ds.ids if i.startswith(case)] == [f"{case}_slice_{k:03d}" for k in kept]
        for k in kept:
            assert np.array_equal(ds.load(f"{case}_slice_{k:03d}").image[..., 0], _window(img[:, :, k].T, lo, hi))


def test_msd_v1_multimodal_4d_and_channel_choice(tmp_path):
    root = tmp_path / "Task01_BrainTumour"
    training = []
    data = {}
    for i in range(3):
        t1, lab = _volume((16, 18, 4), 10 + i, labels=3)
        flair = (t1 * -1 + 7).astype(np.int16)
        _nii(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", np.stack([t1, flair], axis=-1))
        _nii(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", lab)
        _nii(root / "imagesTr" / f"._BRATS_{i:03d}.nii.gz", lab)  # macOS resource-fork junk in MSD tarballs
        training.append({"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"})
        data[f"BRATS_{i:03d}"] = (t1, flair, lab)
    (root / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "modality": {"0": "T1", "1": "FLAIR"}, "training": training, "test": [],
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}))
    for chan, pick in ((None, 0), ((1,), 1)):
        out = tmp_path / f"out{pick}"
        import_dataset("nnunet", root, out, ImportOptions(channels=chan, percentiles=(0, 100), dedupe="off"))
        ds = open_dataset(out)
        assert ds.classes[-1] == "enhancing tumour" and len(ds) == 12
        for case, arrays in data.items():
            vol = arrays[pick]
            lo, hi = float(vol.min()), float(vol.max())
            s = ds.load(f"{case}_slice_002")
            assert np.array_equal(s.image[..., 0], _window(vol[:, :, 2].T, lo, hi))
            assert np.array_equal(s.mask, arrays[2][:, :, 2].T)


def test_nnunet_2d_png_channels_become_rgb(tmp_path):
    from PIL import Image

    root = tmp_path / "Dataset120_Roads"
    truth = {}
    for i in range(2):
        rgb = np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8)
        lab = (rgb[..., 0] > 128).astype(np.uint8)
        truth[f"road_{i}"] = (rgb, lab)
        for c in range(3):
            (root / "imagesTr").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb[..., c]).save(root / "imagesTr" / f"road_{i}_000{c}.png")
        (root / "labelsTr").mkdir(exist_ok=True)
        Image.fromarray(lab).save(root / "labelsTr" / f"road_{i}.png")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                   "labels": {"background": 0, "road": 1}, "file_ending": ".png"}))
    import_dataset("nnunet", root, tmp_path / "out", ImportOptions(dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    assert ds.in_chans == 3 and ds.group_regex is None
    for case, (rgb, lab) in truth.items():
        s = ds.load(case)
        assert np.array_equal(s.image, rgb) and np.array_equal(s.mask, lab)


def test_simpleitk_formats_give_the_same_slices_as_nifti(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    img, lab = _volume((20, 16, 5), 3)
    ref = _nnunet_v2(tmp_path / "nii", n_tr=1, with_ts=False)
    for ending in (".nrrd", ".mha"):
        root = tmp_path / ending[1:]
        case, (img, lab) = next(iter(ref.items()))
        for sub, name, arr in (("imagesTr", f"{case}_0000", img), ("labelsTr", case, lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0))), str(root / sub / f"{name}{ending}"))
        spec = json.loads((tmp_path / "nii" / "dataset.json").read_text())
        (root / "dataset.json").write_text(json.dumps({**spec, "file_ending": ending}))
    outs = {}
    for name in ("nii", "nrrd", "mha"):
        import_dataset("nnunet", tmp_path / name, tmp_path / f"out_{name}", ImportOptions(dedupe="off"))
        ds = open_dataset(tmp_path / f"out_{name}")
        outs[name] = {i: (ds.load(i).image, ds.load(i).mask) for i in ds.ids}
    assert outs["nii"].keys() == outs["nrrd"].keys() == outs["mha"].keys() and len(outs["nii"]) == 6
    for i in outs["nii"]:
        for other in ("nrrd", "mha"):
            assert np.array_equal(outs["nii"][i][0], outs[other][i][0])
            assert np.array_equal(outs["nii"][i][1], outs[other][i][1])


def test_acdc_layout(tmp_path):
    root = tmp_path / "ACDC" / "database"
    truth = {}
    for p in (1, 2, 101):
        sub = "training" if p < 101 else "testing"
        pdir = root / sub / f"patient{p:03d}"
        for f in (1, 12):
            img, lab = _volume((22, 26, 4), p * 100 + f, labels=3)
            img = (img + 600).clip(0, None).astype(np.uint16)
            truth[f"patient{p:03d}_frame{f:02d}"] = (img, lab)
            _nii(pdir / f"patient{p:03d}_frame{f:02d}.nii.gz", img)
            if not (p == 2 and f == 12):
                _nii(pdir / f"patient{p:03d}_frame{f:02d}_gt.nii.gz", lab)
        _nii(pdir / f"patient{p:03d}_4d.nii.gz", np.zeros((22, 26, 4, 3), np.int16))
        (pdir / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: DCM\n")
    report = import_dataset("acdc", tmp_path / "ACDC", tmp_path / "out", ImportOptions(percentiles=(0, 100)))
    ds = open_dataset(tmp_path / "out")
    assert ds.classes == ["background", "right_ventricle", "myocardium", "left_ventricle"]
    assert ds.group_regex == r"^(patient\d+)" and report.groups == 3
    assert [Path(s.path).name for s in report.skipped] == ["patient002_frame12.nii.gz"]
    for frame, (img, lab) in truth.items():
        if frame == "patient002_frame12":
            continue
        lo, hi = float(img.min()), float(img.max())
        for k in range(4):
            s = ds.load(f"{frame}_slice_{k:03d}")
            assert np.array_equal(s.mask, lab[:, :, k].T)
            assert np.array_equal(s.image[..., 0], _window(img[:, :, k].T, lo, hi))


@pytest.mark.parametrize("release", ["nifti", "mhd"])
def test_camus_both_releases(tmp_path, release):
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(5)
    truth = {}
    for p in (1, 2):
        for view in ("2CH_ED", "4CH_ES"):
            case = f"patient{p:04d}_{view}"
            img = rng.integers(0, 256, (30, 20), dtype=np.uint8)  # (rows, columns) as displayed
            lab = np.zeros((30, 20), np.uint8)
            lab[5:25, 4:10], lab[8:20, 10:14], lab[25:, 4:16] = 1, 2, 3
            truth[case] = (img, lab)
            d = tmp_path / "CAMUS" / "training" / f"patient{p:04d}"
            d.mkdir(parents=True, exist_ok=True)
            for name, arr in ((case, img), (f"{case}_gt", lab)):
                if release == "nifti":
                    _nii(d / f"{name}.nii.gz", arr.T[:, :, None])  # voxel order (x, y, z)
                else:
                    sitk.WriteImage(sitk.GetImageFromArray(arr[None]), str(d / f"{name}.mhd"))  # + .raw
        (d / "Info_2CH.cfg").write_text("ED: 1\nES: 12\n")
    if release == "nifti":  # the NIfTI as SimpleITK reads it is the displayed image: two readers agree
        one = next(iter(truth))
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(next((tmp_path / "CAMUS").rglob(f"{one}.nii.gz")))))
        assert np.array_equal(arr[0], truth[one][0])
    import_dataset("camus", tmp_path / "CAMUS", tmp_path / "out", ImportOptions(dedupe="off"))
    ds = open_dataset(tmp_path / "out")
    assert ds.classes == ["background", "left_ventricle", "myocardium", "left_atrium"]
    assert sorted(ds.ids) == sorted(truth)
    for case, (img, lab) in truth.items():
        s = ds.load(case)
        assert np.array_equal(s.image[..., 0], img) and np.array_equal(s.mask, lab)
