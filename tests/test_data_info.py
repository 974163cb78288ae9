"""`segdeploy data info`: size distribution, intensity range per channel, empty masks and groups, each checked
against the same figure computed directly from the files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from segdeploy.data import dataset_info
from segdeploy.commands.data import app


def test_info_reports_sizes_intensities_empty_masks_and_groups(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    sizes = {"p1_a": (20, 30), "p1_b": (20, 30), "p2_a": (20, 30), "p2_b": (40, 24), "p3_a": (16, 16)}
    pixels = []
    for i, (h, w) in sizes.items():
        img = rng.integers(10, 200, (h, w, 3), dtype=np.uint8)
        pixels.append(img.reshape(-1, 3))
        mask = np.zeros((h, w), np.uint8)
        if not i.endswith("b"):
            mask[2:6, 3:9] = 1
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "meta.json").write_text(json.dumps({"classes": ["background", "x"], "group_regex": r"^(p\d+)"}))
    (root / "groups.json").write_text(json.dumps({"p2_b": "dup", "p3_a": "dup"}))
    info = dataset_info(root)
    allpx = np.concatenate(pixels)
    for c, name in enumerate("RGB"):
        got = info["intensity"][name]
        assert (got["min"], got["max"]) == (allpx[:, c].min(), allpx[:, c].max())
        assert got["mean"] == round(float(allpx[:, c].mean()), 2)
        assert got["p99"] == int(np.percentile(allpx[:, c], 99, method="inverted_cdf"))
    assert info["image_size"]["common_hw"][0] == [20, 30, 3] and info["image_size"]["distinct_sizes"] == 3
    assert info["counts"]["empty_masks"] == 2 and info["empty_mask_ids"] == ["p1_b", "p2_b"]
    assert info["groups"] == {"count": 2, "by": ["group_regex", "groups.json"]}  # p2 and p3 joined by groups.json
    result = CliRunner().invoke(app, ["info", str(root)])
    assert result.exit_code == 0, result.output
    assert "2 groups (by group_regex + groups.json)" in result.output and "empty masks (2)" in result.output
