"""--calib-method entropy is its own calibration: with onnxruntime's default 128-bin histogram the KL search had one
candidate threshold and wrote minmax's file byte for byte; with 2048 bins it clips activations minmax keeps."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from segdeploy.export.onnx_export import export_onnx
from segdeploy.export.quantize import quantize_int8
from segdeploy.models import create_model


def _activation_scales(path) -> dict[str, float]:
    """Scale of every activation QuantizeLinear (input not an initializer), by the tensor it quantizes."""
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


@pytest.mark.slow  # two calibrations of a unet: about 40 s on a loaded 2-core machine
def test_entropy_calibration_differs_from_minmax_and_clips(tmp_path):
    torch.manual_seed(0)
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(create_model("unet-tiny", num_classes=3, in_chans=1, img_size=64).eval(), fp32, (1, 64, 64))
    # heavy-tailed inputs: a few large values, which minmax covers and the KL threshold cuts off
    calib = np.random.default_rng(0).standard_t(3, (8, 1, 64, 64)).astype(np.float32)
    files = {}
    for method in ("minmax", "entropy"):
        files[method] = tmp_path / f"{method}.onnx"
        info = quantize_int8(fp32, files[method], calib, method)
        assert info["calibration"]["method"] == method
    assert info["calibration"]["histogram_bins"] == 2048
    assert files["minmax"].read_bytes() != files["entropy"].read_bytes()
    minmax, entropy = _activation_scales(files["minmax"]), _activation_scales(files["entropy"])
    assert minmax.keys() == entropy.keys() and minmax
    # entropy's threshold lies within the observed range, so its scale never exceeds minmax's; here it clips
    assert all(entropy[t] <= minmax[t] * (1 + 1e-5) for t in minmax)
    assert sum(entropy[t] < 0.9 * minmax[t] for t in minmax) >= 1


def test_quantizing_an_unpreprocessed_model_records_why_and_prints_no_advice(tmp_path, monkeypatch, caplog):
    """When quant_pre_process fails, the manifest entry says so (preprocess_error); onnxruntime's advice to
    pre-process, logged twice on the root logger, is not repeated on the user's console."""
    from onnx import TensorProto, helper

    import segdeploy.export.quantize as quantize

    conv = helper.make_node("Conv", ["input", "w"], ["logits"], pads=[1, 1, 1, 1])
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])], [weight])
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(fp32))
    monkeypatch.setattr(quantize, "quant_pre_process", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    calib = np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32)
    with caplog.at_level("WARNING"):
        info = quantize_int8(fp32, tmp_path / "int8.onnx", calib)
    assert info["preprocessed"] is False and "no" in info["preprocess_error"]
    assert not [r for r in caplog.records if "pre-process" in r.getMessage()]
    assert (tmp_path / "int8.onnx").stat().st_size > 0
    logging_root = __import__("logging").getLogger()
    assert not logging_root.filters  # the filter is gone after the call


def test_a_failed_preprocessing_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference saves its partial model (sym_shape_infer_temp.onnx and a <uuid>.data
    as large as the weights) into the working directory when it fails; the export runs it elsewhere."""
    import os

    import segdeploy.export.quantize as quantize

    def failing_pre_process(src, dst):
        with open("sym_shape_infer_temp.onnx", "wb") as f:  # what onnxruntime writes, relative to the cwd
            f.write(b"partial")
        raise RuntimeError("Incomplete symbolic shape inference")

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(quantize, "quant_pre_process", failing_pre_process)
    (tmp_path / "out").mkdir()
    source, info = quantize.preprocess_for_quantization(tmp_path / "m.onnx", tmp_path / "out" / "pre.onnx")
    assert info["preprocessed"] is False and "Incomplete" in info["preprocess_error"]
    assert source == tmp_path / "m.onnx" and os.listdir(work) == [] and os.getcwd() == str(work)
