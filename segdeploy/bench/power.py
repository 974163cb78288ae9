"""Energy per image: average power sampled while the throughput loop runs.

Sources, by device:

* CUDA on a datacenter/desktop GPU: NVML's energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules
  since the driver loaded; Volta and newer), read at the start and end like RAPL below. Where the counter is not
  supported, board power (``nvmlDeviceGetPowerUsage``, milliwatts) sampled by a thread every ``interval_s``; on
  Ampere and newer that reading is itself a 1-second average, so it lags the loop it samples;
* Jetson: ``tegrastats`` (NVML reports power as not supported there); the board's input rail (``VDD_IN``, or
  ``POM_5V_IN`` on older JetPacks) is the whole module's power;
* CPU on Linux x86: RAPL package energy counters (``/sys/class/powercap/intel-rapl:N/energy_uj``), read at the
  start and end (a counter, so no sampling is needed); many VMs do not expose them.

Where none is available the fields are null and ``power_method`` says why. Joules per image are
``average power x loop time / images processed``: the idle power of the device is included, as it is in what a
deployment pays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from segdeploy.bench import nvml, tegrastats

RAPL_ROOT = Path("/sys/class/powercap")


def rapl_packages(root: Path = RAPL_ROOT) -> list[Path]:
    """Readable top-level RAPL package domains (intel-rapl:0, intel-rapl:1, ...; not their sub-zones)."""
    if not root.is_dir():
        return []
    zones = [p for p in sorted(root.glob("intel-rapl:*")) if p.name.count(":") == 1 and (p / "energy_uj").is_file()]
    readable = []
    for z in zones:
        try:
            int((z / "energy_uj").read_text())
            readable.append(z)
        except (OSError, ValueError):  # root-only since the 2020 PLATYPUS mitigation on many kernels
            pass
    return readable


def _rapl_energy_j(zones: list[Path]) -> tuple[float, float]:
    """(energy in J summed over zones, the counters' wrap range in J)."""
    energy = sum(int((z / "energy_uj").read_text()) for z in zones) / 1e6
    wrap = sum(int((z / "max_energy_range_uj").read_text()) for z in zones
               if (z / "max_energy_range_uj").is_file()) / 1e6
    return energy, wrap


class PowerMeter:
    """``with PowerMeter(device) as meter: <timed loop>``; then ``meter.result(images)``. ``clock``: seconds, the
    loop's time base (energy counters are divided by the time between their two reads on it)."""

    def __init__(self, device: str, interval_s: float = 0.05, *, rapl_root: Path = RAPL_ROOT,
                 clock: Callable[[], float] = time.perf_counter):
        self.device = device
        self._clock = clock
        self.interval_s = interval_s
        self.rapl_root = rapl_root
        self.method: str | None = None
        self.reason: str | None = None
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = 0.0
        self._rapl: list[Path] = []
        self._energy = None  # () -> (joules, wrap range) for counter sources (RAPL, NVML energy)
        self._e0 = 0.0

    # -- sources -------------------------------------------------------------------------------------------
    def _start_nvml(self) -> bool:
        try:
            import pynvml
        except ImportError:
            self.reason = "NVML not available (pip install nvidia-ml-py)"
            return False
        try:
            pynvml.nvmlInit()
            handle = nvml.device_handle(pynvml, self.device)
            pynvml.nvmlDeviceGetPowerUsage(handle)  # raises NVMLError_NotSupported on Jetson
        except Exception as e:  # noqa: BLE001 -- any NVML failure means "no NVML power here"
            self.reason = f"NVML power query failed: {type(e).__name__}"
            return False
        try:
            def energy_j() -> float:
                return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3

            self._e0 = energy_j()
        except Exception:  # noqa: BLE001 -- pre-Volta GPUs and some vGPUs: sample power instead
            self.method = "nvml"
            self._thread = threading.Thread(target=self._poll,
                                            args=(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,), daemon=True)
            return True
        self.method = "nvml-energy"
        self._energy = lambda: (energy_j(), 0.0)  # a 64-bit millijoule counter: no wrap within a benchmark
        return True

    def _start_tegrastats(self) -> bool:
        if tegrastats.executable() is None:
            return False
        self._tegrastats = tegrastats.TegrastatsStream(max(10, int(self.interval_s * 1000)), self._on_tegrastats)
        self._tegrastats.start()
        self.method = "tegrastats"
        return True

    def _start_rapl(self) -> bool:
        self._rapl = rapl_packages(self.rapl_root)
        if not self._rapl:
            self.reason = "no readable RAPL energy counters (VM, non-Intel/AMD CPU, or root-only sysfs)"
            return False
        self.method = "rapl"
        self._energy = lambda: _rapl_energy_j(self._rapl)
        self._e0, _ = self._energy()
        return True

    def _poll(self, read_watts) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append(float(read_watts()))
            except Exception:  # noqa: BLE001 -- a failed sample is skipped, not fatal to the benchmark
                pass
            self._stop.wait(self.interval_s)

    def _on_tegrastats(self, line: str) -> None:
        watts = tegrastats.parse_power_w(line)
        if watts is not None and not self._stop.is_set():
            self._samples.append(watts)

    # -- context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> PowerMeter:
        if self.device.startswith("cuda"):
            started = self._start_nvml() or self._start_tegrastats()
        else:
            started = self._start_rapl()
        if started and self._thread is not None:
            self._thread.start()
        self._t0 = self._clock()
        return self

    def __exit__(self, *exc) -> None:
        self._t1 = self._clock()
        self._stop.set()
        if self.method == "tegrastats":
            self._tegrastats.stop()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._energy is not None:  # an energy counter: the average power over the loop, exactly
            e1, wrap = self._energy()
            energy = e1 - self._e0 if e1 >= self._e0 else e1 - self._e0 + wrap  # counter wrapped once
            seconds = self._t1 - self._t0
            self._samples = [energy / seconds] if seconds > 0 else []

    def result(self, images: int) -> dict:
        """``avg_power_w``, ``energy_j_per_image`` and how they were measured, for ``images`` processed."""
        if not self._samples:
            return {"avg_power_w": None, "energy_j_per_image": None, "power_method": None,
                    "power_reason": self.reason or "no power samples during the loop"}
        watts = sum(self._samples) / len(self._samples)
        seconds = self._t1 - self._t0
        return {"avg_power_w": watts, "energy_j_per_image": watts * seconds / images if images else None,
                "power_method": self.method, "power_samples": len(self._samples)}
