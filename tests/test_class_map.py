"""Class maps: parsing, remapped dataset views, and their use by train (recorded) and bench (refused early)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import make_meta

from segdeploy.data import open_dataset
from segdeploy.data.class_map import ClassMap, dataset_for_run
from segdeploy.errors import SegdeployError
from segdeploy.records import DatasetRef

POLYP = ["background", "non_neoplastic", "neoplastic"]
ACDC = ["background", "right_ventricle", "myocardium", "left_ventricle"]


def test_inline_map_merges_labels_and_implies_background():
    r = ClassMap.parse("polyp=1,2").resolve(POLYP)
    assert r.classes == ["background", "polyp"] and r.sources == {"background": [0], "polyp": [1, 2]}
    assert r.lut[:3].tolist() == [0, 1, 1] and r.to_background == []


def test_names_several_targets_and_unnamed_labels_go_to_background():
    r = ClassMap.parse("lv=left_ventricle; rv=1").resolve(ACDC)
    assert r.classes == ["background", "lv", "rv"]
    assert r.lut[:4].tolist() == [0, 2, 0, 1] and r.to_background == [2]
    # an explicitly named background may take more labels, and comes first wherever it is written
    r = ClassMap.parse("heart=1,2,3;bg=0").resolve(ACDC)
    assert r.classes == ["bg", "heart"] and r.lut[:4].tolist() == [0, 1, 1, 1]


def test_json_file_and_recorded_map_round_trip(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"polyp": ["non_neoplastic", 2]}))
    r = ClassMap.parse(str(path)).resolve(POLYP)
    again = ClassMap.parse(r.record).resolve(POLYP)
    assert again.classes == r.classes and np.array_equal(again.lut, r.lut)


@pytest.mark.parametrize("spec, message", [
    ("polyp=3", "outside"), ("a=1;b=1", "goes to both"), ("polyp=tumour", "no source class"),
    ("background=1", "does not hold label 0"), ("polyp", "not name=labels"), ("a=1;a=2", "twice"), (";", "names no"),
])
def test_invalid_maps_are_refused_with_the_reason(spec, message):
    with pytest.raises(SegdeployError, match=message):
        ClassMap.parse(spec).resolve(POLYP)


def _folder(root, masks: dict[str, np.ndarray], classes):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in masks.items():
        Image.fromarray((m * 40).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(m).save(root / "masks" / f"{i}.png")
    (root / "meta.json").write_text(json.dumps({"classes": classes}))
    return root


def test_mapped_dataset_view_remaps_masks_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    masks = {f"s{i}": rng.integers(0, 4, (12, 10)).astype(np.uint8) for i in range(3)}
    root = _folder(tmp_path / "acdc", masks, ACDC)
    ds = open_dataset(root, class_map="lv=3;rv=1")
    assert ds.classes == ["background", "lv", "rv"] and ds.num_classes == 3
    assert ds.source_classes == ACDC and "mapped" in ds.classes_note
    for i, m in masks.items():
        expected = np.select([m == 3, m == 1], [1, 2], 0)  # the same map written another way
        assert np.array_equal(ds.load(i).mask, expected) and np.array_equal(ds.load_mask(i), expected)
    plain = open_dataset(root)
    assert plain.classes == ACDC and np.array_equal(plain.load_mask("s0"), masks["s0"])
    with pytest.raises(SegdeployError, match="already applied"):
        ds.with_class_map("x=1")


def test_dataset_for_run_applies_the_recorded_map_and_refuses_other_classes(tmp_path):
    masks = {f"s{i}": np.full((8, 8), i % 3, np.uint8) for i in range(3)}
    ds = open_dataset(_folder(tmp_path / "neo", masks, POLYP))
    meta = make_meta(classes=["background", "polyp"], num_classes=2)
    meta.dataset = DatasetRef(name="neo", spec=str(tmp_path / "neo"), class_map={"background": [0], "polyp": [1, 2]})
    view = dataset_for_run(ds, meta, None)  # on its own training set, the run's map comes back by itself
    assert view.classes == ["background", "polyp"] and view.load_mask("s2").max() == 1
    other = open_dataset(_folder(tmp_path / "ph2", masks, ["background", "lesion", "other"]))
    assert dataset_for_run(other, meta, None) is other  # another dataset: no silent mapping
    assert dataset_for_run(other, meta, "polyp=lesion").classes == ["background", "polyp"]
    with pytest.raises(SegdeployError, match=r"predicts classes \[background, polyp\].*gives \[background, lesion\]"):
        dataset_for_run(other, meta, "lesion=1")


@pytest.mark.slow
def test_train_records_the_map_and_bench_refuses_before_any_work(tmp_path):
    from segdeploy.bench.runner import run_bench
    from segdeploy.fileio import read_jsonl
    from segdeploy.train import TrainConfig, train_model

    meta = train_model(TrainConfig(data="synthetic:24", model="unet-tiny", out=tmp_path / "run", epochs=1,
                                   img_size=32, batch_size=4, device="cpu", k=3, class_map="lesion=3"),
                       progress=False)
    assert meta.classes == ["background", "lesion"] and meta.num_classes == 2
    assert meta.dataset.class_map == {"background": [0], "lesion": [3]}
    assert meta.dataset.source_classes == ["background", "cavity", "wall", "lesion"]
    results = tmp_path / "r.jsonl"
    rows = run_bench([tmp_path / "run"], "synthetic:24", "torch", "fp32", results, max_images=2, progress=False,
                     warmup=0.0, duration=0.0, min_iters=1)
    assert rows[0].status == "ok" and rows[0].class_map == {"background": [0], "lesion": [3]}
    assert list(rows[0].dice_per_class) == ["lesion"]  # scored on the mapped labels (foreground classes)
    kw = dict(max_images=2, progress=False, warmup=0.0, duration=0.0, min_iters=1)
    same = run_bench([tmp_path / "run"], "synthetic:24", "torch", "fp32", results, class_map="lesion=3", **kw)
    assert same[0].timestamp == rows[0].timestamp  # the recorded map, given again: resumed, not re-run
    wider = run_bench([tmp_path / "run"], "synthetic:24", "torch", "fp32", results, class_map="lesion=2,3", **kw)
    assert wider[0].class_map == {"background": [0], "lesion": [2, 3]} and len(read_jsonl(results)) == 2
    # the class map reaches a bench worker process: the same labels, the same scores
    isolated = run_bench([tmp_path / "run"], "synthetic:24", "torch", "fp32", tmp_path / "w.jsonl",
                         class_map="lesion=2,3", isolate="process", **kw)
    assert isolated[0].status == "ok" and isolated[0].class_map == wider[0].class_map
    assert isolated[0].dice_per_class == wider[0].dice_per_class
    with pytest.raises(SegdeployError, match="predicts classes"):
        run_bench([tmp_path / "run"], "synthetic:24", "torch", "fp32", tmp_path / "never.jsonl",
                  class_map="wall=2", progress=False)
    assert not (tmp_path / "never.jsonl").exists()
