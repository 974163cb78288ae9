"""Inference backends: torch and onnxruntime agree, the split form equals run(), unavailable combinations give
one line, and the TensorRT build logic (batch profiles, version features, staleness) without TensorRT."""

from __future__ import annotations

import importlib.util
import json
import types

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from segdeploy.engines import check_backend, load_engine, onnx_files
from segdeploy.engines import ort_backend
from segdeploy.commands.engines import app
from segdeploy.engines.profiles import profile_record, profile_shapes
from segdeploy.engines.trt_build import (build_plan, engine_is_stale, make_record, parse_version,
                                         precision_flags_removed, supports_strongly_typed)
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.run.folder import load_run, onnx_path

from helpers import make_meta, make_run

HAS_CUDA = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
IMG = 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An untrained unet-tiny run with its fp32 ONNX (dynamic batch), exported here, not by segdeploy.export."""
    run_dir = make_run(tmp_path_factory.mktemp("run"), make_meta(num_classes=3, classes=["bg", "a", "b"],
                                                                 in_chans=3, mean=[0.5] * 3, std=[0.25] * 3,
                                                                 img_size=IMG))
    model = load_run(run_dir).build_model()
    target = onnx_path(run_dir, "fp32")
    target.parent.mkdir(parents=True)
    torch.onnx.export(model, (torch.randn(2, 3, IMG, IMG),), str(target), dynamo=True, opset_version=18,
                      input_names=["input"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), verbose=False)
    return load_run(run_dir)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((3, 3, IMG, IMG)).astype(np.float32)


def test_torch_and_onnxruntime_agree(run, batch):
    torch_engine = load_engine("torch", run, "fp32", "cpu")
    ort_engine = load_engine("onnxruntime", run, "fp32")
    reference = torch_engine.run(batch)
    assert reference.shape == (3, 3, IMG, IMG) and reference.dtype == np.float32
    np.testing.assert_allclose(ort_engine.run(batch), reference, atol=1e-4, rtol=0)
    # a batch size other than the one exported with runs through the dynamic batch axis
    np.testing.assert_allclose(ort_engine.run(batch[:1]), reference[:1], atol=1e-4, rtol=0)
    assert (torch_engine.device, ort_engine.device) == ("cpu", "cpu")
    assert ort_engine.info["provider"] == "CPUExecutionProvider"
    files = onnx_files(onnx_path(run.dir, "fp32"))
    assert len(files) == 2  # the dynamo exporter keeps weights in model.fp32.onnx.data: both count
    assert ort_engine.info["file_size_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 1e6, abs=1e-3)
    torch_engine.close()
    ort_engine.close()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_split_form_equals_run(run, batch, backend):
    engine = load_engine(backend, run, "fp32", "cpu")
    split = engine.to_host(engine.infer(engine.to_device(batch)))
    engine.synchronize()
    np.testing.assert_array_equal(split, engine.run(batch))
    assert split.dtype == np.float32
    engine.close()


def test_onnxruntime_fp16_file_runs_with_float32_io(run, batch):
    """An fp16 ONNX with fp16 inputs/outputs still takes and returns float32 (the engine casts)."""
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(onnx.load(str(onnx_path(run.dir, "fp32"))), keep_io_types=False)
    onnx.save(half, str(onnx_path(run.dir, "fp16")))
    try:
        engine = load_engine("onnxruntime", run, "fp16")
        assert engine.info["input_type"] == "tensor(float16)"
        out = engine.run(batch)
        assert out.dtype == np.float32
        reference = load_engine("onnxruntime", run, "fp32").run(batch)
        assert np.abs(out - reference).max() < 0.05
        assert np.abs(out - reference).max() > 0  # it really ran in half precision
    finally:
        onnx_path(run.dir, "fp16").unlink()


def _one_line_unavailable(backend, run, precision, device="auto", *, found_by_check=True) -> str:
    with pytest.raises(BackendUnavailable) as excinfo:
        load_engine(backend, run, precision, device)
    message = str(excinfo.value)
    assert "\n" not in message and len(message) < 300
    if found_by_check:  # the cheap check (engines list, bench planning) says the same
        assert check_backend(backend, precision, device, run=run) == message
    return message


def test_torch_int8_is_not_benchmarked(run):
    # the whole line: what is refused, and every backend that does run INT8 (the backend descriptors' list)
    assert _one_line_unavailable("torch", run, "int8") == (
        "torch int8 is not benchmarked: INT8 runs from the Q/DQ ONNX on onnxruntime, openvino or tensorrt")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_torch_half_precision_needs_cuda(run):
    for precision in ("fp16", "bf16"):
        message = _one_line_unavailable("torch", run, precision)
        assert message == (f"torch {precision} needs CUDA (this machine has none); "
                           f"on CPU use onnxruntime --precisions {precision}")
    assert "torch sees no CUDA GPU" in _one_line_unavailable("torch", run, "fp32", "cuda")


def test_missing_onnx_names_the_export_command(run):
    message = _one_line_unavailable("onnxruntime", run, "int8")
    assert message == f"no onnx/model.int8.onnx in {run.dir}; run segdeploy export {run.dir} --precisions int8"


@pytest.mark.parametrize("major,triton", [(7, True), (8, False), (9, True)])
def test_torch_cuda_checks_native_bf16_and_triton(run, monkeypatch, major, triton):
    """A fake CUDA machine: bf16 only on sm80+ (T4/V100 merely emulate it), torch-compile only with triton."""
    from segdeploy.engines import torch_backend
    from segdeploy.engines.torch_backend import TorchEngine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(major=major))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: f"sm{major}0 GPU")
    monkeypatch.setattr(torch_backend, "has_triton", lambda: triton)
    bf16 = TorchEngine.check("bf16", "cuda", backend="torch", run=run)
    assert (bf16 is None) == (major >= 8)
    if major < 8:
        assert "only emulates" in bf16 and "use fp16" in bf16
    compiled = TorchEngine.check("fp16", "cuda:0", backend="torch-compile", run=run)
    assert (compiled is None) == triton
    if not triton:
        assert "needs triton" in compiled
    assert TorchEngine.check("fp16", "cuda", backend="torch", run=run) is None


def test_bf16_on_an_onnx_backend_points_to_torch(run):
    message = _one_line_unavailable("onnxruntime", run, "bf16")
    # not "run segdeploy export": export writes no bf16 ONNX, so the line names what export writes and where bf16 runs
    assert message == ("no bf16 ONNX: export writes fp32, fp16, int8; bf16 runs on the torch and torch-compile "
                       "backends")


def test_onnxruntime_device_mismatch(run):
    # the device is named as resolved (cuda -> cuda:0), and the line names the backend that runs there
    assert _one_line_unavailable("onnxruntime", run, "fp32", "cuda") == (
        "onnxruntime runs on the CPU execution provider (cuda:0 requested); use onnxruntime-cuda")
    assert _one_line_unavailable("onnxruntime-cuda", run, "fp32", "cpu") == (
        "onnxruntime-cuda runs on a CUDA GPU (device cpu requested); use onnxruntime for the CPU")


@pytest.mark.parametrize("backend,provider", [("onnxruntime-cuda", "CUDAExecutionProvider"),
                                              ("onnxruntime-trt", "TensorrtExecutionProvider")])
def test_missing_execution_provider(run, backend, provider):
    import onnxruntime as ort

    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is installed here")
    message = _one_line_unavailable(backend, run, "fp32")
    assert message.startswith(f"{backend}: {provider} not available (installed onnxruntime {ort.__version__} offers")
    assert "CPUExecutionProvider" in message and "onnxruntime-gpu" in message


def test_silent_cpu_fallback_is_reported(run, monkeypatch):
    """onnxruntime-gpu lists CUDAExecutionProvider even when the CUDA libraries are missing; the session then
    runs on the CPU. Simulate that with the real CPU session and check it is refused, not benchmarked."""
    import onnxruntime as ort

    real_session = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, options, providers: real_session(path, options,
                                                                      providers=["CPUExecutionProvider"]))
    message = _one_line_unavailable("onnxruntime-cuda", run, "fp32", found_by_check=False)
    assert "fell back to CPUExecutionProvider" in message


def _fake_gpu_session(monkeypatch, provider, reject=lambda options: False):
    """onnxruntime as a GPU machine would show it: ``provider`` available, sessions that report it and record
    the provider options they were created with (``reject(options)`` -> raise as onnxruntime would)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as status

    monkeypatch.setattr(ort, "get_available_providers", lambda: [provider, "CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: types.SimpleNamespace(cuda_stream=0x7F00))
    seen = []

    class Session:
        def __init__(self, path, options, providers):
            seen.append(dict(providers))
            if reject(seen[-1]):
                raise status.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : unknown option")

        def get_providers(self):
            return [provider, "CPUExecutionProvider"]

        def get_inputs(self):
            return [types.SimpleNamespace(name="input", type="tensor(float)")]

        get_outputs = get_inputs

    monkeypatch.setattr(ort, "InferenceSession", Session)
    return seen


def test_stream_option_rejected_falls_back_to_host_timing(run, monkeypatch):
    """An onnxruntime that refuses ``user_compute_stream`` must still run the model (timed on the host), not
    turn into a "cannot load the model" error."""
    seen = _fake_gpu_session(monkeypatch, "CUDAExecutionProvider",
                             reject=lambda options: "user_compute_stream" in options["CUDAExecutionProvider"])
    engine = load_engine("onnxruntime-cuda", run, "fp32", "cuda")
    assert [s["CUDAExecutionProvider"] for s in seen] == [{"device_id": 0, "user_compute_stream": str(0x7F00)},
                                                         {"device_id": 0}]
    assert engine.compute_stream is None and "INVALID_ARGUMENT" in engine.info["compute_stream_error"]


def test_trt_execution_provider_session_uses_the_runs_input_shape(run, monkeypatch):
    seen = _fake_gpu_session(monkeypatch, "TensorrtExecutionProvider")
    engine = load_engine("onnxruntime-trt", run, "fp32", "cuda")
    trt = seen[0]["TensorrtExecutionProvider"]
    c, h, w = run.input_shape
    assert trt["trt_profile_max_shapes"].endswith(f":32x{c}x{h}x{w}") and trt["user_compute_stream"] == str(0x7F00)
    assert engine.compute_stream is not None and engine.info["trt_profile"]["trt_profile_min_shapes"].split(":")[1] \
        == f"1x{c}x{h}x{w}"


def test_corrupt_onnx_is_a_user_error(run):
    path = onnx_path(run.dir, "bf16")
    path.write_bytes(b"not an onnx file")
    try:
        with pytest.raises(SegdeployError) as excinfo:
            load_engine("onnxruntime", run, "bf16")
        assert not isinstance(excinfo.value, BackendUnavailable)
        assert str(path) in str(excinfo.value) and "segdeploy export" in str(excinfo.value)
    finally:
        path.unlink()


@pytest.mark.parametrize("backend,providers", [
    ("onnxruntime", ["CPUExecutionProvider"]),
    ("onnxruntime-cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("onnxruntime-trt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])])
def test_provider_chain_falls_back_towards_the_cpu_on_the_asked_gpu(tmp_path, backend, providers):
    chain = ort_backend.provider_chain(backend, 1, tmp_path / "cache")
    assert [name for name, _ in chain] == providers  # unsupported nodes fall back, the CPU closes every chain
    assert all(options["device_id"] == 1 for name, options in chain if name != "CPUExecutionProvider")


def test_trt_execution_provider_gets_the_native_engines_profile(tmp_path):
    profile = ort_backend.trt_profile_options("input", profile_shapes("1:8:32", (3, 256, 256)))
    assert profile == {"trt_profile_min_shapes": "input:1x3x256x256", "trt_profile_opt_shapes": "input:8x3x256x256",
                       "trt_profile_max_shapes": "input:32x3x256x256"}
    trt = dict(ort_backend.provider_chain("onnxruntime-trt", 0, tmp_path, trt_profile=profile))
    assert trt["TensorrtExecutionProvider"]["trt_profile_max_shapes"] == "input:32x3x256x256"


def test_cuda_execution_provider_runs_on_the_stream_it_is_given(tmp_path):
    # the CUDA EP must enqueue on our stream, or CUDA events on it would time nothing
    cuda = dict(ort_backend.provider_chain("onnxruntime-cuda", 0, tmp_path, compute_stream=0x7F00))
    assert cuda["CUDAExecutionProvider"] == {"device_id": 0, "user_compute_stream": str(0x7F00)}
    plain = dict(ort_backend.provider_chain("onnxruntime-cuda", 0, tmp_path))
    assert "user_compute_stream" not in plain["CUDAExecutionProvider"]
    trt = dict(ort_backend.provider_chain("onnxruntime-trt", 0, tmp_path, compute_stream=0x7F00))
    assert trt["TensorrtExecutionProvider"]["user_compute_stream"] == str(0x7F00)
    assert trt["TensorrtExecutionProvider"]["has_user_compute_stream"] is True
    assert trt["CUDAExecutionProvider"]["user_compute_stream"] == str(0x7F00)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_tensorrt_absent_is_one_line(run):
    message = _one_line_unavailable("tensorrt", run, "fp32")
    assert message == ("tensorrt: the TensorRT Python package is not installed "
                       "(pip install tensorrt on a machine with an NVIDIA GPU)")


def test_unknown_backend():
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        check_backend("tflite", "fp32")


# --- TensorRT build logic, no TensorRT needed ----------------------------------------------------------------

def test_batch_spec_to_profile_shapes():
    assert profile_shapes("1:8:32", (3, 64, 64)) == ((1, 3, 64, 64), (8, 3, 64, 64), (32, 3, 64, 64))
    assert profile_shapes("4", (1, 256, 256)) == ((4, 1, 256, 256),) * 3
    for bad in ("8:1:32", "0:1:2", "1:2", "a:b:c", "1:8:32:64", ""):
        with pytest.raises(SegdeployError, match="batch spec"):
            profile_shapes(bad, (3, 64, 64))


def test_version_features():
    assert parse_version("10.3.0.30") == (10, 3, 0, 30)
    assert parse_version("11.4.0.post1") == (11, 4, 0)
    assert supports_strongly_typed(parse_version("10.3.0")) and not supports_strongly_typed((8, 6, 1))
    assert precision_flags_removed((11, 0)) and not precision_flags_removed((10, 15, 1))
    # 10.x (Jetson's 10.3 included) and 11.x: strongly typed, never a precision flag
    for version in ((10, 3, 0), (11, 4, 0)):
        for precision in ("fp32", "fp16", "int8"):
            assert build_plan(precision, version) == {"strongly_typed": True, "flags": {}}
    # weakly typed TensorRT 8.x needs the flag that allows the file's reduced precision
    assert build_plan("fp16", (8, 6, 1)) == {"strongly_typed": False, "flags": {"fp16": True}}
    assert build_plan("int8", (8, 5, 2)) == {"strongly_typed": False, "flags": {"int8": True}}
    assert build_plan("fp32", (8, 6, 1)) == {"strongly_typed": False, "flags": {}}


def test_engine_staleness(tmp_path):
    shapes = profile_shapes("1:8:32", (3, 64, 64))
    profile = profile_record("input", "1:8:32", shapes)
    gpu = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    record = make_record(precision="fp16", onnx_file=tmp_path / "model.fp16.onnx", onnx_sha256="abc",
                         trt_version="10.13.0", gpu=gpu, profile=profile, plan=build_plan("fp16", (10, 13)),
                         workspace_mib=None, build_seconds=12.345, engine_bytes=1000)
    record = json.loads(json.dumps(record))  # as read back from the JSON file
    assert record["build_seconds"] == 12.35 and record["strongly_typed"] is True
    assert engine_is_stale(record, "abc", "10.13.0", gpu["name"], profile=profile) is None
    # the same shapes spelled differently are not a reason to rebuild
    assert engine_is_stale(record, "abc", "10.13.0", gpu["name"],
                           profile=profile_record("input", "1:8:32 ", shapes)) is None
    assert "ONNX file changed" in engine_is_stale(record, "abd", "10.13.0", gpu["name"])
    assert "TensorRT 10.13.0, this is TensorRT 11.4.0" in engine_is_stale(record, "abc", "11.4.0", gpu["name"])
    assert "this GPU is Orin" in engine_is_stale(record, "abc", "10.13.0", "Orin")
    other = profile_record("input", "1:16:64", profile_shapes("1:16:64", (3, 64, 64)))
    assert "asked for 1:16:64" in engine_is_stale(record, "abc", "10.13.0", gpu["name"], profile=other)
    assert engine_is_stale(None, "abc", "10.13.0", gpu["name"]) == "no build record"


# --- CLI -----------------------------------------------------------------------------------------------------

def test_cli_list_shows_every_backend_and_reason(run):
    result = CliRunner().invoke(app, ["list", "--device", "auto", "--run", str(run.dir)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for backend in ("torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "tensorrt"):
        assert backend in result.output
    assert "available" in result.output
    assert "torch int8 is not benchmarked" in result.output
    assert "no onnx/model.int8.onnx" in result.output


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_cli_build_without_tensorrt_raises_one_line(run):
    result = CliRunner().invoke(app, ["build", str(run.dir), "--precisions", "fp32"])
    assert result.exit_code != 0
    assert isinstance(result.exception, BackendUnavailable)
    assert "\n" not in str(result.exception) and "TensorRT Python package is not installed" in str(result.exception)


def test_cli_build_rejects_bad_batch_before_building(run):
    before = sorted(p.relative_to(run.dir) for p in run.dir.rglob("*"))
    result = CliRunner().invoke(app, ["build", str(run.dir), "--batch", "8:1:2"])
    assert result.exit_code == 1 and isinstance(result.exception, SegdeployError)
    assert str(result.exception).startswith("batch spec '8:1:2' must satisfy 1 <= MIN <= OPT <= MAX.")
    assert "Fix: use --batch MIN:OPT:MAX" in str(result.exception)
    assert sorted(p.relative_to(run.dir) for p in run.dir.rglob("*")) == before  # refused before anything was built


def test_dla_build_records_placement_and_staleness():
    from types import SimpleNamespace

    from segdeploy.engines.trt_build import dla_config, engine_is_stale

    layers = [SimpleNamespace(name=f"l{i}", dla_ok=i % 3 != 0) for i in range(9)]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    config = SimpleNamespace(DLA_core=0, can_run_on_DLA=lambda layer: layer.dla_ok)
    placement: dict = {}
    dla_config(1, placement)(SimpleNamespace(num_DLA_cores=2), network, config)
    assert config.DLA_core == 1
    assert placement == {"core": 1, "layers": 9, "layers_on_dla": 6}
    with pytest.raises(SegdeployError, match="0 DLA core"):  # an x86 GPU: no silent all-GPU "DLA" engine
        dla_config(0, {})(SimpleNamespace(num_DLA_cores=0), network, config)

    record = {"onnx_sha256": "h", "tensorrt": "10.3.0", "gpu": {"name": "Orin"}, "dla": placement}
    assert engine_is_stale(record, "h", "10.3.0", "Orin", dla=1) is None
    assert "DLA core 1" in engine_is_stale(record, "h", "10.3.0", "Orin")  # asked for the GPU
    assert "DLA core 0" in engine_is_stale(record, "h", "10.3.0", "Orin", dla=0)
    gpu_record = dict(record, dla=None)
    assert "the GPU" in engine_is_stale(gpu_record, "h", "10.3.0", "Orin", dla=0)


def test_dla_engines_are_fixed_shape_reduced_precision_files_of_their_own(run, tmp_path):
    from segdeploy.engines.trt_build import dla_problem, engine_path, record_path

    assert dla_problem("fp16", "4") is None and dla_problem("int8", "1:1:1") is None
    assert "fp16 and int8 only" in dla_problem("fp32", "1")
    assert "no dynamic shapes" in dla_problem("int8", "1:8:32")
    assert engine_path(tmp_path, "int8", 1).name == "model.int8.dla1.engine"
    assert engine_path(tmp_path, "int8").name == "model.int8.engine"  # the GPU engine stays where it was
    assert record_path(tmp_path, "int8", 1).name == "model.int8.dla1.json"
    result = CliRunner().invoke(app, ["build", str(run.dir), "--dla", "0"])  # defaults: fp32 and 1:8:32
    assert isinstance(result.exception, SegdeployError) and "DLA runs fp16 and int8 only" in str(result.exception)


def test_engine_records_tell_jetson_modules_apart(monkeypatch):
    from segdeploy.machine import envinfo
    from segdeploy.engines.trt_build import engine_is_stale, gpu_identity

    monkeypatch.setattr(envinfo, "gpus", lambda: [{"name": "Orin", "compute_capability": "8.7", "memory_gb": 7.4}])
    monkeypatch.setattr(envinfo, "jetson_model", lambda: "NVIDIA Jetson Orin Nano Developer Kit")
    nano = gpu_identity("cuda:0")
    assert nano == {"name": "Orin (NVIDIA Jetson Orin Nano Developer Kit)", "compute_capability": "8.7"}
    agx_record = {"onnx_sha256": "h", "tensorrt": "10.3.0", "gpu": {"name": "Orin (Jetson AGX Orin)"}}
    assert "this GPU is Orin (NVIDIA Jetson Orin Nano" in engine_is_stale(agx_record, "h", "10.3.0", nano["name"])
    monkeypatch.setattr(envinfo, "jetson_model", lambda: None)  # a datacenter GPU keeps its plain name
    assert gpu_identity("cuda:0")["name"] == "Orin"


def test_activation_bytes_prefers_the_v2_query():
    from types import SimpleNamespace

    from segdeploy.engines.trt_build import activation_bytes

    def fake_trt(engine):
        logger = SimpleNamespace(WARNING=2)
        return SimpleNamespace(Logger=type("L", (), {"WARNING": 2, "__init__": lambda self, level: None}),
                               Runtime=lambda log: SimpleNamespace(deserialize_cuda_engine=lambda data: engine,
                                                                   DLA_core=-1),
                               _logger=logger)

    assert activation_bytes(fake_trt(SimpleNamespace(device_memory_size_v2=123, device_memory_size=999)), b"") == 123
    assert activation_bytes(fake_trt(SimpleNamespace(device_memory_size=456)), b"") == 456  # TensorRT < 10
    assert activation_bytes(fake_trt(None), b"") is None


def test_torch_compile_backend_is_checked():
    reason = check_backend("torch-compile", "fp16", "cpu")
    assert reason and reason.startswith("torch-compile fp16") and "\n" not in reason
    assert check_backend("torch-compile", "fp32", "cpu") is None


# --- the shared engine base -----------------------------------------------------------------------------------

def _scaling_engine_class():
    """A toy backend that fills in only check, load, infer and release; BaseEngine supplies the rest."""
    from segdeploy.engines.base import BaseEngine

    class ScalingEngine(BaseEngine):
        DEVICE_KINDS = ("cpu",)
        loads = 0

        @classmethod
        def check(cls, precision, device="auto", *, backend, run=None):
            return None if precision == "fp32" else f"{backend} has no {precision}"

        def load(self):
            type(self).loads += 1
            self.scale = np.float32(3)
            self.info = {"scale": 3}

        def infer(self, handle):
            return handle * self.scale

        def release(self):
            self.scale = None

    return ScalingEngine


def test_base_engine_checks_then_loads_and_releases_on_exit(batch):
    engine_class = _scaling_engine_class()
    engine = engine_class(None, "fp32", backend="scaling")
    assert not engine.is_active and engine.device == "cpu" and engine.loads == 0  # constructing loads nothing
    with engine as active:
        assert active is engine and engine.is_active and engine.info == {"scale": 3}
        np.testing.assert_array_equal(engine.run(batch.astype(np.float64)), batch * 3)
        assert engine.run(batch).dtype == np.float32
        engine.activate()  # already active: not loaded twice
    assert engine.loads == 1 and not engine.is_active and engine.scale is None

    refused = engine_class(None, "fp16", backend="scaling")
    with pytest.raises(BackendUnavailable, match="scaling has no fp16"):
        refused.activate()
    assert not refused.is_active and engine_class.loads == 1  # the check failed before anything was loaded
    refused.close()  # closing an engine that never loaded is harmless


# --- TensorRTEngine at the binding level, with a fake tensorrt module ------------------------------------------

def _fake_trt_engine(outputs=("logits",), classes=2, profile=((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)),
                     enqueue_ok=True):
    """A deserialised engine as TensorRT 10 shows it: named I/O tensors with a mode and a type, one optimization
    profile, and an execution context that computes logits[:, k] = (k + 1) * image[:, 0] by reading and writing
    the buffers at the addresses it was given, the output shape following the input shape it was set to."""
    import ctypes

    dtypes = {"input": ("HALF", np.float16), **{name: ("FLOAT", np.float32) for name in outputs}}

    class Context:
        def __init__(self):
            self.shapes, self.addresses, self.streams = {}, {}, []

        def set_input_shape(self, name, shape):
            assert name == "input"
            self.shapes[name] = tuple(shape)

        def get_tensor_shape(self, name):
            b, _, h, w = self.shapes["input"]
            return (b, classes, h, w)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def buffer(self, name, shape):
            dtype = dtypes[name][1]
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            return np.frombuffer((ctypes.c_char * size).from_address(self.addresses[name]), dtype).reshape(shape)

        def execute_async_v3(self, stream_handle):
            self.streams.append(stream_handle)
            if not enqueue_ok:
                return False
            image = self.buffer("input", self.shapes["input"]).astype(np.float32)
            out = self.buffer(outputs[0], self.get_tensor_shape(outputs[0]))
            out[:] = np.stack([(k + 1) * image[:, 0] for k in range(classes)], axis=1)
            return True

    names = ["input", *outputs]
    engine = types.SimpleNamespace(
        num_io_tensors=len(names), get_tensor_name=lambda i: names[i],
        get_tensor_mode=lambda name: "INPUT" if name == "input" else "OUTPUT",
        get_tensor_dtype=lambda name: dtypes[name][0],
        get_tensor_profile_shape=lambda name, index: profile)
    engine.context = Context()
    engine.create_execution_context = lambda: engine.context
    return engine


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """``tensorrt`` as the engine code imports it; TensorRT types map to torch dtypes as polygraphy maps them;
    CPU tensors stand in for device buffers, so torch's stream context is a no-op."""
    import contextlib
    import sys

    from segdeploy.engines import trt_backend

    module = types.ModuleType("tensorrt")
    module.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(trt_backend, "_torch_dtype", {"HALF": torch.float16, "FLOAT": torch.float32}.__getitem__)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())

    def bound(trt_engine):
        engine = trt_backend.TensorRTEngine(None, "fp16", "cuda", backend="tensorrt")
        engine.device = "cpu"
        engine.info = {"engine": "model.fp16.engine"}
        engine.bind(trt_engine, types.SimpleNamespace(cuda_stream=0x7F00, synchronize=lambda: None))
        return engine

    return bound


def test_tensorrt_engine_binds_one_input_and_one_output(fake_tensorrt):
    trt_engine = _fake_trt_engine()
    engine = fake_tensorrt(trt_engine)
    batch = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    handle = engine.to_device(batch)
    assert handle.dtype == torch.float16  # cast to the engine's input type
    out = engine.infer(handle)
    context = trt_engine.context
    assert context.shapes["input"] == (3, 3, 8, 8)  # the dynamic batch set from the handle
    assert tuple(out.shape) == (3, 2, 8, 8) and out.dtype == torch.float32
    assert context.addresses == {"input": handle.data_ptr(), "logits": out.data_ptr()}
    assert context.streams == [0x7F00]  # enqueued on the engine's own stream
    expected = np.stack([batch[:, 0].astype(np.float16).astype(np.float32) * k for k in (1, 2)], axis=1)
    np.testing.assert_array_equal(engine.to_host(out), expected)
    np.testing.assert_array_equal(engine.run(batch[:1]), expected[:1])  # another batch size, same bindings
    assert engine.compute_stream.cuda_stream == 0x7F00


def test_tensorrt_engine_refuses_what_it_cannot_bind(fake_tensorrt):
    with pytest.raises(SegdeployError, match="1 inputs and 2 outputs") as excinfo:
        fake_tensorrt(_fake_trt_engine(outputs=("logits", "aux")))
    assert "auxiliary heads" in str(excinfo.value)

    engine = fake_tensorrt(_fake_trt_engine(profile=((2, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))))
    for size in (1, 9):  # the profile's batch range is the engine's own, not a record's
        with pytest.raises(SegdeployError, match=r"batch %d is outside the engine's profile 2\.\.8" % size):
            engine.to_device(np.zeros((size, 3, 8, 8), np.float32))

    failing = fake_tensorrt(_fake_trt_engine(enqueue_ok=False))
    with pytest.raises(SegdeployError, match="failed to enqueue"):
        failing.run(np.zeros((2, 3, 8, 8), np.float32))
