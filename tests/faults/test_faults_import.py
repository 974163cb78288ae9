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
