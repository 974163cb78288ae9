"""INT8 forms: weights stored as int8 behind a DequantizeLinear (a quarter of fp32, same outputs and Dice as the
float-weight Q/DQ file), the uint8-activation CPU form next to the TensorRT form, and which backend loads which."""

from __future__ import annotations

import collections
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from segdeploy.engines import load_engine
from segdeploy.data import open_dataset
from segdeploy.export import INT8_FORM_BACKENDS, export_run, int8_form_for, load_images
from segdeploy.export.int8_auto import onnx_dice
from segdeploy.export.onnx_export import export_onnx, ort_session
from segdeploy.export.quantize import (CALIB_METHODS, QUANTIZED_OP_TYPES, TENSORRT_QDQ_OPTIONS,
                                       ArrayCalibrationReader, preprocess_for_quantization, qdq_report,
                                       quantize_int8)
from segdeploy.models import create_model
from segdeploy.run.folder import load_run, onnx_path


@pytest.fixture(scope="module")
def trained(tiny_trained_run, tmp_path_factory):
    """unet-tiny trained for 3 epochs on the synthetic set (64 px), exported to fp32 and int8 in both forms."""
    out = shutil.copytree(tiny_trained_run, tmp_path_factory.mktemp("forms") / "run")
    manifest = export_run(out, ["fp32", "int8"], calib_images=8, parity_images=4)
    run = load_run(out)
    return run, manifest, load_images(run, "val", 12), None


def _dice(run, path) -> float | None:
    """The study's Dice of an ONNX file on the run's first 12 validation images (the one evaluation path)."""
    meta = run.meta
    dataset = open_dataset(meta.dataset.spec)
    ids = run.split_ids(dataset, "val")[:12]
    return onnx_dice(path, dataset, ids, img_size=meta.img_size, mean=meta.mean, std=meta.std,
                     num_classes=meta.num_classes)


def _qdq_pair_file(run, path):
    """The INT8 file as this project wrote it before: float weights behind QuantizeLinear -> DequantizeLinear, the
    same calibration images and options otherwise."""
    calib = load_images(run, "train", 8, seed=int(run.meta.seed or 0))
    source, _ = preprocess_for_quantization(onnx_path(run.dir, "fp32"), path.with_suffix(".pre.onnx"))
    quantize_static(str(source), str(path), ArrayCalibrationReader(calib), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CALIB_METHODS["minmax"],
                    extra_options={**TENSORRT_QDQ_OPTIONS, "AddQDQPairToWeight": True})
    return path


def test_dq_only_int8_is_a_quarter_of_fp32_with_the_same_outputs_and_dice(trained, tmp_path):
    run, manifest, images, _ = trained
    fp32, int8 = onnx_path(run.dir, "fp32"), onnx_path(run.dir, "int8")
    pair = _qdq_pair_file(run, tmp_path / "pair.onnx")
    assert qdq_report(pair)["weight_storage"] == "float" and qdq_report(int8)["weight_storage"] == "int8"
    fp32_mb, int8_mb, pair_mb = (p.stat().st_size / 2**20 for p in (fp32, int8, pair))
    assert pair_mb > 0.95 * fp32_mb  # float weights: as large as fp32, what file_size_mb used to report
    assert int8_mb < 0.3 * fp32_mb  # int8 weights: about a quarter (scales and graph on top)
    assert manifest.precisions["int8"]["size_mb"] == pytest.approx(int8_mb, abs=1e-3)
    # the same arithmetic: ORT folds Q(W) of the pair file into the int8 constant the DQ-only file stores
    got = ort_session(int8).run(None, {"input": images})[0]
    ref = ort_session(pair).run(None, {"input": images})[0]
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    dice_dq, dice_pair = _dice(run, int8), _dice(run, pair)
    assert dice_dq is not None and dice_dq == pytest.approx(dice_pair, abs=1e-9)


def test_cpu_form_is_written_checked_and_keeps_dice(trained):
    run, manifest, images, _ = trained
    entry = manifest.precisions["int8"]
    forms = entry["forms"]
    assert forms["tensorrt"]["file"] == entry["file"] == "onnx/model.int8.onnx"
    cpu = forms["cpu"]
    path = onnx_path(run.dir, "int8", "cpu")
    assert cpu["status"] == "ok" and cpu["file"] == "onnx/model.int8-cpu.onnx" and path.is_file()
    assert cpu["backends"] == list(INT8_FORM_BACKENDS["cpu"]) and "onnxruntime" in cpu["backends"]
    assert cpu["qdq"] == qdq_report(path) and cpu["qdq"]["weight_storage"] == "int8"
    assert cpu["size_mb"] < 0.35 * manifest.precisions["fp32"]["size_mb"]  # + int32 biases on a tiny model
    # uint8 activations with zero-points (not TensorRT's form), int8 per-channel weights with zero-point 0
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    act_zero_points = [inits[n.input[2]] for n in model.graph.node
                       if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert act_zero_points and all(z.dtype == np.uint8 for z in act_zero_points)
    assert any(z.any() for z in act_zero_points)
    assert cpu["parity"]["argmax_agreement"] > 0.95
    # accuracy against fp32 on validation images, for both forms: the same pixels and the same Dice (a few epochs
    # of training give a low Dice, so the check is absolute and per pixel rather than a ratio)
    fp32_file = onnx_path(run.dir, "fp32")
    # A pixel flips where its two best logits lie closer than the int8 noise: on an exact int8 path (VNNI, AMX)
    # fewer than 3% of pixels and 0.01 Dice; where u8 x s8 pairs go through int16 (AVX2) the noise may double
    # (cpuinfo.int8_noise_factor), and so may the flips (measured on an AVX2 EPYC: agreement 0.955)
    from segdeploy.machine.cpuinfo import cpu_isa, int8_noise_factor

    factor = int8_noise_factor(cpu_isa())
    fp32_dice = _dice(run, fp32_file)
    fp32_pred = ort_session(fp32_file).run(None, {"input": images})[0].argmax(1)
    for form_path in (path, onnx_path(run.dir, "int8")):
        pred = ort_session(form_path).run(None, {"input": images})[0].argmax(1)
        assert (pred == fp32_pred).mean() > 1 - 0.03 * factor
        assert _dice(run, form_path) == pytest.approx(fp32_dice, abs=0.01 * factor)


def test_each_backend_loads_its_form_and_says_so(trained, tmp_path):
    run, _, images, _ = trained
    assert int8_form_for("onnxruntime") == int8_form_for("openvino") == "cpu"
    assert {int8_form_for(b) for b in ("tensorrt", "onnxruntime-trt", "onnxruntime-cuda")} == {"tensorrt"}
    engine = load_engine("onnxruntime", run, "int8", "cpu")
    assert engine.info["onnx_form"] == "cpu" and engine.info["onnx"].endswith("model.int8-cpu.onnx")
    np.testing.assert_allclose(engine.run(images[:2]),
                               ort_session(onnx_path(run.dir, "int8", "cpu")).run(None, {"input": images[:2]})[0])
    # an export without the CPU form (older, or --int8-forms tensorrt): the TensorRT form, and the row says why
    copy = load_run(shutil.copytree(run.dir, tmp_path / "run"))
    onnx_path(copy.dir, "int8", "cpu").unlink()
    engine = load_engine("onnxruntime", copy, "int8", "cpu")
    assert engine.info["onnx_form"] == "tensorrt" and engine.info["onnx"].endswith("model.int8.onnx")
    assert "model.int8-cpu.onnx" in engine.info["onnx_form_fallback"]


def test_a_replaced_cpu_form_is_refused_and_its_hash_keys_the_rows(trained, tmp_path):
    """The CPU form has its own sha256 in the manifest: a file swapped in afterwards is not benchmarked, and the
    resume key's artifact is the file the backend loads."""
    from segdeploy.bench.artifacts import artifact_sha256, onnx_sha256
    from segdeploy.engines.integrity import StaleArtifact

    run, manifest, _, _ = trained
    cpu_file = onnx_path(run.dir, "int8", "cpu")
    assert manifest.precisions["int8"]["forms"]["cpu"]["sha256"] == onnx_sha256(cpu_file)
    assert artifact_sha256(run, "onnxruntime", "int8") == artifact_sha256(run, "openvino", "int8") \
        == onnx_sha256(cpu_file) != artifact_sha256(run, "onnxruntime-cuda", "int8") == onnx_sha256(onnx_path(run.dir, "int8"))
    copy = load_run(shutil.copytree(run.dir, tmp_path / "run"))
    shutil.copyfile(onnx_path(copy.dir, "int8"), onnx_path(copy.dir, "int8", "cpu"))  # the other form, unrecorded
    with pytest.raises(StaleArtifact, match="sha256"):
        load_engine("onnxruntime", copy, "int8", "cpu")


def test_tensorrt_only_export_removes_a_stale_cpu_form(trained, tmp_path):
    run, _, _, _ = trained
    copy = shutil.copytree(run.dir, tmp_path / "run")
    manifest = export_run(copy, ["int8"], calib_images=4, parity_images=2, int8_forms=["tensorrt"])
    assert set(manifest.precisions["int8"]["forms"]) == {"tensorrt"}
    assert not onnx_path(copy, "int8", "cpu").exists() and onnx_path(copy, "int8").is_file()


def test_a_failed_cpu_form_leaves_the_tensorrt_form(trained, tmp_path, monkeypatch):
    import segdeploy.export.quantize as quantize

    run, _, _, _ = trained
    copy = shutil.copytree(run.dir, tmp_path / "run")
    real = quantize.quantize_int8

    def cpu_form_breaks(*args, form="tensorrt", **kwargs):
        if form == "cpu":
            raise RuntimeError("simulated quantizer failure")
        return real(*args, form=form, **kwargs)

    monkeypatch.setattr(quantize, "quantize_int8", cpu_form_breaks)
    manifest = export_run(copy, ["int8"], calib_images=4, parity_images=2)
    entry = manifest.precisions["int8"]
    assert entry["status"] == "ok" and onnx_path(copy, "int8").is_file()
    assert entry["forms"]["cpu"]["status"] == "failed" and "simulated" in entry["forms"]["cpu"]["error"]
    assert not onnx_path(copy, "int8", "cpu").exists()


def _optimized_op_types(path, tmp_path) -> collections.Counter:
    """Node types of the graph ONNX Runtime's CPU EP actually runs (its optimized-model dump)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


@pytest.mark.slow
def test_onnxruntime_runs_every_weighted_layer_of_the_cpu_form_as_an_integer_kernel(tmp_path):
    """The reason for the CPU form, checked on a transformer: with uint8 activations ORT's CPU EP fuses every
    quantized Conv and weight MatMul into QLinearConv / QLinearMatMul, none is left as DequantizeLinear + float op;
    attention's MatMuls of two activations stay float MatMuls (slower in int8 on x86), while the TensorRT form
    quantizes them."""
    from segdeploy.export.quantize import activation_matmuls

    torch.manual_seed(0)
    model = create_model("segformer-tiny", num_classes=3, in_chans=3, img_size=64).eval()
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, (3, 64, 64))
    calib = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    cpu, trt = tmp_path / "cpu.onnx", tmp_path / "trt.onnx"
    info = quantize_int8(fp32, cpu, calib, form="cpu")
    quantize_int8(fp32, trt, calib, form="tensorrt")
    pre = preprocess_for_quantization(fp32, tmp_path / "pre.onnx")[0]
    source = onnx.load(str(pre))
    weighted = collections.Counter(n.op_type for n in source.graph.node if n.op_type in ("Conv", "MatMul"))
    attention = activation_matmuls(pre)
    # segformer-tiny: 4 stages x one block x (QK^T, attention x V); the other MatMuls are Linear layers
    assert len(attention) == 8 and info["float_activation_matmuls"] == 8
    assert weighted["MatMul"] >= 8 + len(attention) and weighted["Conv"] >= 4
    ran = _optimized_op_types(cpu, tmp_path)
    assert ran["Conv"] == 0 and ran["QLinearConv"] == weighted["Conv"]
    assert ran["QLinearMatMul"] == weighted["MatMul"] - len(attention)
    assert ran["MatMul"] + ran["FusedMatMul"] == len(attention)
    for path, quantized in ((cpu, False), (trt, True)):  # what feeds the attention products in each form
        graph = onnx.load(str(path)).graph
        producer = {o: n.op_type for n in graph.node for o in n.output}
        products = [n for n in graph.node if n.name in set(attention)]
        assert len(products) == len(attention)
        assert all((producer.get(n.input[0]) == "DequantizeLinear") is quantized for n in products)
    x = calib[:2]
    ref = ort_session(fp32).run(None, {"input": x})[0]
    got = ort_session(cpu).run(None, {"input": x})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.9