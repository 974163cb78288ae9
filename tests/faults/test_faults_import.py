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
    with pytest.raises(SegdeployError, match=r"does not match 6 ids"):
        ds.split("train")
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
