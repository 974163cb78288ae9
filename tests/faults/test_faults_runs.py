"""Fault catalogue, run folders and results: damaged checkpoints and metadata, NaN weights and logits, replaced
ONNX files, hostile external-data paths, bad bench values, unfinished runs, check baselines, two benches on one
results file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DATA, FAST_BENCH, assert_one_line_error, cli, legacy_onnx
from segdeploy.fileio import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _bench(run, results, backends="torch", *extra):
    return cli("bench", run, *FAST_BENCH, "--backends", backends, "--precisions", "fp32", "--results", results,
               *extra)


def _rows(results) -> dict:
    return {r["backend"]: r for r in read_jsonl(results)}


def _edit_meta(run: Path, **changes) -> None:
    meta = json.loads((run / "model.json").read_text())
    meta.update(changes)
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
    (run / "model.json").write_text(json.dumps(meta))


def _nan_weights(run: Path) -> None:
    weights = load_file(str(run / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(run / "model.safetensors"))


@pytest.mark.slow
def test_truncated_checkpoint_is_one_line_and_bench_keeps_the_onnx_rows(exported_copy, tmp_path):
    weights = exported_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for command in (["cam", exported_copy, "--data", DATA, "--out", tmp_path / "cam"], ["export", exported_copy]):
        assert_one_line_error(cli(*command), names=weights, says="truncated")
    results = tmp_path / "results.jsonl"
    result = _bench(exported_copy, results, "torch,onnxruntime")
    assert result.exit_code == 0, result.output  # the ONNX row ran
    rows = _rows(results)
    assert rows["onnxruntime"]["status"] == "ok" and rows["onnxruntime"]["dice"] is not None
    assert rows["torch"]["status"] == "failed" and str(weights) in rows["torch"]["reason"]


def test_nan_weights_are_named_by_export_cam_and_bench(tiny_run_copy, tmp_path):
    _nan_weights(tiny_run_copy)
    weights = tiny_run_copy / "model.safetensors"
    for command in (["export", tiny_run_copy, "--precisions", "fp32,fp16"],
                    ["cam", tiny_run_copy, "--data", DATA, "--out", tmp_path / "cam"]):
        assert_one_line_error(cli(*command), names=weights, says="NaN")
    results = tmp_path / "results.jsonl"
    result = _bench(tiny_run_copy, results)
    assert result.exit_code == 1  # nothing ran
    row = _rows(results)["torch"]
    assert row["status"] == "failed" and "NaN" in row["reason"] and row.get("dice") is None


@pytest.mark.slow
def test_non_finite_logits_make_the_bench_row_failed(tiny_run_copy, tmp_path):
    from segdeploy.run.folder import load_run, onnx_path

    run = load_run(tiny_run_copy)
    model = run.build_model()
    with torch.no_grad():
        model.segmentation_head[0].bias.fill_(float("inf"))  # inf - inf in the softmax-free logits: NaN/inf out
    path = legacy_onnx(model, onnx_path(tiny_run_copy, "fp32"), run.input_shape)
    results = tmp_path / "results.jsonl"
    result = _bench(tiny_run_copy, results, "onnxruntime")
    assert result.exit_code == 1, result.output
    row = _rows(results)["onnxruntime"]
    assert row["status"] == "failed" and "infinite" in row["reason"] and str(path) in row["reason"], row["reason"]
    assert row.get("dice") is None


@pytest.mark.parametrize("key", ["img_size", "num_classes", "mean"])
def test_missing_model_json_key_is_one_line(tiny_run_copy, tmp_path, key):
    _edit_meta(tiny_run_copy, **{key: None})
    for command in (["export", tiny_run_copy], ["cam", tiny_run_copy, "--data", DATA, "--out", tmp_path / "cam"],
                    ["bench", tiny_run_copy, *FAST_BENCH, "--results", tmp_path / "r.jsonl"]):
        assert_one_line_error(cli(*command), names=tiny_run_copy / "model.json", says=f"lacks {key}")


def test_num_classes_not_matching_the_checkpoint_is_one_line(tiny_run_copy):
    meta = json.loads((tiny_run_copy / "model.json").read_text())
    k = meta["num_classes"] + 2
    _edit_meta(tiny_run_copy, num_classes=k, classes=[f"c{i}" for i in range(k)])
    assert_one_line_error(cli("export", tiny_run_copy), names=tiny_run_copy / "model.json", says=f"num_classes {k}")


def test_gradcam_on_a_mask_with_out_of_range_labels_is_one_line(tiny_run_copy, tmp_path):
    import shutil

    from PIL import Image

    from segdeploy.data import open_dataset

    data = Path(shutil.copytree(open_dataset(DATA).root, tmp_path / "data"))
    masks = sorted((data / "masks").iterdir())
    for mask in masks:  # one stray pixel of class 9 in every mask (the set has 4 classes)
        arr = np.array(Image.open(mask))
        arr[0, 0] = 9
        Image.fromarray(arr).save(mask)
    result = cli("cam", tiny_run_copy, "--data", data, "--split", "all", "--out", tmp_path / "cam")
    assert_one_line_error(result, names=data / "masks", says="class index 9")


@pytest.mark.parametrize("option, value, says", [("--precisions", "fp64", "unknown precision"),
                                                 ("--backends", "nonsense", "unknown backend"),
                                                 ("--max-images", "0", "--max-images 0")])
def test_bench_values_that_name_nothing_are_rejected_before_any_work(tiny_run_copy, tmp_path, option, value, says):
    results = tmp_path / "results.jsonl"
    args = [a for a in FAST_BENCH]
    if option in args:
        i = args.index(option)
        del args[i:i + 2]
    defaults = {"--precisions": "fp32", "--backends": "torch"}
    defaults.pop(option, None)
    result = cli("bench", tiny_run_copy, *args, *sum(([k, v] for k, v in defaults.items()), []), option, value,
                 "--results", results)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert not results.exists()  # no row stored, nothing measured


def test_bench_where_nothing_ran_exits_non_zero(tiny_run_copy, tmp_path):
    results = tmp_path / "results.jsonl"
    result = _bench(tiny_run_copy, results, "onnxruntime")  # never exported
    assert result.exit_code == 1, result.output
    assert _rows(results)["onnxruntime"]["status"] == "unavailable"  # the row with its reason is still stored


def test_unfinished_run_is_marked_in_the_row_and_the_table(tiny_run_copy, tmp_path):
    _edit_meta(tiny_run_copy, complete=False)
    results = tmp_path / "results.jsonl"
    result = _bench(tiny_run_copy, results)
    assert result.exit_code == 0, result.output
    assert "unfinished" in result.output and "warning:" in result.output
    assert _rows(results)["torch"]["run_complete"] is False


def test_onnx_replaced_by_another_export_is_refused(exported_copy, tmp_path):
    from segdeploy.models import create_model
    from segdeploy.run.folder import load_run, onnx_path

    run = load_run(exported_copy)
    torch.manual_seed(123)
    other = create_model("unet-tiny", num_classes=run.meta.num_classes, in_chans=run.meta.in_chans,
                         img_size=64).eval()
    path = legacy_onnx(other, onnx_path(exported_copy, "fp32"), run.input_shape)
    results = tmp_path / "results.jsonl"
    result = _bench(exported_copy, results, "onnxruntime")
    assert result.exit_code == 1, result.output
    row = _rows(results)["onnxruntime"]
    assert row["status"] == "failed" and "sha256" in row["reason"] and str(path) in row["reason"]
    assert f"segdeploy export {exported_copy}" in row["reason"]


def _onnx_with_external_data(path: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "8")):
        entry = weight.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[weight])
    onnx.save_model(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location", ["../../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    from segdeploy.engines import onnx_files
    from segdeploy.engines.trt_build import onnx_digest
    from segdeploy.errors import SegdeployError

    (tmp_path / "run" / "onnx").mkdir(parents=True)
    path = _onnx_with_external_data(tmp_path / "run" / "onnx" / "model.fp32.onnx", location)
    for helper_fn in (onnx_files, onnx_digest):
        with pytest.raises(SegdeployError, match="outside the model's folder") as info:
            helper_fn(path)
        assert str(path) in str(info.value)
    inside = _onnx_with_external_data(tmp_path / "run" / "onnx" / "model.fp16.onnx", "model.fp16.onnx.data")
    assert onnx_files(inside) == [inside, inside.parent / "model.fp16.onnx.data"]


def _results_and_baseline(tmp_path, baseline_dice: str):
    results, baseline = tmp_path / "results.jsonl", tmp_path / "baseline.json"
    row = {"dataset": "d", "model": "m", "backend": "torch", "precision": "fp32", "device": "cpu", "split": "test",
           "status": "ok", "dice": 0.8}
    results.write_text(json.dumps(row) + "\n")
    entry = {k: row[k] for k in ("dataset", "model", "backend", "precision", "device", "split")}
    baseline.write_text('{"schema": "segdeploy.baseline/1", "tolerance_dice_points": 1.0, "entries": [%s]}'
                        % json.dumps({**entry, "dice": "DICE"}).replace('"DICE"', baseline_dice))
    return results, baseline


def test_check_rejects_a_baseline_with_nan_dice(tmp_path):
    results, baseline = _results_and_baseline(tmp_path, "NaN")
    assert_one_line_error(cli("check", results, "--baseline", baseline), names=baseline, says="nan")
    results, baseline = _results_and_baseline(tmp_path, "0.8")
    assert cli("check", results, "--baseline", baseline).exit_code == 0


def test_check_tolerance_that_is_not_a_number_is_a_usage_error(tmp_path):
    # already a click usage error before this catalogue (exit 2, no traceback); kept so it stays one
    results, baseline = _results_and_baseline(tmp_path, "0.8")
    result = cli("check", results, "--baseline", baseline, "--tolerance", "abc")
    assert result.exit_code == 2 and "--tolerance" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_second_bench_on_one_results_file_is_refused_then_kill_9(tiny_run_copy, tmp_path):
    results = tmp_path / "results.jsonl"
    note = tmp_path / ".results.jsonl.lock.holder.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "240"}
    args = ["bench", tiny_run_copy, *FAST_BENCH, "--backends", "torch", "--precisions", "fp32", "--results", results]
    slow = list(args)
    slow[slow.index("--duration") + 1] = "600"  # timing until killed
    child = subprocess.Popen([sys.executable, "-m", "segdeploy.commands.app", *map(str, slow)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 240
        while not note.exists():
            assert child.poll() is None, child.stdout.read()
            assert time.monotonic() < end, "the bench never took a lock on its results file"
            time.sleep(0.2)
        result = cli(*args)
        assert_one_line_error(result, names=results, says=f"in use by segdeploy bench (pid {child.pid}")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    result = cli(*args)  # the lock died with the killed process
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in read_jsonl(results)] == ["ok"]  # one row: the killed bench wrote none


def test_require_finite_counts_what_is_not_finite():
    from segdeploy.numerics import NonFinite, nonfinite_tensors, require_finite

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert require_finite(logits, "torch fp32 logits") is logits
    nan_at, inf_at = rng.choice(logits.size, 7, replace=False), rng.choice(logits.size, 3, replace=False)
    logits.flat[nan_at] = np.nan
    logits.flat[np.setdiff1d(inf_at, nan_at)] = np.inf
    n_nan, n_inf = int(np.isnan(logits).sum()), int(np.isinf(logits).sum())
    with pytest.raises(NonFinite, match=rf"{n_nan} NaN and {n_inf} infinite values \(of {logits.size}\)") as info:
        require_finite(logits, "onnxruntime fp16 logits", "onnx/model.fp16.onnx")
    assert str(info.value).startswith("onnx/model.fp16.onnx: onnxruntime fp16 logits")
    assert require_finite(np.array([1, 2]), "class ids") is not None  # integers are always finite
    tensors = {"a": torch.tensor([1.0, float("nan")]), "b": torch.ones(2), "c": torch.tensor([1, 2]),
               "d": np.array([np.inf]), "e": torch.tensor([1.0], dtype=torch.float16)}
    assert nonfinite_tensors(tensors) == ["a", "d"]
