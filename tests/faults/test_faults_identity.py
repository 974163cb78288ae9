"""Fault catalogue, identity: what a number is of. A dataset folder copied under another name (still the run's
dataset: its recorded test ids, never its training images), ONNX files of an earlier checkpoint, an export stopped
half-way, a study's dataset changed between runs, weight files that are not what they claim, a full disk in a
study."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DATA, FAST_BENCH, TRAIN_ARGS, assert_one_line_error, cli
from segdeploy.fileio import read_jsonl


def _bench(run, results, backends="torch", *extra):
    return cli("bench", run, *FAST_BENCH, "--backends", backends, "--precisions", "fp32", "--results", results,
               *extra)


def _rows(results) -> dict:
    return {r["backend"]: r for r in read_jsonl(results)}  # the last row of each backend


def _change_weights(run: Path) -> None:
    """What a retraining, a resume or a hand edit does to the checkpoint: other (finite) weights, same shapes."""
    weights = load_file(str(run / "model.safetensors"))
    for name, tensor in weights.items():
        if tensor.is_floating_point() and tensor.dim() == 4:  # every conv kernel: the logits change visibly
            weights[name] = tensor * 0.5 + 0.01
    save_file(weights, str(run / "model.safetensors"))


# -- bug 2: ONNX files of another checkpoint ---------------------------------------------------------------------

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
    from segdeploy.runs import load_run

    weights = exported_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    verify_onnx(load_run(exported_copy), "fp32")  # no error


def test_an_export_stopped_half_way_leaves_no_file_it_did_not_finish(exported_copy, monkeypatch):
    from segdeploy.export import export_run, precision, read_manifest
    from segdeploy.runs import onnx_path

    def killed(src, dst, *args, **kwargs):
        Path(dst).write_bytes(b"half an ONNX file")
        raise KeyboardInterrupt

    monkeypatch.setattr(precision, "convert_fp16", killed)
    _change_weights(exported_copy)
    with pytest.raises(KeyboardInterrupt):
        export_run(exported_copy, ["fp32", "fp16"], parity_images=2)
    assert not onnx_path(exported_copy, "fp16").exists()
    entry = read_manifest(exported_copy)["precisions"]["fp32"]  # finished before the stop: recorded
    assert entry["status"] == "ok" and onnx_path(exported_copy, "fp32").is_file()
    digest = hashlib.sha256((exported_copy / "model.safetensors").read_bytes()).hexdigest()
    assert entry["checkpoint_sha256"] == digest
    assert "fp16" not in read_manifest(exported_copy)["precisions"]


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
