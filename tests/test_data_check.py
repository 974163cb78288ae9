"""segdeploy.data.check and the `segdeploy data` CLI on tiny folders built in tmp_path (and on real PH2)."""

from __future__ import annotations

import io
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdeploy.data import check_dataset, dataset_info, open_dataset
from segdeploy.commands.data import app
from segdeploy.errors import SegdeployError

CLASSES = ["background", "a", "b"]


def _png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _pair(root: Path, sid: str, h: int = 20, w: int = 30, label: int = 1, rgb: bool = False) -> None:
    rng = np.random.default_rng(zlib.crc32(sid.encode()))
    img = rng.integers(0, 256, (h, w, 3) if rgb else (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 4: w // 2] = label
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "images" / f"{sid}.png").write_bytes(_png_bytes(img))
    (root / "masks" / f"{sid}.png").write_bytes(_png_bytes(mask))


def _good(root: Path, n: int = 4) -> Path:
    for i in range(n):
        _pair(root, f"s{i}", label=1 + i % 2)
    (root / "meta.json").write_text(json.dumps({"name": "tiny", "classes": CLASSES}))
    return root


def _errors(problems) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        if p.severity == "error":
            out.setdefault(Path(p.file).name, []).append(p.message)
    return out


def test_clean_folder_has_no_problems_and_cli_says_ok(tmp_path):
    root = _good(tmp_path / "ds")
    assert check_dataset(root) == []
    result = CliRunner().invoke(app, ["check", str(root)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "4 image/mask pairs" in result.output


def test_every_problem_is_listed_with_its_file(tmp_path):
    root = _good(tmp_path / "ds", n=2)
    png = _png_bytes(np.full((20, 30), 9, np.uint8))
    _pair(root, "corrupt")
    (root / "images" / "corrupt.png").write_bytes(png[: len(png) // 2])  # truncated PNG
    _pair(root, "notimage")
    (root / "masks" / "notimage.png").write_bytes(b"this is text, not a PNG")
    _pair(root, "truncjpg", rgb=True)
    jpg = _png_bytes(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8), "JPEG")
    (root / "images" / "truncjpg.png").unlink()
    (root / "images" / "truncjpg.jpg").write_bytes(jpg[: len(jpg) - 200])
    _pair(root, "nomask")
    (root / "masks" / "nomask.png").unlink()
    _pair(root, "noimage")
    (root / "images" / "noimage.png").unlink()
    _pair(root, "size")
    (root / "masks" / "size.png").write_bytes(_png_bytes(np.zeros((21, 30), np.uint8)))
    _pair(root, "label7", label=7)
    _pair(root, "colour")
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[5:10, 5:10] = (255, 0, 0)
    (root / "masks" / "colour.png").write_bytes(_png_bytes(rgb))

    errors = _errors(check_dataset(root))
    assert set(errors) == {"corrupt.png", "notimage.png", "truncjpg.jpg", "nomask.png", "noimage.png", "size.png",
                           "label7.png", "colour.png"}
    assert "cannot read image" in errors["corrupt.png"][0]
    assert "cannot read mask" in errors["notimage.png"][0]
    assert "cannot read image" in errors["truncjpg.jpg"][0]
    assert errors["nomask.png"] == ["image has no mask."]
    assert errors["noimage.png"] == ["mask has no image."]
    assert "30x21" in errors["size.png"][0] and "30x20" in errors["size.png"][0]
    assert "[7]" in errors["label7.png"][0] and "3 declared classes" in errors["label7.png"][0]
    assert "channels that differ" in errors["colour.png"][0]

    with pytest.raises(SegdeployError, match="segdeploy data check"):
        open_dataset(str(root))
    result = CliRunner().invoke(app, ["check", str(root), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["errors"] == 8 and not report["ok"]
    assert all(p["fix"] for p in report["problems"])


def test_rgb_mask_with_equal_channels_is_only_a_warning(tmp_path):
    root = _good(tmp_path / "ds", n=2)
    gray = np.zeros((20, 30), np.uint8)
    gray[3:9, 3:9] = 2
    (root / "masks" / "s0.png").write_bytes(_png_bytes(np.stack([gray] * 3, axis=2)))
    problems = check_dataset(root)
    assert [(Path(p.file).name, p.severity) for p in problems] == [("s0.png", "warning")]
    np.testing.assert_array_equal(open_dataset(str(root)).load("s0").mask, gray)
    assert CliRunner().invoke(app, ["check", str(root)]).exit_code == 0


@pytest.mark.parametrize("case", ["empty", "missing", "no_masks_dir"])
def test_folder_level_errors_and_cli_exit_code(tmp_path, case):
    root = tmp_path / "ds"
    if case == "empty":
        root.mkdir()
    elif case == "no_masks_dir":
        _good(root)
        for f in (root / "masks").iterdir():
            f.unlink()
        (root / "masks").rmdir()
    problems = check_dataset(root)
    assert problems and all(p.severity == "error" for p in problems)
    expected = {"empty": ("folder is empty", root), "missing": ("not found", root),
                "no_masks_dir": ("no masks/ folder", root / "masks")}[case]
    assert expected[0] in problems[0].message and problems[0].file == str(expected[1])
    result = CliRunner().invoke(app, ["check", str(root)])
    assert result.exit_code == 1
    with pytest.raises(SegdeployError):
        open_dataset(str(root))


@pytest.mark.parametrize("meta_text,message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"name": "x"}), 'no "classes"'),
    (json.dumps({"classes": ["background"]}), "at least two"),
    (json.dumps({"classes": CLASSES, "group_regex": "^(s"}), "not a valid regular expression"),
    (json.dumps({"classes": CLASSES, "group_regex": "^(q\\d)"}), "does not match 4 ids"),
])
def test_invalid_meta_json(tmp_path, meta_text, message):
    root = _good(tmp_path / "ds")
    (root / "meta.json").write_text(meta_text)
    errors = _errors(check_dataset(root))
    assert list(errors) == ["meta.json"] and message in errors["meta.json"][0]
    with pytest.raises(SegdeployError, match=re.escape(message)):
        open_dataset(str(root)).split("train", k=2)


def test_split_json_problems(tmp_path):
    root = _good(tmp_path / "ds")
    (root / "split.json").write_text(json.dumps({"s0": "train", "s1": "valid", "s2": "test", "ghost": "train"}))
    messages = _errors(check_dataset(root))["split.json"]
    assert any("other than train/val/test" in m and "'s1'" in m for m in messages)
    assert any("no image/mask pair" in m and "ghost" in m for m in messages)
    assert any("missing from split.json" in m and "s3" in m for m in messages)
    with pytest.raises(SegdeployError, match="split.json"):
        open_dataset(str(root)).split("train")


def test_missing_meta_json_infers_classes_and_warns(tmp_path):
    root = _good(tmp_path / "ds")
    (root / "meta.json").unlink()
    problems = check_dataset(root)
    assert [(Path(p.file).name, p.severity) for p in problems] == [("meta.json", "warning")]
    ds = open_dataset(str(root))
    assert ds.classes == ["background", "class_1", "class_2"] and ds.classes_inferred
    assert "inferred" in ds.classes_note


def test_dataset_info_counts_pixels(tmp_path):
    root = _good(tmp_path / "ds")
    _pair(root, "big", h=40, w=10, label=2)
    info = dataset_info(root)
    assert info["counts"]["pairs"] == 5
    assert info["image_size"]["min_hw"] == [20, 10] and info["image_size"]["max_hw"] == [40, 30]
    assert info["channels"]["in_chans"] == 1
    # masks: s0,s2 -> 5x8 of class 1; s1,s3 -> 5x8 of class 2; big -> 10x3 of class 2
    total = 4 * 20 * 30 + 40 * 10
    assert info["class_pixel_fraction"]["a"] == pytest.approx(80 / total)
    assert info["class_pixel_fraction"]["b"] == pytest.approx(110 / total)
    assert info["images_per_class"] == {"background": 5, "a": 2, "b": 3}
    result = CliRunner().invoke(app, ["info", str(root), "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["counts"]["pairs"] == 5


def test_check_and_info_on_real_ph2(shared_datasets):
    root = shared_datasets / "ph2"
    problems = check_dataset(root)
    assert [p for p in problems if p.severity == "error"] == []
    result = CliRunner().invoke(app, ["info", str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["counts"]["pairs"] == 200 and info["channels"]["in_chans"] == 3
    assert info["images_per_class"]["lesion"] == 200


def test_cli_accepts_registered_names():
    result = CliRunner().invoke(app, ["check", "synthetic:12"])
    assert result.exit_code == 0, result.output
    assert "12 image/mask pairs" in result.output
    result = CliRunner().invoke(app, ["info", "synthetic:12", "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["counts"]["pairs"] == 12 and info["channels"]["in_chans"] == 1
    per_class = info["images_per_class"]
    assert list(per_class) == ["background", "cavity", "wall", "lesion"]  # the built-in set's classes, in order
    assert per_class["background"] == 12 and all(0 < n <= 12 for n in per_class.values())
