"""The machine's attainable compute rates and memory bandwidth (``segdeploy env --probe``), and how close each
bench row comes to them.

A row's ``gmacs_per_s`` is what the model achieved: its GMACs per image (at the run's input size) times the
images per second at batch B. The probe measures, once per device, what GEMM reaches on that device: the fp32
rate (the best of numpy, torch and onnxruntime's MatMul, each with its default threads), the int8 rate (the best
of onnxruntime's ``MatMulInteger``, u8 x s8 -> s32, which runs the VNNI/AMX kernels that onnxruntime's int8
convolutions use on x86, and ``torch._int_mm``), and on CUDA fp16/bf16 too; plus the bandwidth of a large copy.
A row's ``roofline_fraction`` is its GMAC/s over the peak of its precision (``roofline_basis``): a model far
below 1 loses time outside GEMM-like work (memory-bound layers, reformatting, Python), one near 1 is at the
machine's limit. GEMM rates are the best of several calls (attainable, not typical); a machine shared with other
work gives lower figures, so the record keeps the 1-minute load average it was measured under.

The result is cached as JSON in ``$SEGDEPLOY_CACHE`` (default ``~/.cache/segdeploy``), ``probe.json``, one entry
per device key (``cpu|<model>|<threads>t`` or ``cuda|<name>``); ``segdeploy bench`` only reads it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segdeploy.fileio import atomic_write_json, cache_dir, read_json
from segdeploy.machine import envinfo
from segdeploy.machine.cpuinfo import usable_cpus
from segdeploy.machine.device import cuda_index

PROBE_SCHEMA = "segdeploy.probe/1"
PROBE_FILE = "probe.json"
# the row precision -> the probed rate it is held against; CPU fp16/bf16 have no probe of their own
CPU_BASIS = {"fp32": "fp32", "int8": "int8"}
CUDA_BASIS = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8"}


def cpu_threads() -> int:
    """The intra-op threads a CPU runtime uses here: torch's setting when torch is loaded, else the usable cores."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return usable_cpus()


def device_key(device: str, *, threads: int | None = None) -> str | None:
    """The cache key of a device: ``cpu|<CPU model>|<threads>t`` or ``cuda|<GPU name>``; None if unnamed."""
    index = cuda_index(device)
    if index is not None:
        import torch

        return f"cuda|{torch.cuda.get_device_name(index)}"
    model = envinfo.cpu_model()  # looked up on the module, so a test can stand in for the CPU
    return f"cpu|{model}|{threads or cpu_threads()}t" if model else None


# -- measuring -------------------------------------------------------------------------------------------------


def best_time_s(fn: Callable[[], object], *, repeats: int, warmup: int = 2,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def gemm_rate(fn: Callable[[], object], m: int, n: int, k: int, **timing) -> float:
    """GMAC/s of ``fn``, one (m x k) @ (k x n) product per call: m n k multiply-adds over the best call's time."""
    return m * n * k / best_time_s(fn, **timing) / 1e9


def _ort_session(model_bytes: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def ort_matmul(a: np.ndarray, b: np.ndarray) -> Callable[[], np.ndarray]:
    """A call computing ``a @ b`` in onnxruntime (CPU): ``MatMul`` for floats, ``MatMulInteger`` (uint8 ``a``,
    int8 ``b`` as a constant, which lets onnxruntime pre-pack it as it does a model's weights) for integers."""
    from onnx import TensorProto, helper, numpy_helper

    integer = a.dtype == np.uint8
    op = "MatMulInteger" if integer else "MatMul"
    out_type = TensorProto.INT32 if integer else TensorProto.FLOAT
    in_type = TensorProto.UINT8 if integer else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", in_type, list(a.shape))],
        [helper.make_tensor_value_info("Y", out_type, [a.shape[0], b.shape[1]])],
        [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime that segdeploy supports
    session = _ort_session(model.SerializeToString())
    return lambda: session.run(None, {"A": a})[0]


def _cpu_candidates(size: int) -> dict[str, dict[str, Callable[[], object]]]:
    """precision -> {library: call computing one size^3 product}; libraries that are missing are left out."""
    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    a8 = rng.integers(0, 256, (size, size), dtype=np.uint8)
    b8 = rng.integers(-128, 128, (size, size), dtype=np.int8)
    out: dict[str, dict] = {"fp32": {"numpy": lambda: a32 @ b32}, "int8": {}}
    try:
        out["fp32"]["onnxruntime"] = ort_matmul(a32, b32)
        out["int8"]["onnxruntime"] = ort_matmul(a8, b8)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return out
    ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
    out["fp32"]["torch"] = lambda: torch.mm(ta, tb)
    if hasattr(torch, "_int_mm"):
        ia, ib = torch.from_numpy(a8.view(np.int8) ^ np.int8(-128)), torch.from_numpy(b8)  # int8 x int8 there
        try:
            torch._int_mm(ia[:32, :32], ib[:32, :32])
            out["int8"]["torch"] = lambda: torch._int_mm(ia, ib)
        except RuntimeError:  # a build without CPU int mm
            pass
    return out


def _cuda_candidates(device: str, size: int) -> dict[str, dict[str, Callable[[], object]]]:
    import torch

    def timed(fn):  # CUDA calls return before the work is done
        return lambda: (fn(), torch.cuda.synchronize(device))

    out = {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        out[name] = {"torch": timed(lambda a=a, b=b: torch.mm(a, b))}
    ia, ib = (torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device) for _ in range(2))
    out["int8"] = {"torch": timed(lambda: torch._int_mm(ia, ib))}
    return out


def copy_bandwidth_gbs(n_bytes: int = 256 * 2**20, *, repeats: int = 5, clock=time.perf_counter) -> tuple[float, str]:
    """GB/s of copying one ``n_bytes`` buffer into another (STREAM's Copy convention: bytes read + bytes
    written, so 2 x ``n_bytes`` per copy); torch's parallel copy where torch is present, else numpy's."""
    try:
        import torch

        src, dst = torch.ones(n_bytes // 4), torch.empty(n_bytes // 4)
        fn, method = (lambda: dst.copy_(src)), "torch-copy"
    except ImportError:
        src, dst = np.ones(n_bytes // 4, np.float32), np.empty(n_bytes // 4, np.float32)
        fn, method = (lambda: np.copyto(dst, src)), "numpy-copy"
    return 2 * n_bytes / best_time_s(fn, repeats=repeats, warmup=1, clock=clock) / 1e9, method


def measure_device(device: str = "cpu", *, sizes: tuple[int, ...] = (512, 1024), repeats: int = 20,
                   copy_bytes: int = 256 * 2**20, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Measure ``device``'s GEMM peaks (GMAC/s per precision: the best library and size, and every
    ``library@size`` figure) and its copy bandwidth; returns the record that :func:`probe` caches.

    Two sizes because neither alone finds the peak everywhere: 512 is short enough to run between other
    processes' time slices on a shared machine, 1024 amortises packing better on a quiet one."""
    cuda = device.startswith("cuda")
    rates: dict[str, dict[str, float]] = {}
    for size in sizes:
        candidates = _cuda_candidates(device, size) if cuda else _cpu_candidates(size)
        for precision, calls in candidates.items():
            for lib, fn in calls.items():
                rate = gemm_rate(fn, size, size, size, repeats=repeats, clock=clock)
                rates.setdefault(precision, {})[f"{lib}@{size}"] = rate
    record = {"schema": PROBE_SCHEMA, "device": device, "key": device_key(device),
              "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "host_load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "gemm_gmacs_per_s": rates}
    if not cuda:
        record["threads"] = cpu_threads()
        record["copy_gbs"], record["copy_method"] = copy_bandwidth_gbs(copy_bytes, clock=clock)
    for precision, by_lib in rates.items():
        if by_lib:
            best = max(by_lib, key=by_lib.get)
            record[f"{precision}_gmacs_per_s"], record[f"{precision}_library"] = by_lib[best], best
    return record


# -- the cache -------------------------------------------------------------------------------------------------


def _cache_file() -> Path:
    return cache_dir() / PROBE_FILE


def _read_cache() -> dict:
    path = _cache_file()
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except Exception:  # noqa: BLE001 -- a corrupt cache is as good as none: the probe measures again
        return {}
    return data.get("devices", {}) if isinstance(data, dict) and data.get("schema") == PROBE_SCHEMA else {}


def cached(device: str, *, threads: int | None = None) -> dict | None:
    """The cached probe record of ``device`` (for CPU: at ``threads``, default the current setting), or None."""
    try:
        key = device_key(device, threads=threads)
    except Exception:  # noqa: BLE001 -- no torch/CUDA to name the device: no roofline
        return None
    return _read_cache().get(key) if key else None


def probe(device: str = "cpu", *, measure: Callable[[str], dict] | None = None) -> dict:
    """Measure ``device`` now (with ``measure``, default :func:`measure_device`) and store the record in the
    cache, replacing that device's entry."""
    record = (measure or measure_device)(device)
    key = record.get("key")
    if key:
        devices = _read_cache()
        devices[key] = record
        atomic_write_json(_cache_file(), {"schema": PROBE_SCHEMA, "devices": devices})
    return record


# -- rows --------------------------------------------------------------------------------------------------------


def derived_fields(row, probe_record: dict | None = None) -> dict:
    """Figures a row derives from its measurements: ``latency_spread`` (batch-1 latency p90 / p50),
    ``gmacs_per_s`` (gmacs x throughput_ips) and, where the device has a cached probe (or ``probe_record`` is
    given), ``roofline_fraction`` of the peak of the row's precision."""
    out: dict = {}
    lat = row.latency_ms or {}
    if lat.get("p50") and lat.get("p90") is not None:
        out["latency_spread"] = lat["p90"] / lat["p50"]
    if row.status != "ok" or not row.gmacs or not row.throughput_ips:
        return out
    out["gmacs_per_s"] = row.gmacs * row.throughput_ips
    device = row.device or "cpu"
    basis = (CUDA_BASIS if device.startswith("cuda") else CPU_BASIS).get(row.precision)
    if basis is None:
        return out
    if probe_record is None and device.startswith(("cpu", "cuda")):
        threads = (row.engine_info or {}).get("threads")  # recorded by CPU backends that set it
        probe_record = cached(device, threads=threads)
    peak = (probe_record or {}).get(f"{basis}_gmacs_per_s")
    if peak:
        out.update(roofline_gmacs_per_s=peak, roofline_fraction=out["gmacs_per_s"] / peak,
                   roofline_basis=f"{basis} GEMM ({probe_record.get(f'{basis}_library')}, "
                                  f"probed {probe_record.get('measured')})")
    return out
