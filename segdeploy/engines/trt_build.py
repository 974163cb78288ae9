"""Building TensorRT engines from the run's ONNX files (``segdeploy engines build``), through polygraphy.

Precision lives in the ONNX file: on TensorRT >= 10 the network is strongly typed (fp16 = an fp16 ONNX,
int8 = a Q/DQ ONNX) and no precision flag is set. TensorRT 11 removed those flags altogether; only TensorRT < 10,
which cannot build strongly typed networks, gets the old flags. One optimization profile covers the batch sizes
(``--batch min:opt:max``); a timing cache per TensorRT version and GPU makes rebuilds fast.

An engine only runs on the TensorRT version and GPU it was built for, and only matches the ONNX it came from, so
``RUN_DIR/engines/model.<precision>.engine`` has a JSON record beside it and an engine whose record disagrees with
the present ONNX hash, TensorRT version or GPU is rebuilt, never silently used.

Everything above ``build_engine`` is plain logic, testable without TensorRT.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from segdeploy.engines import missing_onnx_reason
from segdeploy.engines.integrity import verify_onnx
from segdeploy.engines.profiles import DEFAULT_BATCH, onnx_input_name, profile_record, profile_shapes
from segdeploy.errors import BackendUnavailable, SegdeployError
from segdeploy.fileio import atomic_write_bytes, atomic_write_json, read_json
from segdeploy.machine.device import CUDA, cuda_device, cuda_index, resolve_device
from segdeploy.run.artifacts import onnx_digest  # noqa: F401 (re-exported)
from segdeploy.run.folder import Run, onnx_path

STRONGLY_TYPED_SINCE = (10, 0)  # NetworkDefinitionCreationFlag.STRONGLY_TYPED in every 10.x, Jetson's 10.3 too
FLAGS_REMOVED_SINCE = (11, 0)  # BuilderFlag FP16/INT8/BF16/FP8 no longer exist; networks are always strongly typed
BF16_SINCE = (9, 0)


# --- pure logic ----------------------------------------------------------------------------------------------

def parse_version(text: str) -> tuple[int, ...]:
    """"10.3.0.30" -> (10, 3, 0, 30), "11.4.0.post1" -> (11, 4, 0): the release numbers of a PEP 440 version,
    which is what the feature gates below compare (a pre-release of 10.0 already has strong typing)."""
    from packaging.version import Version

    return Version(text).release


def supports_strongly_typed(version: tuple[int, ...]) -> bool:
    return version >= STRONGLY_TYPED_SINCE


def precision_flags_removed(version: tuple[int, ...]) -> bool:
    return version >= FLAGS_REMOVED_SINCE


def build_plan(precision: str, version: tuple[int, ...]) -> dict:
    """How to make TensorRT honour the ONNX file's precision: a strongly typed network where possible; for
    TensorRT < 10 (weak typing only) the builder flags that allow the file's reduced-precision types."""
    if supports_strongly_typed(version):
        return {"strongly_typed": True, "flags": {}}
    # (TensorRT < 9 has no bf16 at all; trt_backend.check reports that before a build is tried)
    flags = {"fp16": {"fp16": True}, "bf16": {"bf16": True}, "int8": {"int8": True}}.get(precision, {})
    return {"strongly_typed": False, "flags": flags}


def make_record(*, precision: str, onnx_file: Path, onnx_sha256: str, trt_version: str, gpu: dict, profile: dict,
                plan: dict, workspace_mib: int | None, build_seconds: float, engine_bytes: int,
                activation_bytes: int | None = None, dla: dict | None = None) -> dict:
    return {
        "precision": precision,
        "onnx": str(onnx_file),
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu,
        "profile": profile,
        "strongly_typed": plan["strongly_typed"],
        "flags": sorted(plan["flags"]),
        "tf32": False,  # polygraphy leaves TF32 off (trtexec turns it on): fp32 engines are true fp32
        "workspace_mib": workspace_mib,
        "build_seconds": round(build_seconds, 2),
        "engine_bytes": engine_bytes,
        "activation_bytes": activation_bytes,  # per execution context: ICudaEngine.device_memory_size_v2
        "dla": dla,  # {"core", "layers", "layers_on_dla"} for a DLA build, else None
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


_PROFILE_SHAPE_KEYS = ("input", "min", "opt", "max")  # "batch" is only how the user spelled them


def engine_is_stale(record: dict | None, onnx_sha256: str, trt_version: str, gpu_name: str, *,
                    profile: dict | None = None, dla: int | None = None) -> str | None:
    """Why an existing engine must be rebuilt, or None when it is valid for this ONNX, TensorRT and GPU
    (and, when given, this optimization profile)."""
    if not record:
        return "no build record"
    if record.get("onnx_sha256") != onnx_sha256:
        return "the ONNX file changed since the engine was built"
    if record.get("tensorrt") != trt_version:
        return f"built with TensorRT {record.get('tensorrt')}, this is TensorRT {trt_version}"
    built_on = (record.get("gpu") or {}).get("name")
    if built_on != gpu_name:
        return f"built on {built_on}, this GPU is {gpu_name}"
    built_for = record.get("profile") or {}
    if profile is not None and any(built_for.get(k) != profile[k] for k in _PROFILE_SHAPE_KEYS):
        return f"built for batch {built_for.get('batch')}, asked for {profile['batch']}"
    built_dla = (record.get("dla") or {}).get("core")
    if built_dla != dla:
        where = lambda core: "the GPU" if core is None else f"DLA core {core}"  # noqa: E731
        return f"built for {where(built_dla)}, asked for {where(dla)}"
    return None


def engine_path(run_dir: str | Path, precision: str, dla: int | None = None) -> Path:
    # a DLA engine has a file of its own: building one must not replace the GPU engine the benchmark uses
    suffix = "" if dla is None else f".dla{dla}"
    return Path(run_dir) / "engines" / f"model.{precision}{suffix}.engine"


def record_path(run_dir: str | Path, precision: str, dla: int | None = None) -> Path:
    return engine_path(run_dir, precision, dla).with_suffix(".json")


DLA_PRECISIONS = ("fp16", "int8")


def dla_problem(precision: str, batch_spec: str) -> str | None:
    """Why a DLA build of ``precision`` with ``batch_spec`` cannot work, or None. DLA runs fp16 and int8 only,
    and has no dynamic shapes (min = opt = max); with GPU fallback on, TensorRT would otherwise quietly put
    every layer on the GPU."""
    if precision not in DLA_PRECISIONS:
        return f"DLA runs {' and '.join(DLA_PRECISIONS)} only, not {precision}; use --precisions fp16,int8"
    if len(set(batch_spec.split(":"))) != 1:
        return f"DLA has no dynamic shapes, so --batch {batch_spec} cannot be built; pass one batch size, e.g. --batch 1"
    return None


def timing_cache_path(run_dir: str | Path, trt_version: str, gpu: dict) -> Path:
    # tactic timings are only valid for one TensorRT version on one GPU architecture
    sm = str(gpu.get("compute_capability", "unknown")).replace(".", "")
    return Path(run_dir) / "engines" / f"timing.trt{trt_version}.sm{sm}.cache"


# --- TensorRT ------------------------------------------------------------------------------------------------

def import_tensorrt():
    """The tensorrt module, or a one-line BackendUnavailable saying how to get it."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailable("tensorrt: the TensorRT Python package is not installed "
                                 "(pip install tensorrt on a machine with an NVIDIA GPU)")
    try:
        import tensorrt
    except (ImportError, OSError) as e:  # a wheel whose libnvinfer does not match the CUDA driver
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise BackendUnavailable(f"tensorrt: the TensorRT package is installed but does not load ({first_line}); "
                                 "reinstall tensorrt for this CUDA version") from e
    return tensorrt


def gpu_identity(device: str) -> dict:
    from segdeploy.machine.envinfo import gpus, jetson_model

    index = cuda_index(device) or 0
    found = gpus()
    if index >= len(found):
        raise BackendUnavailable(f"tensorrt: no {device} (this machine has {len(found)} NVIDIA GPU(s))")
    identity = {k: found[index][k] for k in ("name", "compute_capability")}
    module = jetson_model()
    if module:  # every Orin module calls its GPU "Orin": the module tells them apart
        identity["name"] = f"{identity['name']} ({module})"
    return identity


def fresh_record(run: Run, precision: str, device: str, *, profile: dict | None = None,
                 dla: int | None = None) -> tuple[dict | None, str]:
    """The build record of a usable engine (or None) and why it is not usable."""
    trt = import_tensorrt()
    engine, record = engine_path(run.dir, precision, dla), record_path(run.dir, precision, dla)
    if not engine.is_file() or not record.is_file():
        return None, "not built yet"
    previous = read_json(record)
    reason = engine_is_stale(previous, onnx_digest(onnx_path(run.dir, precision)), trt.__version__,
                             gpu_identity(device)["name"], profile=profile, dla=dla)
    return (None, reason) if reason else (previous, "")


def activation_bytes(trt, serialized: bytes, dla: int | None = None) -> int | None:
    """Device memory one execution context needs (activations, scratch): ``device_memory_size_v2`` (TensorRT
    10+; the only one left in 11), ``device_memory_size`` before that."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if dla is not None:
        runtime.DLA_core = dla  # a DLA engine deserialises onto the core the runtime names
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        return None
    size = getattr(engine, "device_memory_size_v2", None)
    return int(size if size is not None else engine.device_memory_size)


def dla_config(core: int, placement: dict):
    """A polygraphy config post-processor selecting DLA ``core`` (polygraphy's use_dla always picks core 0) and
    recording how many of the network's layers the builder accepts for the DLA (``can_run_on_DLA``, asked before
    the build); the rest fall back to the GPU silently, in TensorRT itself, so this count is how a user sees it.
    It is an upper bound: DLA subgraph limits can move more layers to the GPU at build time."""

    def apply(builder, network, config):
        if builder.num_DLA_cores <= core:  # polygraphy only warns when GPU fallback is on
            raise SegdeployError(f"this device has {builder.num_DLA_cores} DLA core(s), so core {core} does not "
                                 "exist.", fix="DLA cores exist on Jetson AGX Xavier/Orin and Orin NX; "
                                               "pass --dla 0 or 1 there, or leave --dla out.")
        config.DLA_core = core
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        placement.update(core=core, layers=len(layers),
                         layers_on_dla=sum(bool(config.can_run_on_DLA(layer)) for layer in layers))

    return apply


def build_engine(run: Run, precision: str, *, batch: str = DEFAULT_BATCH, workspace_mib: int | None = None,
                 device: str = "cuda:0", force: bool = False, dla: int | None = None) -> tuple[dict, str]:
    """Build (or reuse) ``engines/model.<precision>.engine``; returns its record and what happened. ``dla``: build
    for that Jetson DLA core with GPU fallback (DLA runs fp16/int8 only)."""
    trt = import_tensorrt()

    device = resolve_device(device, (CUDA,))
    reason = missing_onnx_reason(run, precision)
    if reason:
        raise BackendUnavailable(reason)

    verify_onnx(run, precision)
    problem = dla_problem(precision, batch) if dla is not None else None
    if problem:
        raise SegdeployError(f"cannot build for DLA core {dla}: {problem}.")
    # TensorRT builds for, and deserialises on, the current CUDA device (trtexec sets it from --device too)
    with cuda_device(device):
        return _build_on_current_device(trt, run, precision, batch=batch, workspace_mib=workspace_mib,
                                        device=device, force=force, dla=dla)


def _build_on_current_device(trt, run: Run, precision: str, *, batch: str, workspace_mib: int | None, device: str,
                             force: bool, dla: int | None) -> tuple[dict, str]:
    from polygraphy.backend.trt import (CreateConfig, PostprocessConfig, Profile, engine_bytes_from_network,
                                        network_from_onnx_path)
    from polygraphy.exception import PolygraphyException

    source = onnx_path(run.dir, precision)
    shapes = profile_shapes(batch, run.input_shape)
    input_name = onnx_input_name(source)
    profile = profile_record(input_name, batch, shapes)
    if not force:
        record, why = fresh_record(run, precision, device, profile=profile, dla=dla)
        if record is not None:
            return record, "reused"
    else:
        why = "--force"

    version = parse_version(trt.__version__)
    plan = build_plan(precision, version)
    gpu = gpu_identity(device)
    cache = timing_cache_path(run.dir, trt.__version__, gpu)
    cache.parent.mkdir(parents=True, exist_ok=True)
    pools = {trt.MemoryPoolType.WORKSPACE: workspace_mib << 20} if workspace_mib else None
    start = time.perf_counter()
    try:
        network = network_from_onnx_path(str(source), strongly_typed=plan["strongly_typed"])
        dla_args = {"use_dla": True, "allow_gpu_fallback": True} if dla is not None else {}
        config = CreateConfig(profiles=[Profile().add(input_name, *shapes)], memory_pool_limits=pools,
                              load_timing_cache=str(cache), **plan["flags"], **dla_args)
        placement: dict = {}
        if dla is not None:
            config = PostprocessConfig(config, dla_config(dla, placement))
        serialized = engine_bytes_from_network(network, config, save_timing_cache=str(cache))
    except PolygraphyException as e:
        raise SegdeployError(f"TensorRT could not build the {precision} engine ({str(e).strip()[:200]}).",
                             path=source, fix="see the TensorRT messages above; inspect the ONNX with "
                                              f"polygraphy inspect model {source}") from e
    seconds = time.perf_counter() - start
    data = bytes(memoryview(serialized))
    # old record out, engine in, new record last: a record always describes the engine beside it
    record_path(run.dir, precision, dla).unlink(missing_ok=True)
    atomic_write_bytes(engine_path(run.dir, precision, dla), data)
    record = make_record(precision=precision, onnx_file=source, onnx_sha256=onnx_digest(source),
                         trt_version=trt.__version__, gpu=gpu, profile=profile, plan=plan,
                         workspace_mib=workspace_mib, build_seconds=seconds, engine_bytes=len(data),
                         activation_bytes=activation_bytes(trt, data, dla), dla=placement or None)
    atomic_write_json(record_path(run.dir, precision, dla), record)
    return record, f"built ({why})"
