"""segdeploy export: fp32/fp16/int8 files, parity vs PyTorch, TensorRT-style Q/DQ, manifest, failures."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import typer
from onnx import numpy_helper
from typer.testing import CliRunner

from segdeploy.errors import SegdeployError
from segdeploy.export import export_run, read_manifest
from segdeploy.export.onnx_export import export_onnx, ort_session, parity
from segdeploy.export.quantize import ArrayCalibrationReader, qdq_report
from segdeploy.fileio import sha256_file
from segdeploy.run.folder import Run, load_run, manifest_path, onnx_path

from helpers import make_meta, make_run

SIZE = 64


def _make_run(run_dir, model_name: str = "unet-tiny"):
    # the synthetic set is grayscale with 4 classes in cases of 6 slices: 24 images = 4 patient groups, so
    # one test group and k=3 folds over the other three (make_meta's defaults)
    return make_run(run_dir, make_meta(model=model_name, spec="synthetic:24", img_size=SIZE))


def _cli():
    from segdeploy.commands.export import export

    app = typer.Typer()
    app.command()(export)
    app.command("unused")(lambda: None)  # two commands: typer then expects the command name first
    return app


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One unet-tiny run exported to fp32/fp16/int8 through the CLI (module scope: the export is the slow part)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGDEPLOY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_dir = _make_run(tmp_path_factory.mktemp("run"))
        result = CliRunner().invoke(_cli(), ["export", str(run_dir), "--calib-images", "8", "--parity-images", "4"])
    return run_dir, read_manifest(run_dir), result


@pytest.mark.slow  # exports every precision through the CLI
def test_cli_exits_0_and_prints_the_table(exported):
    _, _, result = exported
    assert result.exit_code == 0, result.output
    for word in ("fp32", "fp16", "int8", "model.int8.onnx", "int8 (cpu)", "model.int8-cpu.onnx", "ok"):
        assert word in result.output


def test_manifest_lists_every_file(exported):
    run_dir, manifest, _ = exported
    assert manifest.model == "unet-tiny"
    assert manifest.input == {"name": "input", "shape": ["batch", 1, SIZE, SIZE], "dtype": "float32"}
    assert manifest.output["shape"] == ["batch", 4, SIZE, SIZE]
    assert {"torch", "onnx", "onnxruntime", "created"} <= set(manifest.to_json()) and manifest.schema == "segdeploy.manifest/1"
    assert set(manifest.precisions) == {"fp32", "fp16", "int8"}
    for precision, entry in manifest.precisions.items():
        path = onnx_path(run_dir, precision)
        assert entry["status"] == "ok", entry
        assert entry["file"] == f"onnx/model.{precision}.onnx"
        assert entry["sha256"] == sha256_file(path)
        assert entry["size_mb"] == pytest.approx(path.stat().st_size / 2**20, abs=1e-3)
        assert entry["opset"] >= 17 and entry["exporter"] == "dynamo"
        assert 1 <= entry["parity"]["n_images"] <= 4
        onnx.checker.check_model(str(path))
        # every precision takes and returns float32 with a symbolic batch axis
        session = ort_session(path)
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        assert (inp.name, inp.type, out.name, out.type) == ("input", "tensor(float)", "logits", "tensor(float)")
        assert isinstance(inp.shape[0], str)


def test_fp32_parity_against_pytorch(exported):
    run_dir, manifest, _ = exported
    recorded = manifest.precisions["fp32"]["parity"]
    assert recorded["max_abs_diff"] < 1e-4 and recorded["argmax_agreement"] == 1.0
    # recomputed independently of parity(): plain ORT at batch 1 and 3 against the checkpoint's model
    model = load_run(run_dir).build_model()
    session = ort_session(onnx_path(run_dir, "fp32"))
    x = np.random.default_rng(5).standard_normal((3, 1, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for batch in (x[:1], x):
        got = session.run(["logits"], {"input": batch})[0]
        assert np.abs(got - ref[: len(batch)]).max() < 1e-4


def test_fp16_has_half_weights_and_close_outputs(exported):
    run_dir, manifest, _ = exported
    model = onnx.load(str(onnx_path(run_dir, "fp16")))
    dtypes = {t.data_type for t in model.graph.initializer if len(t.dims) == 4}  # conv kernels
    assert dtypes == {onnx.TensorProto.FLOAT16}
    p = manifest.precisions["fp16"]["parity"]
    assert 0 < p["max_abs_diff"] < 0.02 * max(1.0, p["ref_abs_max"])
    assert p["argmax_agreement"] > 0.99


def test_int8_is_tensorrt_style_qdq(exported):
    run_dir, manifest, _ = exported
    entry = manifest.precisions["int8"]
    path = onnx_path(run_dir, "int8")
    assert entry["qdq"] == qdq_report(path)
    assert entry["qdq"]["quantize_linear"] > 0 and entry["qdq"]["dequantize_linear"] > 0
    assert entry["qdq"]["all_zero_points_zero"] and entry["qdq"]["per_channel_weights"] and entry["qdq"]["int8_only"]
    assert entry["qdq"]["weight_storage"] == "int8"
    assert entry["calibration"]["method"] == "minmax" and entry["calibration"]["split"] == "train"
    assert entry["form"] == "tensorrt" and entry["forms"]["tensorrt"]["file"] == "onnx/model.int8.onnx"
    assert "tensorrt" in entry["forms"]["tensorrt"]["backends"]
    # direct look at the graph: every Conv kernel is an int8 initializer read by a DQ alone (ModelOpt's --dq_only
    # form), with one int8 zero-point 0 per output channel; no float kernel is left in the file
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        kernel = inits[dq.input[0]]
        scale, zero_point = inits[dq.input[1]], inits[dq.input[2]]
        assert kernel.dtype == np.int8 and kernel.ndim == 4 and np.abs(kernel.astype(int)).max() <= 127
        assert scale.shape == (kernel.shape[0],)
        assert zero_point.dtype == np.int8 and not zero_point.any()
    assert not any(t.ndim == 4 and t.dtype == np.float32 for t in inits.values())
    assert entry["parity"]["argmax_agreement"] > 0.9


def test_qdq_report_catches_asymmetric_quantization(exported, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    run_dir, _, _ = exported
    out = tmp_path / "asym.onnx"
    calib = np.random.default_rng(0).standard_normal((4, 1, SIZE, SIZE), dtype=np.float32)
    # ORT's defaults: uint8 activations with non-zero zero-points, which TensorRT rejects
    quantize_static(str(onnx_path(run_dir, "fp32")), str(out), ArrayCalibrationReader(calib),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)
    report = qdq_report(out)
    assert report["quantize_linear"] > 0 and report["weight_storage"] == "int8"
    assert not report["all_zero_points_zero"] and not report["int8_only"] and not report["per_channel_weights"]


@pytest.mark.slow  # exports every precision again
def test_failed_precision_is_reported_and_others_kept(exported, tmp_path, monkeypatch):
    import onnxruntime.transformers.float16 as ort_float16

    run_dir = shutil.copytree(exported[0], tmp_path / "run")
    before = read_manifest(run_dir).precisions

    def broken(*args, **kwargs):
        raise ValueError("fp16 conversion broke")

    monkeypatch.setattr(ort_float16, "convert_float_to_float16", broken)
    manifest = export_run(run_dir, ["fp16"], parity_images=2)
    fp16 = manifest.precisions["fp16"]
    assert fp16["status"] == "failed" and "fp16 conversion broke" in fp16["error"] and fp16["file"] is None
    assert not onnx_path(run_dir, "fp16").exists()  # no stale file left for an engine to pick up
    assert manifest.precisions["fp32"] == before["fp32"] and manifest.precisions["int8"] == before["int8"]

    monkeypatch.undo()
    manifest = export_run(run_dir, ["fp16"], parity_images=2)
    assert manifest.precisions["fp16"]["status"] == "ok"
    assert manifest.precisions["fp16"]["sha256"] == sha256_file(onnx_path(run_dir, "fp16"))
    assert manifest.precisions["fp32"] == before["fp32"]


def test_dynamo_failure_falls_back_to_legacy_exporter(tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def dynamo_broken(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_broken)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 3, 1)).eval()
    info = export_onnx(model, tmp_path / "m.onnx", (3, SIZE, SIZE))
    assert info["exporter"] == "legacy" and info["opset"] == 17
    assert "simulated dynamo failure" in info["dynamo_error"]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE), dtype=np.float32)
        assert parity(tmp_path / "m.onnx", model, x)["max_abs_diff"] < 1e-4


class _Unexportable(nn.Module):
    """Eigenvalues have no ONNX op in either exporter."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(1, 4, 1)

    def forward(self, x):
        return self.head(x) + torch.linalg.eigvals(x).real.mean()


def test_unexportable_model_fails_its_entries_and_exits_1(tmp_path, monkeypatch):
    run_dir = _make_run(tmp_path / "run")
    monkeypatch.setattr(Run, "build_model", lambda self: _Unexportable().eval())
    result = CliRunner().invoke(_cli(), ["export", str(run_dir), "--precisions", "fp32,fp16", "--parity-images", "2"])
    assert result.exit_code == 1, result.output
    entries = read_manifest(run_dir).precisions
    assert entries["fp32"]["status"] == "failed" and "linalg_eig" in entries["fp32"]["error"]
    assert entries["fp16"]["status"] == "failed" and entries["fp16"]["error"].startswith("the fp32 export failed")
    assert not onnx_path(run_dir, "fp32").exists()


@pytest.mark.parametrize("kwargs", [{"precisions": ["bf16"]}, {"calib_method": "mse"}, {"opset": 13}])
def test_bad_arguments_are_user_errors(tmp_path, kwargs):
    run_dir = _make_run(tmp_path / "run")
    with pytest.raises(SegdeployError):
        export_run(run_dir, **kwargs)
    assert not manifest_path(run_dir).exists()
