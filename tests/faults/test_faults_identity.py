"""Fault catalogue, identity: what a number is of. A dataset folder copied under another name (still the run's
dataset: its recorded test ids, never its training images), ONNX files of an earlier checkpoint, an export stopped
half-way, a study's dataset changed between runs, weight files that are not what they claim, a full disk in a
study."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DATA, FAST_BENCH, TRAIN_ARGS, assert_one_line_error, cli
from segdeploy.fileio import read_jsonl


def _bench(run, results, backends="torch", *extra):
    return cli("bench", run, *FAST_BENCH, "--backends", backends, "--precisions", "fp32", "--results", results,
               "--isolate", "none", *extra)  # in this process: the check is the same, the test 3x faster


def _rows(results) -> dict:
    return {r["backend"]: r for r in read_jsonl(results)}  # the last row of each backend


def _change_weights(run: Path) -> None:
    """What a retraining, a resume or a hand edit does to the checkpoint: other (finite) weights, same shapes."""
    weights = load_file(str(run / "model.safetensors"))
    for name, tensor in weights.items():
        if tensor.is_floating_point() and tensor.dim() == 4:  # every conv kernel: the logits change visibly
            weights[name] = tensor * 0.5 + 0.01
    save_file(weights, str(run / "model.safetensors"))


# -- bug 1: a renamed or copied dataset folder is still the run's dataset -----------------------------------------

def _renamed_copy(tiny_run: Path, dst: Path, *, delete: str = "train") -> tuple[Path, dict]:
    """``cp -r DATA DATA2``, 6 new images (a new case), one recorded image of ``delete``'s split removed."""
    import numpy as np
    from PIL import Image

    from segdeploy.data import open_dataset

    copy = Path(shutil.copytree(open_dataset(DATA).root, dst))
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(copy / "images" / f"case900_slice{k}.png")
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(copy / "masks" / f"case900_slice{k}.png")
    _per_image_split(copy)
    recorded = json.loads((tiny_run / "splits.json").read_text())
    gone = recorded[delete][0]
    for folder in ("images", "masks"):
        (copy / folder / f"{gone}.png").unlink()
    return copy, recorded


def _per_image_split(folder: Path) -> None:
    """No group_regex: the folder's own default split (k = 5) exists for a few cases, as on a real dataset."""
    meta = json.loads((folder / "meta.json").read_text())
    del meta["group_regex"]
    (folder / "meta.json").write_text(json.dumps(meta))


def _bench_on(run, data, results):
    return cli("bench", run, "--data", data, "--device", "cpu", "--batch", "2", "--warmup", "0", "--duration", "0",
               "--min-iters", "2", "--backends", "torch", "--precisions", "fp32", "--results", results,
               "--isolate", "none")


def test_a_renamed_copy_of_the_training_folder_is_scored_on_the_runs_test_ids_only(tiny_run, tmp_path):
    from segdeploy.data import open_dataset
    from segdeploy.run.folder import load_run

    copy, recorded = _renamed_copy(tiny_run, tmp_path / "DATA2")
    run = load_run(tiny_run)
    dataset = open_dataset(str(copy))
    assert dataset.name not in run.meta.dataset.names()  # another name: matched by content
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = run.split_ids(dataset, "test")
    assert not set(ids) & set(recorded["train"] + recorded["val"])  # before: 3 of 6 were training images
    assert ids == recorded["test"]
    assert any(re.search("holds run .* images", str(w.message)) for w in caught)
    results = tmp_path / "results.jsonl"
    result = _bench_on(tiny_run, copy, results)
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(results)
    assert row["status"] == "ok" and row["n_images"] == len(recorded["test"]) and row["dataset"] == "DATA2"


def test_a_renamed_copy_missing_a_recorded_test_image_is_refused(tiny_run, tmp_path):
    copy, recorded = _renamed_copy(tiny_run, tmp_path / "DATA3", delete="test")
    result = _bench_on(tiny_run, copy, tmp_path / "results.jsonl")
    assert_one_line_error(result, names=copy, says="recorded test images are no longer in dataset DATA3")
    assert recorded["test"][0] in result.output


def test_a_run_without_pixel_digests_falls_back_to_the_name_with_a_warning(tiny_run_copy, tmp_path):
    from segdeploy.data import open_dataset
    from segdeploy.run.folder import load_run

    meta = json.loads((tiny_run_copy / "model.json").read_text())
    del meta["split"]["ids_sha256"]["pixels"]  # as a run trained before the digests were recorded
    (tiny_run_copy / "model.json").write_text(json.dumps(meta))
    copy, _ = _renamed_copy(tiny_run_copy, tmp_path / "DATA4")
    dataset = open_dataset(str(copy))
    with pytest.warns(UserWarning, match="records no pixel digests"):
        ids = load_run(tiny_run_copy).split_ids(dataset, "test")
    assert ids == dataset.split("test")  # today's behaviour: the folder's own split


def test_another_dataset_that_reuses_the_ids_is_not_the_runs(tiny_run, tmp_path):
    """Same ids, other pixels: a dataset of its own (its own split), not refused for the run's missing test ids."""
    import numpy as np
    from PIL import Image

    from segdeploy.data import open_dataset
    from segdeploy.run.folder import load_run

    other = Path(shutil.copytree(open_dataset(DATA).root, tmp_path / "other"))
    for path in (other / "images").iterdir():
        image = np.asarray(Image.open(path))
        Image.fromarray((255 - image).astype(np.uint8)).save(path)
    _per_image_split(other)
    dataset = open_dataset(str(other))
    assert load_run(tiny_run).split_ids(dataset, "test") == dataset.split("test")


# -- bug 2: ONNX files of another checkpoint ---------------------------------------------------------------------

@pytest.mark.slow
def test_onnx_of_an_earlier_checkpoint_is_refused_naming_the_re_export(exported_copy, tmp_path):
    weights = exported_copy / "model.safetensors"
    entry = json.loads((exported_copy / "onnx" / "manifest.json").read_text())["precisions"]["fp32"]
    assert entry["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    results = tmp_path / "results.jsonl"
    assert _bench(exported_copy, results, "torch,onnxruntime").exit_code == 0
    before = _rows(results)
    assert before["onnxruntime"]["status"] == "ok"
    assert before["onnxruntime"]["dice"] == pytest.approx(before["torch"]["dice"], abs=1e-3)

    _change_weights(exported_copy)
    result = _bench(exported_copy, results, "torch,onnxruntime")  # the stored onnxruntime row is not reused
    rows = _rows(results)
    assert rows["torch"]["status"] == "ok" and rows["torch"]["dice"] != before["torch"]["dice"]
    onnx_row = rows["onnxruntime"]
    assert onnx_row["status"] == "failed" and onnx_row.get("dice") is None, onnx_row
    assert "another checkpoint" in onnx_row["reason"]
    assert f"segdeploy export {exported_copy}" in onnx_row["reason"], onnx_row["reason"]
    assert "Traceback" not in result.output

    assert cli("export", exported_copy, "--precisions", "fp32", "--parity-images", "2").exit_code == 0
    assert _bench(exported_copy, results, "torch,onnxruntime").exit_code == 0
    rows = _rows(results)
    assert rows["onnxruntime"]["status"] == "ok"
    assert rows["onnxruntime"]["dice"] == pytest.approx(rows["torch"]["dice"], abs=1e-3)


def test_a_damaged_checkpoint_is_not_another_checkpoint(exported_copy, tmp_path):
    """Truncation is damage, not a retraining: the last export stays usable (the torch row names the damage)."""
    from segdeploy.engines.integrity import verify_onnx
    from segdeploy.run.folder import load_run

    weights = exported_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    verify_onnx(load_run(exported_copy), "fp32")  # no error


def test_an_export_stopped_half_way_leaves_no_file_it_did_not_finish(exported_copy, monkeypatch):
    from segdeploy.export import export_run, pipeline, read_manifest
    from segdeploy.run.folder import onnx_path

    def killed(src, dst, *args, **kwargs):
        Path(dst).write_bytes(b"half an ONNX file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "convert_fp16", killed)  # imported at the top of the pipeline
    _change_weights(exported_copy)
    with pytest.raises(KeyboardInterrupt):
        export_run(exported_copy, ["fp32", "fp16"], parity_images=2)
    assert not onnx_path(exported_copy, "fp16").exists()
    entry = read_manifest(exported_copy).precisions["fp32"]  # finished before the stop: recorded
    assert entry["status"] == "ok" and onnx_path(exported_copy, "fp32").is_file()
    digest = hashlib.sha256((exported_copy / "model.safetensors").read_bytes()).hexdigest()
    assert entry["checkpoint_sha256"] == digest
    assert "fp16" not in read_manifest(exported_copy).precisions


# -- poor paths: weight files that are not what they claim; a full disk in a study ------------------------------

class _Payload:
    """What a hostile weights file carries: unpickling it calls open(marker, "w")."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch-zip", "safetensors", "not-a-state-dict"])
def test_train_refuses_a_weights_file_it_cannot_load_safely_in_one_line(tmp_path, kind):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / ("bad.safetensors" if kind == "safetensors" else "evil.pt")
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"conv.weight": _Payload(marker)}))
    elif kind == "torch-zip":
        torch.save({"state_dict": {"conv.weight": _Payload(marker)}}, path)
    elif kind == "safetensors":
        path.write_bytes(b"\x10\0\0\0\0\0\0\0{not a header}...")
    else:
        torch.save([torch.zeros(2)], path)
    result = cli("train", *TRAIN_ARGS, "--epochs", "1", "--out", tmp_path / "run", "--weights", path)
    assert_one_line_error(result, names=path, says=".safetensors")
    assert not marker.exists()  # nothing in the file ran


def test_a_full_disk_in_a_study_says_to_re_run_the_study(tmp_path, monkeypatch):
    from segdeploy.fileio import write_failed
    from segdeploy.study.runner import run_study
    from segdeploy.train import loop

    def disk_full(cfg, progress=True):
        import errno

        raise write_failed(Path(cfg.out) / "train_state.safetensors", OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(loop, "_train_model", disk_full)
    study = tmp_path / "s.toml"
    study.write_text('models = ["unet-tiny"]\ndatasets = ["synthetic:24"]\nk = 2\nfolds = [0]\nlr = [1e-3]\n'
                     'epochs = 1\nimg_size = 64\nbackends = ["torch"]\nprecisions = ["fp32"]\n')
    out = tmp_path / "out"
    result = run_study(study, out)
    assert result.failed == 1
    (row,) = read_jsonl(out / "results.jsonl")
    assert "No space left on device" in row["reason"]
    assert f"segdeploy study run {study} --out {out}" in row["reason"], row["reason"]
    assert "--restart" not in row["reason"] and "--resume" not in row["reason"]


# -- bug 5: a study's dataset changed between two runs -----------------------------------------------------------

def _fake_cells(monkeypatch, ran: list):
    """Cells that finish at once with one ok row each (the study machinery around them is real)."""
    from segdeploy.study.cell import CellOutcome
    from segdeploy.study.executors import local

    def run_cell(config, cell, study_dir):
        ran.append(cell.cell_id)
        (Path(study_dir) / "cells" / cell.cell_id).mkdir(parents=True, exist_ok=True)
        row = {"study": cell.study_field(), "backend": "torch", "precision": "fp32", "status": "ok", "dice": 0.5,
               "val_dice": 0.5, "dataset": cell.dataset_name}
        return CellOutcome(cell.cell_id, "ok", [row], 0.0, "done")

    monkeypatch.setattr(local, "run_cell", run_cell)


def test_a_study_refuses_a_dataset_changed_between_runs_unless_forced(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from segdeploy.data import open_dataset
    from segdeploy.study.runner import run_study

    data = Path(shutil.copytree(open_dataset(DATA).root, tmp_path / "data" / "echo"))
    study = tmp_path / "s.toml"
    study.write_text(f'models = ["unet-tiny"]\ndatasets = ["{data}"]\nk = 2\nfolds = [0, 1]\nlr = [1e-3]\n'
                     'epochs = 1\nimg_size = 64\nbackends = ["torch"]\nprecisions = ["fp32"]\n')
    out, ran = tmp_path / "out", []
    _fake_cells(monkeypatch, ran)
    assert run_study(study, out).ok == 2 and len(ran) == 2
    assert run_study(study, out).done_before == 2 and len(ran) == 2  # unchanged: nothing redone

    for k in range(6):  # a new case, and one image deleted
        Image.fromarray(np.full((64, 64), 40 * k, np.uint8)).save(data / "images" / f"case900_slice{k}.png")
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "masks" / f"case900_slice{k}.png")
    for folder in ("images", "masks"):
        (data / folder / "case001_slice3.png").unlink()
    result = cli("study", "run", study, "--out", out)
    assert_one_line_error(result, names=study, says=f"dataset {data} changed since this study was planned")
    assert "6 added (case900_slice0, case900_slice1, case900_slice2, ...)" in result.output
    assert "1 removed (case001_slice3)" in result.output and "--force" in result.output
    assert len(ran) == 2 and len(read_jsonl(out / "results.jsonl")) == 2  # nothing ran, nothing dropped

    again = run_study(study, out, force=True)  # the cells trained on it are redone
    assert (again.done_before, again.ok) == (0, 2) and len(ran) == 4
    assert run_study(study, out).done_before == 2  # the new content is the plan's now


def test_a_modified_image_is_named(tmp_path, monkeypatch):
    from segdeploy.data import open_dataset
    from segdeploy.study.runner import run_study

    data = Path(shutil.copytree(open_dataset(DATA).root, tmp_path / "data" / "echo"))
    study = tmp_path / "s.toml"
    study.write_text(f'models = ["unet-tiny"]\ndatasets = ["{data}"]\nk = 2\nfolds = [0]\nlr = [1e-3]\n'
                     'epochs = 1\nimg_size = 64\nbackends = ["torch"]\nprecisions = ["fp32"]\n')
    _fake_cells(monkeypatch, [])
    run_study(study, tmp_path / "out")
    mask = data / "masks" / "case002_slice1.png"
    mask.write_bytes(mask.read_bytes() + b"\0")  # same pixels for PIL, other bytes: the file changed
    with pytest.raises(Exception, match=r"1 modified \(case002_slice1\)"):
        run_study(study, tmp_path / "out")
