"""The openvino backend: the same ONNX files as onnxruntime with the same outputs, the precision it was asked for
(not the CPU plugin's bf16 default), int8 kernels for the Q/DQ file, threads and hints recorded, and one-line
reasons where a device or precision is missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segdeploy.engines import check_backend, load_engine
from segdeploy.export import export_run
from segdeploy.export.onnx_export import ort_session
from segdeploy.models import create_model
from segdeploy.run.folder import load_run, save_checkpoint

ov = pytest.importorskip("openvino")
from segdeploy.engines import openvino_backend  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An untrained unet-tiny on the synthetic set's classes, exported to fp32 and int8 (both forms)."""
    run_dir = tmp_path_factory.mktemp("ov") / "run"
    torch.manual_seed(0)
    meta = {"model": "unet-tiny", "family": "specialized", "num_classes": 4,
            "classes": ["background", "cavity", "wall", "lesion"], "in_chans": 1, "img_size": SIZE,
            "mean": [0.5], "std": [0.25], "dataset": {"spec": "synthetic:24"},
            "split": {"seed": 42, "k": 3, "fold": 0, "group_regex": None}}
    save_checkpoint(run_dir, create_model("unet-tiny", num_classes=4, in_chans=1, img_size=SIZE), meta)
    export_run(run_dir, ["fp32", "int8"], calib_images=4, parity_images=2)
    return load_run(run_dir)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((3, 1, SIZE, SIZE)).astype(np.float32)


def test_fp32_equals_onnxruntime_on_the_same_file(run, batch):
    reference = load_engine("onnxruntime", run, "fp32", "cpu").run(batch)
    engine = load_engine("openvino", run, "fp32", "cpu")
    np.testing.assert_allclose(engine.run(batch), reference, atol=1e-4 * np.abs(reference).max(), rtol=0)
    np.testing.assert_allclose(engine.run(batch[:1]), reference[:1], atol=1e-4 * np.abs(reference).max(), rtol=0)
    info = engine.info
    assert engine.device == "cpu" and info["ov_device"] == "CPU" and info["onnx"].endswith("model.fp32.onnx")
    # the hint is read back from the compiled model: f32 even on CPUs where the plugin would default to bf16
    assert info["inference_precision"] == "f32" and info["performance_hint"] == "LATENCY"
    assert info["num_streams"] == 1
    assert info["weighted_layer_precisions"] == {"f32": sum(info["weighted_layer_precisions"].values())}


def test_split_form_equals_run(run, batch):
    engine = load_engine("openvino", run, "fp32")
    out = engine.to_host(engine.infer(engine.to_device(batch)))
    first = out.copy()
    engine.infer(engine.to_device(batch[::-1].copy()))  # the request's output buffer is reused...
    np.testing.assert_array_equal(out, first)  # ...but to_host returned a copy
    np.testing.assert_array_equal(out, engine.run(batch))


def test_int8_runs_int8_kernels_from_the_cpu_form(run, batch):
    engine = load_engine("openvino", run, "int8", "cpu")
    info = engine.info
    assert info["onnx_form"] == "cpu" and info["onnx"].endswith("model.int8-cpu.onnx")
    layers = info["weighted_layer_precisions"]
    int8_layers = layers.get("u8", 0) + layers.get("i8", 0)
    assert int8_layers >= 0.9 * sum(layers.values()) and int8_layers > 0
    assert info["inference_precision"] == "f32"  # the layers left in floating point
    fp32 = load_engine("openvino", run, "fp32", "cpu").run(batch)
    ort_same_file = ort_session(info["onnx"]).run(None, {"input": batch})[0]
    got = engine.run(batch)
    assert (got.argmax(1) == fp32.argmax(1)).mean() > 0.9
    # the same quantized model on both runtimes: on an exact int8 path (VNNI, AMX) they differ by less than half
    # of what quantization moves either from fp32; where u8 x s8 pairs go through int16 (AVX2) onnxruntime
    # saturates them and OpenVINO halves the weights' range, so each carries up to twice the noise
    # (cpuinfo.int8_noise_factor): one quantization step (measured on an AVX2 EPYC: 0.0020 against a step of 0.0030)
    from segdeploy.machine.cpuinfo import cpu_isa, int8_noise_factor

    quantization_error = np.abs(ort_same_file - fp32).mean()
    assert np.abs(got - ort_same_file).mean() < 0.5 * int8_noise_factor(cpu_isa()) * quantization_error


def test_threads_are_applied_and_recorded(run, batch):
    engine = load_engine("openvino", run, "fp32", "cpu", threads=1)
    assert engine.info["threads"] == 1 and engine.info["threads_requested"] == 1
    default = load_engine("openvino", run, "fp32", "cpu")
    assert default.info["threads_requested"] is None and default.info["threads"] >= 1
    ort_engine = load_engine("onnxruntime", run, "fp32", "cpu", threads=1)
    assert ort_engine.info["threads"] == 1
    before = torch.get_num_threads()
    torch_engine = load_engine("torch", run, "fp32", "cpu", threads=1)
    assert torch.get_num_threads() == 1 and torch_engine.info["threads"] == 1
    np.testing.assert_allclose(torch_engine.run(batch), engine.run(batch), atol=1e-4, rtol=0)
    torch_engine.close()
    assert torch.get_num_threads() == before


def test_bf16_where_the_cpu_lists_it(run, batch):
    capabilities = list(openvino_backend._core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    reason = check_backend("openvino", "bf16", "cpu", run)
    if "BF16" not in capabilities:
        assert reason is not None and "OPTIMIZATION_CAPABILITIES" in reason
        pytest.skip("this CPU has no bf16 path in OpenVINO")
    assert reason is None
    engine = load_engine("openvino", run, "bf16", "cpu")
    assert engine.info["inference_precision"] == "bf16" and engine.info["onnx"].endswith("model.fp32.onnx")
    reference = load_engine("openvino", run, "fp32", "cpu").run(batch)
    diff = np.abs(engine.run(batch) - reference).max()
    assert 0 < diff < 0.05 * np.abs(reference).max()  # rounded to bf16 (8 bits of mantissa), so not equal


def test_static_shapes_compile_per_batch_size(run, batch):
    """The NPU path (static shapes only), exercised on the CPU: one compiled model per input shape."""
    dynamic = load_engine("openvino", run, "fp32", "cpu")
    core = openvino_backend._core()
    static = openvino_backend.OpenVinoEngine(run, "fp32", "cpu", backend="openvino")
    static.compile_model(core, core.read_model(dynamic.info["onnx"]), {"INFERENCE_PRECISION_HINT": "f32"},
                         static_shapes=True)
    np.testing.assert_allclose(static.run(batch), dynamic.run(batch), atol=1e-5, rtol=0)
    np.testing.assert_allclose(static.run(batch[:1]), dynamic.run(batch[:1]), atol=1e-5, rtol=0)
    assert len(static._requests) == 2


class _FakeCore:
    available_devices = ["CPU", "GPU.0"]

    def get_property(self, device, name):
        assert name == "OPTIMIZATION_CAPABILITIES"
        return {"CPU": ["FP32", "INT8"], "GPU.0": ["FP32", "FP16", "INT8"], "GPU": ["FP32", "FP16", "INT8"]}[device]


def test_one_line_reasons(run, monkeypatch):
    assert "--device auto" in check_backend("openvino", "fp32", "cuda", run)
    assert "use the openvino backend for the CPU" in check_backend("openvino-gpu", "fp32", "cpu", run)
    monkeypatch.setattr(openvino_backend, "_core", lambda: _FakeCore())
    assert check_backend("openvino-gpu", "fp16", "auto") is None  # listed as GPU.0
    assert "lists no NPU device" in check_backend("openvino-npu", "fp32", "auto")
    reason = check_backend("openvino", "bf16", "cpu")
    assert "does not list BF16" in reason and "\n" not in reason
    assert "FP16" in check_backend("openvino", "fp16", "cpu")
    assert "no onnx/model.fp16.onnx" in check_backend("openvino-gpu", "fp16", "auto", run)


def test_missing_openvino_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    # one line naming the backend, what is missing and the install command, and no import traceback
    assert check_backend("openvino", "fp32", "cpu") == (
        "openvino: openvino is not installed (pip install 'segdeploy[openvino]')")


def test_bench_measures_openvino_like_every_backend(run, tmp_path):
    from segdeploy.bench.runner import run_bench

    rows = run_bench([run.dir], "synthetic:24", "onnxruntime,openvino", "fp32,int8", tmp_path / "r.jsonl",
                     batch=2, max_images=4, warmup=0.0, duration=0.05, min_iters=2, progress=False, threads=1)
    by = {(r.backend, r.precision): r for r in rows}
    assert all(r.status == "ok" for r in rows), [r.reason for r in rows]
    assert all(r.threads == 1 and r.engine_info["threads"] == 1 for r in rows)
    # accuracy is measured on the engine: the same fp32 file gives the same Dice on both runtimes
    assert by["openvino", "fp32"].dice == pytest.approx(by["onnxruntime", "fp32"].dice, abs=1e-3)
    assert by["openvino", "int8"].engine_info["onnx_form"] == "cpu"
    assert by["onnxruntime", "int8"].engine_info["onnx_form"] == "cpu"
    assert by["openvino", "fp32"].latency_ms["p50"] > 0 and by["openvino", "int8"].throughput_ips > 0
    # --threads is part of the configuration: another thread count is another row, not a resumed one
    again = run_bench([run.dir], "synthetic:24", "openvino", "fp32", tmp_path / "r.jsonl", batch=2, max_images=4,
                      warmup=0.0, duration=0.05, min_iters=2, progress=False, threads=2)
    assert again[0].threads == 2 and again[0].engine_info["threads"] == 2  # a resumed row would say 1
    # the same thread count again is the same configuration: resumed, nothing appended
    lines = (tmp_path / "r.jsonl").read_text().count("\n")
    resumed = run_bench([run.dir], "synthetic:24", "openvino", "fp32", tmp_path / "r.jsonl", batch=2, max_images=4,
                        warmup=0.0, duration=0.05, min_iters=2, progress=False, threads=2)
    assert resumed[0].timestamp == again[0].timestamp and (tmp_path / "r.jsonl").read_text().count("\n") == lines
