"""Peak memory of one configuration while its timed loops run.

The method depends on where the engine runs, and the row records which one measured it (``peak_memory_method``),
because the numbers are not interchangeable:

* CPU: the process's resident set size. On Linux ``linux-vmhwm``: the kernel's RSS high-water mark (``VmHWM`` in
  /proc/self/status), reset just before the loop by writing 5 to /proc/self/clear_refs, so it is exact and costs
  nothing while timing. Elsewhere ``psutil-rss``: RSS sampled by a background thread (which can miss short peaks
  and, on few cores, slows the loop it measures). ``peak_memory_mb`` is the peak RSS, ``peak_memory_delta_mb``
  the peak minus the RSS before the engine was loaded (``baseline_memory_mb``), and ``load_memory_mb`` the RSS
  right after loading minus that baseline (the load footprint; ``mark_loaded``).
* CUDA, torch backend: ``torch.cuda.max_memory_allocated`` (tensors from torch's caching allocator; excludes the
  CUDA context and cached-but-free blocks); torch-compile: ``torch.cuda.max_memory_reserved``, because CUDA-graph
  replays run in a private memory pool that allocates nothing the allocated counter would see.
* CUDA, other backends (ONNX Runtime, TensorRT), the first that works of:
  ``nvml-process``, this process's ``usedGpuMemory`` from NVML (pynvml), sampled;
  ``tegrastats-ram`` on a Jetson, where NVML reports memory as not supported: the module's shared CPU/GPU memory
  in use, from tegrastats (:mod:`segdeploy.bench.tegrastats`);
  ``cuda-mem-get-info``, device-wide used memory from ``cudaMemGetInfo`` (TensorRT's advice), sampled.
  The last two count other processes too, so read them as upper bounds; the delta to the baseline taken before
  the engine was loaded is the better figure there.

Host RSS is measured in every case and reported as ``host_peak_rss_mb``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from segdeploy.bench import nvml, tegrastats
from segdeploy.machine.device import cuda_index, resolve_device

MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return _high_water_mark() is not None
    except OSError:
        return False


def _high_water_mark() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _nvml_reader(device: str) -> Callable[[], int] | None:
    """This process's memory on the GPU from NVML, or None if pynvml is absent or cannot query it."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = nvml.device_handle(pynvml, device)
        pid = os.getpid()

        def read() -> int:
            return sum(p.usedGpuMemory or 0 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                       if p.pid == pid)

        read()
        return read
    except Exception:  # pynvml missing, NVML NOT_SUPPORTED (Jetson, some vGPUs), no torch: use the next method
        return None


def _mem_get_info_reader(device: str) -> Callable[[], int]:
    import torch

    index = cuda_index(device)

    def read() -> int:
        free, total = torch.cuda.mem_get_info(index)
        return total - free

    return read


class DeviceMemoryReader:
    """Sampled device memory for engines whose allocations torch cannot see: ``method`` names the source,
    ``read()`` returns bytes, ``close()`` releases it (tegrastats runs as a child process)."""

    def __init__(self, device: str, *, use_nvml: bool = True):
        self._close: Callable[[], None] = lambda: None
        nvml_read = _nvml_reader(device) if use_nvml else None
        if nvml_read is not None:
            self.method, self.read = "nvml-process", nvml_read
            return
        if tegrastats.executable() is not None:
            try:
                tegra = tegrastats.TegrastatsMemory()
            except (OSError, RuntimeError):  # tegrastats present but silent (permissions): the next method
                pass
            else:
                self.method, self.read, self._close = tegra.method, tegra.read, tegra.close
                return
        self.method, self.read = "cuda-mem-get-info", _mem_get_info_reader(device)

    def close(self) -> None:
        self._close()


class MemoryProbe:
    """Create it before the engine is loaded (that is the baseline), then wrap the timed loops in :meth:`track`.

    ``requested_device``: the device asked for; anything but ``cpu`` also records GPU baselines, since where an
    ``auto`` engine lands is known only after loading it.
    """

    def __init__(self, requested_device: str = "auto", interval_s: float = 0.01):
        self.interval_s = interval_s
        self.device = "cpu"
        self.method = "psutil-rss"
        self._gpu_reader: Callable[[], int] | None = None
        self._gpu_baseline: int | None = 0
        self._gpu_peak = 0
        self._gpu_baselines: dict[tuple[str, str], int] = {}  # (cuda:N, method) -> bytes before the engine
        if requested_device != "cpu":
            self._capture_gpu_baselines(requested_device)
        # after the GPU baselines: a CUDA context they may have created is not the engine's host memory
        self.baseline_rss = _rss()
        self._rss_peak = self.baseline_rss
        self._loaded: tuple[int | None, str] | None = None  # (bytes above the baseline, method) after loading

    def mark_loaded(self, device: str, backend: str) -> None:
        """Record the load footprint: memory right after the engine was loaded, above the baseline, where the
        engine lives (CPU: RSS; CUDA: the same counter the peak will be read from, where one has a baseline)."""
        if not device.startswith("cuda"):
            self._loaded = (_rss() - self.baseline_rss, "rss")
            return
        import torch

        dev = f"cuda:{nvml.device_index(device)}"
        if backend in ("torch", "torch-compile"):
            method = "torch.cuda.max_memory_allocated" if backend == "torch" else "torch.cuda.max_memory_reserved"
            now = (torch.cuda.memory_allocated if backend == "torch" else torch.cuda.memory_reserved)(dev)
        else:
            reader = DeviceMemoryReader(dev)
            try:
                method, now = reader.method, reader.read()
            finally:
                reader.close()
        baseline = self._gpu_baselines.get((dev, method))
        self._loaded = (None if baseline is None else now - baseline, method)

    def _capture_gpu_baselines(self, requested_device: str) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        # where "auto" lands on a GPU (segdeploy.machine.device); only that device is touched (mem_get_info creates a CUDA
        # context, which on a shared server should not appear on every GPU)
        dev = resolve_device(requested_device)
        self._gpu_baselines[dev, "torch.cuda.max_memory_allocated"] = torch.cuda.memory_allocated(dev)
        self._gpu_baselines[dev, "torch.cuda.max_memory_reserved"] = torch.cuda.memory_reserved(dev)
        nvml_read = _nvml_reader(dev)  # before any CUDA context of ours exists
        if nvml_read is not None:
            self._gpu_baselines[dev, "nvml-process"] = nvml_read()
        if nvml_read is not None and not torch.cuda.is_initialized():
            # no device-wide baseline: cudaMemGetInfo would create a CUDA context a CPU engine never needs; if
            # NVML then proves blind to this process (containers), the row gets a peak without a delta
            return
        fallback = DeviceMemoryReader(dev, use_nvml=False)
        try:
            self._gpu_baselines[dev, fallback.method] = fallback.read()
        finally:
            fallback.close()

    @contextmanager
    def track(self, device: str, backend: str) -> Iterator[MemoryProbe]:
        """Measure memory while the block runs, for an engine on ``device`` (``cpu`` or ``cuda:N``)."""
        self.device = device
        use_hwm = _reset_high_water_mark()
        device_reader: DeviceMemoryReader | None = None
        if device.startswith("cuda"):
            import torch

            dev = resolve_device(device)
            if backend in ("torch", "torch-compile"):
                # CUDA-graph replays (torch-compile on GPU) reuse a private pool without allocating, so only the
                # reserved memory shows their activations
                self.method = ("torch.cuda.max_memory_allocated" if backend == "torch"
                               else "torch.cuda.max_memory_reserved")
                torch.cuda.reset_peak_memory_stats(dev)
            else:
                device_reader = DeviceMemoryReader(dev)
                if device_reader.method == "nvml-process" and device_reader.read() == 0:
                    # the engine is loaded, so this process holds GPU memory: NVML lists other PIDs (a container
                    # without the host's PID namespace); use a device-wide method instead
                    device_reader = DeviceMemoryReader(dev, use_nvml=False)
                self.method, self._gpu_reader = device_reader.method, device_reader.read
                self._gpu_peak = self._gpu_reader()
            self._gpu_baseline = self._gpu_baselines.get((dev, self.method))
        else:
            self.method = "linux-vmhwm" if use_hwm else "psutil-rss"

        sample_rss = not use_hwm
        thread, stop = None, threading.Event()
        if sample_rss or self._gpu_reader is not None:
            def sample() -> None:
                while True:
                    self._sample_once(sample_rss)
                    if stop.wait(self.interval_s):
                        return

            thread = threading.Thread(target=sample, name="segdeploy-memory-probe", daemon=True)
            thread.start()
        try:
            yield self
        finally:
            stop.set()
            if thread is not None:
                thread.join()
            self._sample_once(sample_rss)
            if device_reader is not None:
                device_reader.close()
            if use_hwm:
                self._rss_peak = max(self._rss_peak, _high_water_mark() or 0)
            if self.method.startswith("torch.cuda."):
                import torch

                peak = getattr(torch.cuda, self.method.removeprefix("torch.cuda."))
                self._gpu_peak = peak(resolve_device(device))

    def _sample_once(self, rss: bool) -> None:
        if rss:
            self._rss_peak = max(self._rss_peak, _rss())
        if self._gpu_reader is not None:
            self._gpu_peak = max(self._gpu_peak, self._gpu_reader())

    def result(self) -> dict:
        if self.device.startswith("cuda"):
            peak, baseline = self._gpu_peak, self._gpu_baseline
        else:
            peak, baseline = self._rss_peak, self.baseline_rss
        loaded, load_method = self._loaded or (None, None)
        return {
            "peak_memory_mb": peak / MIB,
            "peak_memory_delta_mb": None if baseline is None else (peak - baseline) / MIB,  # None: no baseline
            "peak_memory_method": self.method,
            "host_peak_rss_mb": self._rss_peak / MIB,
            "baseline_memory_mb": None if baseline is None else baseline / MIB,
            "load_memory_mb": None if loaded is None else loaded / MIB,
            "load_memory_method": load_method,
        }
