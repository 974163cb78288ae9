"""De-duplication: exact and perceptual duplicates, blank images left out, and splits that never separate a set."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from segdeploy.data import open_dataset
from segdeploy.commands.data import app
from segdeploy.data.dedupe import DEFAULT_THRESHOLD, find_duplicates, hash_image
from segdeploy.data.importers.base import ImportOptions
from segdeploy.data.importers.build import import_dataset
from segdeploy.data.splits import group_of, make_splits

imagehash = pytest.importorskip("imagehash")


def _scene(seed: int, size=(96, 128)) -> np.ndarray:
    """A smooth random RGB scene: distinct seeds give unrelated perceptual hashes."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(*size, 3)), sigma=(8, 8, 0))
    field = (field - field.min()) / (field.max() - field.min())
    return (field * 255).astype(np.uint8)


def _near_copy(img: np.ndarray) -> np.ndarray:
    """Re-encoded as JPEG q70 after a 90% resize and back: what a re-exported copy looks like."""
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((int(w * 0.9), int(h * 0.9)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.resize((w, h), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=70)
    return np.asarray(Image.open(buf))


def test_exact_near_and_blank_images():
    images = {f"u{i}": _scene(i) for i in range(12)}
    images["u0_copy"] = images["u0"].copy()
    images["u1_near"] = _near_copy(images["u1"])
    images["blank_a"] = np.full((96, 128, 3), 7, np.uint8)
    images["blank_b"] = np.full((96, 128, 3), 7, np.uint8)  # identical, but blank: not a duplicate that matters
    hashes = [hash_image(i, a) for i, a in images.items()]
    report = find_duplicates(hashes)
    assert [s.ids for s in report.sets] == [["u0", "u0_copy"], ["u1", "u1_near"]]
    assert (report.exact_duplicates, report.near_duplicates, report.blank) == (1, 1, 2)
    assert report.sets[0].distinct == 1 and report.sets[1].distinct == 2
    # the packed 64-bit distance is imagehash's own Hamming distance
    ref = {i: imagehash.phash(Image.fromarray(a)) for i, a in images.items()}
    by_id = {h.id: h for h in hashes}
    for a in ("u1", "u2", "u3"):
        for b in ("u1_near", "u5", "u9"):
            assert bin(by_id[a].phash ^ by_id[b].phash).count("1") == ref[a] - ref[b]
    assert report.sets[1].max_distance == ref["u1"] - ref["u1_near"] <= DEFAULT_THRESHOLD
    # a zero threshold keeps only pixel-identical copies; unrelated scenes are far apart
    assert [s.ids for s in find_duplicates(hashes, threshold=0).sets] == [["u0", "u0_copy"]]
    assert min(ref[f"u{i}"] - ref[f"u{j}"] for i in range(2, 12) for j in range(i + 1, 12)) > DEFAULT_THRESHOLD


def _source(root: Path) -> dict[str, np.ndarray]:
    images = {f"img{i:02d}": _scene(100 + i) for i in range(24)}
    images["img00_dup"] = images["img00"].copy()
    images["img01_dup"] = _near_copy(images["img01"])
    images["img02_dupa"] = images["img02"].copy()
    images["img02_dupb"] = _near_copy(images["img02"])
    for i, img in images.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray((img[..., 0] > 128).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return images


SETS = [["img00", "img00_dup"], ["img01", "img01_dup"], ["img02", "img02_dupa", "img02_dupb"]]


def test_group_mode_keeps_every_image_and_no_split_separates_a_set(tmp_path):
    _source(tmp_path / "src")
    report = import_dataset("masks", tmp_path / "src", tmp_path / "out")
    assert report.pairs == 28 and report.duplicates["sets"] == 3
    assert (report.duplicates["exact_duplicates"], report.duplicates["near_duplicates"]) == (2, 2)
    saved = json.loads((tmp_path / "out" / "dedupe.json").read_text())
    assert [s["ids"] for s in saved["sets"]] == SETS and saved["mode"] == "group"
    ds = open_dataset(tmp_path / "out")
    assert report.groups == 28 - 4 == len(set(group_of(ds.ids, None, ds.groups).values()))
    separated_without_groups = 0
    for seed in range(8):
        for fold in range(3):
            where = {i: s for s in ("train", "val", "test") for i in ds.split(s, seed=seed, k=3, fold=fold)}
            assert all(len({where[i] for i in ids}) == 1 for ids in SETS)
            plain = make_splits(ds.ids, seed=seed, k=3, fold=fold, group_regex=None)
            plain_where = {i: s for s, ids in plain.items() for i in ids}
            separated_without_groups += sum(len({plain_where[i] for i in ids}) > 1 for ids in SETS)
    assert separated_without_groups > 0  # without groups.json the same splits would leak these sets
    assert ds.split_info(k=3)["groups_file"] == "groups.json"


def test_drop_mode_keeps_the_first_of_each_set(tmp_path):
    _source(tmp_path / "src")
    report = import_dataset("masks", tmp_path / "src", tmp_path / "out", ImportOptions(dedupe="drop"))
    assert report.dropped == ["img00_dup", "img01_dup", "img02_dupa", "img02_dupb"]
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == report.pairs == 24 and "img00" in ds.ids and not (tmp_path / "out" / "groups.json").exists()


def test_groups_file_joins_regex_groups():
    ids = ["p1_s0", "p1_s1", "p2_s0", "p2_s1", "p3_s0"]
    by_regex = group_of(ids, r"^(p\d+)")
    assert group_of(ids, r"^(p\d+)", {}) == by_regex == group_of(ids, r"^(p\d+)", {"p1_s0": "x", "p1_s1": "x"})
    joined = group_of(ids, r"^(p\d+)", {"p1_s1": "dup", "p2_s0": "dup"})
    assert joined == {"p1_s0": "p1", "p1_s1": "p1", "p2_s0": "p1", "p2_s1": "p1", "p3_s0": "p3"}


def test_cli_dedupe_on_an_existing_folder_and_check_flags_a_leaking_split(tmp_path):
    _source(tmp_path / "ds")
    report_path = tmp_path / "reports" / "d.json"
    result = CliRunner().invoke(app, ["dedupe", str(tmp_path / "ds"), "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(report_path.read_text())
    assert data["summary"]["exact_duplicates"] == 2 and [s["ids"] for s in data["sets"]] == SETS
    assert not (tmp_path / "ds" / "groups.json").exists()  # measuring never changes the dataset's splits
    assert CliRunner().invoke(app, ["dedupe", str(tmp_path / "ds"), "--report", str(report_path),
                                    "--write-groups"]).exit_code == 0
    ids = open_dataset(tmp_path / "ds").ids
    split = {i: "train" for i in ids}
    split["img00_dup"], split["img05"], split["img06"] = "test", "val", "test"
    (tmp_path / "ds" / "split.json").write_text(json.dumps(split))
    from segdeploy.data.check import check_dataset

    leaks = [p for p in check_dataset(tmp_path / "ds") if "span two splits" in p.message]
    assert len(leaks) == 1 and leaks[0].severity == "warning" and "dup:img00" in leaks[0].message
