"""segdeploy.data: registry, SegDataset, splits (synthetic and real ACDC ids) and the synthetic generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segdeploy.data import make_splits, open_dataset, register_dataset
from segdeploy.data import synthetic as synth
from segdeploy.errors import SegdeployError

IDS = [f"p{p:02d}_s{s}" for p in range(30) for s in range(4)]


# -- splits ----------------------------------------------------------------------------------------------------

def _group(i: str, regex: str) -> str:
    return re.match(regex, i).group(1)


def test_make_splits_is_deterministic_grouped_and_seed_dependent():
    a = make_splits(IDS, seed=42, k=5, fold=0, group_regex=r"^(p\d+)")
    b = make_splits(list(reversed(IDS)), seed=42, k=5, fold=0, group_regex=r"^(p\d+)")
    assert a == b  # independent of input order
    c = make_splits(IDS, seed=7, k=5, fold=0, group_regex=r"^(p\d+)")
    assert a["test"] != c["test"]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(IDS)
    groups = {s: {_group(i, r"^(p\d+)") for i in ids} for s, ids in a.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    assert len(groups["test"]) == 6  # 20% of 30 groups
    # every fold shares the test set; the val sets partition the rest
    folds = [make_splits(IDS, seed=42, k=5, fold=f, group_regex=r"^(p\d+)") for f in range(5)]
    assert all(f["test"] == a["test"] for f in folds)
    vals = [i for f in folds for i in f["val"]]
    assert sorted(vals) == sorted(a["train"] + a["val"]) and len(set(vals)) == len(vals)
    assert [len({_group(i, r"^(p\d+)") for i in f["val"]}) for f in folds] == [5, 5, 5, 5, 4]


def test_make_splits_without_regex_splits_by_id_and_whole_match_groups():
    by_id = make_splits(IDS, seed=1, k=4, fold=2, group_regex=None)
    assert len(by_id["test"]) == 24  # 20% of 120 ids
    whole = make_splits(IDS, seed=1, k=4, fold=2, group_regex=r"p\d+")  # no capture group: the whole match
    with_group = make_splits(IDS, seed=1, k=4, fold=2, group_regex=r"^(p\d+)")
    assert whole == with_group


def test_make_splits_ignores_python_hash_randomisation():
    code = ("from segdeploy.data.splits import make_splits; ids=[f'p{p}_s{s}' for p in range(20) for s in range(3)];"
            "print(make_splits(set(ids), seed=3, k=5, fold=1, group_regex='^(p[0-9]+)'))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_make_splits_rejects_bad_arguments():
    with pytest.raises(SegdeployError, match="does not match"):
        make_splits(IDS + ["other"], seed=0, k=5, fold=0, group_regex=r"^(p\d+)")
    with pytest.raises(SegdeployError, match="fold=5"):
        make_splits(IDS, seed=0, k=5, fold=5, group_regex=None)
    with pytest.raises(SegdeployError, match="too few"):
        make_splits(IDS[:8], seed=0, k=5, fold=0, group_regex=r"^(p\d+)")


def test_acdc_group_splits_and_split_json(shared_datasets):
    ds = open_dataset(str(shared_datasets / "acdc"))
    assert ds.num_classes == 4 and ds.in_chans == 1 and len(ds.ids) == 1902
    kw = dict(use_split_file=False, group_regex=r"^(patient\d+)")
    splits = {s: ds.split(s, **kw) for s in ("train", "val", "test")}
    patients = {s: {_group(i, r"^(patient\d+)") for i in ids} for s, ids in splits.items()}
    assert sum(map(len, patients.values())) == 100  # no patient in two splits
    assert len(patients["test"]) == 20
    assert sum(map(len, splits.values())) == 1902
    assert ds.split("val", **kw, fold=1) != splits["val"]
    info = ds.split_info(**kw)
    assert info["method"] == "grouped-kfold" and info["counts"]["test"] == len(splits["test"])

    mapping = json.loads((shared_datasets / "acdc" / "split.json").read_text())
    from_file = {s: ds.split(s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in from_file.items()} == {"train": 1312, "val": 210, "test": 380}
    assert all(mapping[i] == s for s, ids in from_file.items() for i in ids)
    assert ds.split_info()["method"] == "split.json"


# -- registry and synthetic ------------------------------------------------------------------------------------

def test_synthetic_is_cached_and_opens_with_meta():
    ds = open_dataset("synthetic:36")
    assert ds.name == "synthetic:36" and ds.root.name.startswith("synthetic-v2-")
    assert open_dataset("synthetic:36").root == ds.root  # second open reuses the cache
    assert ds.classes == ["background", "cavity", "wall", "lesion"] and ds.in_chans == 1
    assert ds.ids[:7] == [f"case000_slice{s}" for s in range(6)] + ["case001_slice0"]
    assert ds.group_regex == r"^(case\d+)"
    sample = ds.load("case003_slice2")
    assert sample.image.dtype == np.uint8 and sample.image.shape == (*sample.mask.shape, 1)
    sizes = {ds.load(i).mask.shape for i in ds.ids}
    assert len(sizes) == 6 and any(h != w for h, w in sizes)
    present = set(np.unique(np.concatenate([ds.load(i).mask.ravel() for i in ds.ids])).tolist())
    assert present == {0, 1, 2, 3}
    # 6 cases: one test case, five folds of one case each
    cases = {s: {i[:7] for i in ds.split(s)} for s in ("train", "val", "test")}
    assert [len(cases[s]) for s in ("train", "val", "test")] == [4, 1, 1]


def test_synthetic_generation_is_deterministic(tmp_path):
    a = synth.generate(tmp_path / "a", n_images=8, seed=0)
    b = synth.generate(tmp_path / "b", n_images=8, seed=0)
    assert a["pixels_sha256"] == b["pixels_sha256"]
    for sub in ("images", "masks"):
        for f in (tmp_path / "a" / sub).iterdir():
            assert f.read_bytes() == (tmp_path / "b" / sub / f.name).read_bytes()
    c = synth.generate(tmp_path / "c", n_images=8, seed=1)
    assert c["pixels_sha256"] != a["pixels_sha256"]
    # the hash covers exactly the pixels written
    ds = open_dataset(str(tmp_path / "a"))
    assert ds.load("case001_slice1").mask.max() <= 3


def test_interrupted_generation_is_never_used(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    calls = {"n": 0}
    real = synth.render_slice

    def failing(*args):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synth, "render_slice", failing)
    with pytest.raises(KeyboardInterrupt):
        synth.synthetic_folder(n_images=12)
    assert list((tmp_path / "cache").iterdir()) == []  # no final folder, no leftover partial folder
    monkeypatch.setattr(synth, "render_slice", real)
    root = synth.synthetic_folder(n_images=12)
    assert len(list((root / "images").iterdir())) == 12 and (root / "meta.json").is_file()


def test_register_dataset_and_spec_errors(tmp_path):
    root = tmp_path / "made"
    synth.generate(root, n_images=6, seed=0)

    @register_dataset("unit-test-made")
    def _made() -> Path:
        return root

    ds = open_dataset("unit-test-made")
    assert ds.root == root and ds.name == "unit-test-made" and len(ds.ids) == 6
    with pytest.raises(ValueError, match="twice"):
        register_dataset("unit-test-made")(_made)
    with pytest.raises(SegdeployError, match="neither a folder nor a registered dataset"):
        open_dataset("no-such-dataset")
    with pytest.raises(SegdeployError, match="number of images"):
        open_dataset("synthetic:many")
