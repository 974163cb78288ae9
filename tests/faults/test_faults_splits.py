"""Issue 9, bugs 1 and 2: a run is scored on the test images it recorded at training time, whatever happened to
the dataset folder since; and a bench row is only resumed while the artifact it measured is the one on disk.

Both bugs were silent: deleting one image moved other images between a run's train and test splits, and a
re-exported ONNX file (or one exported after bench said it was missing) was never measured."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest

from segdeploy.errors import SegdeployError, SegdeployWarning
from segdeploy.fileio import read_jsonl

FAST = dict(warmup=0.0, duration=0.0, min_iters=1, progress=False)
NAME = "echo"  # every copy of the dataset has this folder name: the run's training dataset, by name


def _copy_dataset(src, dst):
    """A per-image split copy of a dataset folder (no group_regex, so deleting one image moves others)."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta.pop("group_regex", None)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def _delete(dataset_dir, sample_id):
    for folder in ("images", "masks"):
        for f in (dataset_dir / folder).glob(f"{sample_id}.*"):
            f.unlink()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A unet-tiny trained for one epoch at 64 px on 30 synthetic images (per-image split, k=3): the run folder,
    the dataset folder it was trained on, and its splits as they were then."""
    from segdeploy.data import open_dataset
    from segdeploy.train import TrainConfig, train_model

    base = tmp_path_factory.mktemp("splits")
    data = _copy_dataset(open_dataset("synthetic:30").root, base / "data" / NAME)
    run = base / "run"
    train_model(TrainConfig(data=str(data), model="unet-tiny", out=run, epochs=1, img_size=64, batch_size=8,
                            lr=1e-3, device="cpu", k=3), progress=False)
    ds = open_dataset(str(data))
    splits = {s: ds.split(s, seed=42, k=3) for s in ("train", "val", "test")}
    return run, data, splits


@pytest.fixture
def dataset_copy(trained, tmp_path):
    """A fresh copy of the training folder, under the same name, for a test to damage."""
    _, data, _ = trained
    dst = tmp_path / NAME
    shutil.copytree(data, dst)
    return dst


def _scored_ids(run, data, results, **kwargs) -> list[str]:
    from segdeploy.bench.runner import run_bench

    seen = []
    rows = run_bench([run], str(data), "torch", "fp32", results, device="cpu",
                     on_evaluation=lambda row, ev: seen.append(list(ev.image_ids)), **FAST, **kwargs)
    assert [r.status for r in rows] == ["ok"], [r.reason for r in rows]
    return seen[0]


# -- bug 1: the split is the recorded ids ---------------------------------------------------------------------


def test_training_records_the_split_ids_sealed_in_model_json(trained):
    from segdeploy.run.splits import SPLITS_FILE, ids_sha256, pixels_sha256
    from segdeploy.run.folder import load_run

    run_dir, _, splits = trained
    recorded = json.loads((run_dir / SPLITS_FILE).read_text())
    assert {s: recorded[s] for s in splits} == splits
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
    meta = load_run(run_dir).meta
    pixels = recorded["pixels"]["sha256"]  # each id's pixel digest, sealed too: the dataset is known by content
    assert sorted(pixels) == sorted(i for ids in splits.values() for i in ids)
    assert meta.split.ids_sha256 == {**{s: ids_sha256(ids) for s, ids in splits.items()},
                                     "pixels": pixels_sha256(pixels)}
    assert meta.split.counts == {s: len(ids) for s, ids in splits.items()}


def test_deleting_a_training_image_does_not_move_test_images(trained, dataset_copy, tmp_path):
    """The reported bug: with one training image gone, the seeded split over 29 ids puts former training images
    into the test split; the bench must still score exactly the recorded test ids."""
    from segdeploy.data import open_dataset

    run, _, splits = trained
    _delete(dataset_copy, splits["train"][0])
    moved = open_dataset(str(dataset_copy)).split("test", seed=42, k=3)
    assert set(moved) & set(splits["train"]), "the reproduction needs a split that moves"  # the old behaviour
    scored = _scored_ids(run, dataset_copy, tmp_path / "r.jsonl")
    assert scored == splits["test"]
    assert not set(scored) & set(splits["train"])


def test_a_missing_test_image_refuses_and_allow_missing_scores_the_rest(trained, dataset_copy, tmp_path):
    from segdeploy.bench.runner import run_bench

    run, _, splits = trained
    gone = splits["test"][1]
    _delete(dataset_copy, gone)
    with pytest.raises(SegdeployError, match=rf"1 of the run's {len(splits['test'])} recorded test images .*{gone}"
                                             r".*--allow-missing") as info:
        run_bench([run], str(dataset_copy), "torch", "fp32", tmp_path / "r.jsonl", device="cpu", **FAST)
    assert info.value.path == str(dataset_copy)
    assert not (tmp_path / "r.jsonl").exists()  # refused before any row

    with pytest.warns(SegdeployWarning, match=rf"1 of the run's .* test images .*{gone}"):
        scored = _scored_ids(run, dataset_copy, tmp_path / "r.jsonl", allow_missing=True)
    assert scored == [i for i in splits["test"] if i != gone]
    [row] = read_jsonl(tmp_path / "r.jsonl")
    assert row["n_images"] == len(splits["test"]) - 1


def test_new_images_are_never_added_to_the_test_split(trained, dataset_copy, tmp_path):
    run, _, splits = trained
    for folder in ("images", "masks"):
        shutil.copy(dataset_copy / folder / f"{splits['test'][0]}.png", dataset_copy / folder / "zz_new.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scored = _scored_ids(run, dataset_copy, tmp_path / "r.jsonl")
    assert scored == splits["test"]
    assert any(re.search(r"1 images .* added after run .*zz_new.*not scored", str(w.message)) for w in caught)


def test_export_calibrates_on_recorded_training_ids_only(trained, dataset_copy, monkeypatch):
    """Export's INT8 calibration set and parity images come from the recorded splits, not today's folder."""
    from segdeploy.data.folder import SegDataset
    from segdeploy.export import load_images
    from segdeploy.records import DatasetRef
    from segdeploy.run.folder import load_run

    run_dir, _, splits = trained
    _delete(dataset_copy, splits["train"][0])
    run = load_run(run_dir)
    run.meta.dataset = DatasetRef(**{**run.meta.dataset.to_json(), "spec": str(dataset_copy)})
    loaded = []
    real_load = SegDataset.load
    monkeypatch.setattr(SegDataset, "load", lambda self, i: loaded.append(i) or real_load(self, i))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = load_images(run, "train", 100, seed=0)
    assert sorted(loaded) == sorted(splits["train"][1:]) and len(batch) == len(loaded)
    assert any(f"1 of the run's {len(splits['train'])} recorded train images" in str(w.message) for w in caught)
    loaded.clear()
    load_images(run, "test", 100)
    assert loaded == splits["test"]


@pytest.mark.slow
def test_cam_refuses_a_missing_test_image(trained, dataset_copy, tmp_path):
    from segdeploy.xai.gradcam import gradcam_run

    run, _, splits = trained
    _delete(dataset_copy, splits["test"][0])
    with pytest.raises(SegdeployError, match="recorded test images"):
        gradcam_run(run, str(dataset_copy), tmp_path / "cam", worst=1, random=0)
    with pytest.warns(SegdeployWarning, match="recorded test images"):
        summary = gradcam_run(run, str(dataset_copy), tmp_path / "cam", worst=1, random=0, allow_missing=True)
    assert [image["id"] for image in summary["images"]][0] in splits["test"][1:]


def test_an_edited_or_missing_splits_file_is_refused(trained, tmp_path):
    from segdeploy.data import open_dataset
    from segdeploy.run.splits import SPLITS_FILE
    from segdeploy.run.folder import load_run

    run_dir, data, splits = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    ds = open_dataset(str(data))
    recorded = json.loads((copy / SPLITS_FILE).read_text())
    recorded["test"] = recorded["test"][:-1] + [splits["train"][0]]  # slip a training image into the test set
    (copy / SPLITS_FILE).write_text(json.dumps(recorded))
    with pytest.raises(SegdeployError, match="test ids do not match the sha256 recorded in model.json"):
        load_run(copy).split_ids(ds, "test")
    (copy / SPLITS_FILE).unlink()
    with pytest.raises(SegdeployError, match="splits.json is missing"):
        load_run(copy).split_ids(ds, "test")


def test_a_run_without_recorded_ids_recomputes_the_split_with_a_warning(trained, dataset_copy, tmp_path):
    from segdeploy.data import open_dataset
    from segdeploy.fileio import atomic_write_json
    from segdeploy.run.splits import SPLITS_FILE
    from segdeploy.run.folder import load_run

    run_dir, _, splits = trained
    legacy = tmp_path / "legacy"
    shutil.copytree(run_dir, legacy)
    (legacy / SPLITS_FILE).unlink()
    meta = json.loads((legacy / "model.json").read_text())
    del meta["split"]["ids_sha256"]
    atomic_write_json(legacy / "model.json", meta)
    ds = open_dataset(str(dataset_copy))
    with pytest.warns(SegdeployWarning, match="records no split ids .* recomputed from seed 42"):
        assert load_run(legacy).split_ids(ds, "test") == splits["test"]  # today's behaviour, folder unchanged
    _delete(dataset_copy, splits["train"][0])
    with pytest.warns(SegdeployWarning, match="had 30 images at training and has 29 now, so the split HAS moved"):
        load_run(legacy).split_ids(open_dataset(str(dataset_copy)), "test")


def test_resuming_training_on_a_changed_folder_is_refused(tmp_path):
    from segdeploy.run.splits import SPLITS_FILE, record_splits

    splits = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    sealed = record_splits(tmp_path, splits, dataset="x", resume=False)
    assert record_splits(tmp_path, splits, dataset="x", resume=True) == sealed
    with pytest.raises(SegdeployError, match="changed since this run started: its train, test") as info:
        record_splits(tmp_path, {**splits, "train": ["a", "d"], "test": ["b"]}, dataset="x", resume=True)
    assert info.value.path == str(tmp_path / SPLITS_FILE)


# -- bug 2: the resume key includes the artifact ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bench_measures_a_file_exported_after_it_was_missing_and_a_recalibrated_one(trained, tmp_path):
    """int8 missing -> unavailable; export int8 -> the next bench measures it (it said "unavailable" before);
    re-export with another calibration -> measured again, and the study keeps only the latest row."""
    from segdeploy.bench.runner import run_bench
    from segdeploy.export import export_run, read_manifest
    from segdeploy.analysis.rows import load_rows

    run_dir, data, _ = trained
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    results = tmp_path / "r.jsonl"

    def bench():
        return {(r.backend, r.precision): r for r in run_bench([run], str(data), "torch,onnxruntime", "fp32,int8",
                                                                 results, device="cpu", **FAST)}

    first = bench()
    assert first["onnxruntime", "int8"].status == "unavailable"
    assert "no onnx/model.int8.onnx" in first["onnxruntime", "int8"].reason
    assert first["torch", "fp32"].ok
    assert len(read_jsonl(results)) == 4

    export_run(run, ["int8"], calib_images=4, parity_images=2, calib_method="minmax")
    second = bench()
    int8 = second["onnxruntime", "int8"]
    assert int8.ok, int8.reason
    assert first["torch", "fp32"].artifact_sha256 is not None
    # onnxruntime's CPU EP loads the CPU form of the int8 export: the artifact is that file, as the manifest hashed it
    assert int8.artifact_sha256 == read_manifest(run).precisions["int8"]["forms"]["cpu"]["sha256"]
    assert second["torch", "fp32"] == first["torch", "fp32"]  # same checkpoint: resumed, not re-measured
    # fp32 ONNX was not exported: still unavailable for the same reason, so the stored row stands (not appended)
    assert second["onnxruntime", "fp32"] == first["onnxruntime", "fp32"]
    assert len(read_jsonl(results)) == 5

    assert bench()["onnxruntime", "int8"] == int8  # nothing changed: resumed
    assert len(read_jsonl(results)) == 5

    export_run(run, ["int8"], calib_images=4, parity_images=2, calib_method="percentile")
    third = bench()["onnxruntime", "int8"]
    assert third.ok and third.timestamp >= int8.timestamp
    assert third.artifact_sha256 == read_manifest(run).precisions["int8"]["forms"]["cpu"]["sha256"] != int8.artifact_sha256
    stored = read_jsonl(results)
    assert len(stored) == 6 and stored[-1]["artifact_sha256"] == third.artifact_sha256
    # the study reads the latest row of each configuration: the re-calibrated file, not the stale one
    [study_int8] = [r for r in load_rows([results]) if (r.backend, r.precision) == ("onnxruntime", "int8")]
    assert study_int8.dice == pytest.approx(third.dice)


@pytest.mark.slow
def test_rows_without_an_artifact_are_measured_again(trained, tmp_path):
    """A row written before artifact_sha256 existed cannot say what it measured: it does not stand in for the
    checkpoint on disk now."""
    from segdeploy.bench.runner import run_bench
    from segdeploy.fileio import sha256_file

    run, data, _ = trained
    results = tmp_path / "r.jsonl"
    [row] = run_bench([run], str(data), "torch", "fp32", results, device="cpu", **FAST)
    assert row.artifact_sha256 == sha256_file(run / "model.safetensors")
    old = {k: v for k, v in read_jsonl(results)[0].items() if k != "artifact_sha256"}
    results.write_text(json.dumps(old) + "\n")
    [again] = run_bench([run], str(data), "torch", "fp32", results, device="cpu", **FAST)
    assert again.artifact_sha256 == row.artifact_sha256 and len(read_jsonl(results)) == 2


def test_config_key_carries_the_artifact_and_the_configuration_drops_it():
    from segdeploy.records import BenchRow
    from segdeploy.rowkeys import ConfigKey

    a = BenchRow(run="r", backend="onnxruntime", precision="int8", artifact_sha256="aa")
    b = BenchRow(run="r", backend="onnxruntime", precision="int8", artifact_sha256="bb")
    assert ConfigKey.of(a) != ConfigKey.of(b)
    assert ConfigKey.of(a).configuration() == ConfigKey.of(b).configuration()
    assert ConfigKey.of(a).artifact == "aa"


def test_tensorrt_artifact_is_the_build_record_of_todays_onnx(tmp_path):
    """No TensorRT needed: the key of a tensorrt row is its engine's build record while that record was built
    from the ONNX file on disk; a rebuild (new record) is a new artifact; an engine of another ONNX is none."""
    from segdeploy.bench.artifacts import artifact_sha256
    from segdeploy.engines.trt_build import engine_path, record_path
    from segdeploy.fileio import sha256_file
    from segdeploy.run.folder import Run, onnx_path

    from helpers import make_meta

    run = Run(dir=tmp_path, meta=make_meta())
    assert artifact_sha256(run, "tensorrt", "fp16") is None  # nothing exported
    onnx = onnx_path(tmp_path, "fp16")
    onnx.parent.mkdir()
    onnx.write_bytes(b"\x08\x07")  # ir_version 7, an empty but parseable ModelProto
    assert artifact_sha256(run, "onnxruntime", "fp16") == sha256_file(onnx)
    assert artifact_sha256(run, "tensorrt", "fp16") is None  # no engine yet: load() builds it
    engine_path(tmp_path, "fp16").parent.mkdir()
    engine_path(tmp_path, "fp16").write_bytes(b"engine")
    record = {"onnx_sha256": sha256_file(onnx), "tensorrt": "10.3.0", "built_at": "2026-01-01T00:00:00+00:00"}
    record_path(tmp_path, "fp16").write_text(json.dumps(record))
    first = artifact_sha256(run, "tensorrt", "fp16")
    assert first is not None and first != sha256_file(onnx)
    record_path(tmp_path, "fp16").write_text(json.dumps({**record, "built_at": "2026-01-02T00:00:00+00:00"}))
    assert artifact_sha256(run, "tensorrt", "fp16") not in (None, first)  # rebuilt: measured again
    record_path(tmp_path, "fp16").write_text(json.dumps({**record, "onnx_sha256": "0" * 64}))
    assert artifact_sha256(run, "tensorrt", "fp16") is None  # stale engine: load() rebuilds it first
