"""``tegrastats``, the Jetson's own monitor: board power and memory where NVML reports both as not supported.

On a Jetson the GPU has no memory of its own: CPU and GPU share the module's DRAM, so the GPU memory a model
costs shows up in tegrastats' ``RAM used/totalMB``. That figure is device-wide (every process and the OS), so a
benchmark reads it as a peak minus the baseline taken before the engine was loaded.

Line formats (one line per interval)::

    JetPack 4:   RAM 2217/3964MB (lfb 63x4MB) SWAP 0/1982MB (cached 0MB) CPU [..] GR3D_FREQ 0% .. POM_5V_IN 2832/2832
    JetPack 5/6: 11-22-2026 10:00:00 RAM 2448/7620MB (lfb 2x4MB) SWAP .. GR3D_FREQ 0% .. VDD_IN 4567mW/4321mW

tegrastats' "MB" is MiB: it divides /proc/meminfo's kB by 1024.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable

# "VDD_IN 4567mW/4321mW" (JetPack 5/6: current/average) or "POM_5V_IN 4567/4321" (JetPack 4)
_INPUT_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB")
MIB = 1024 * 1024


def parse_power_w(line: str) -> float | None:
    """Instantaneous board input power in watts, or None if the line has no input rail."""
    m = _INPUT_RAIL.search(line)
    return int(m.group(2)) / 1000.0 if m else None


def parse_ram_used_bytes(line: str) -> int | None:
    """Used (CPU + GPU shared) memory in bytes, or None if the line has no RAM field."""
    m = _RAM.search(line)
    return int(m.group(1)) * MIB if m else None


def executable() -> str | None:
    return shutil.which("tegrastats")


class TegrastatsStream:
    """``tegrastats --interval MS`` in a child process; every output line is passed to ``on_line`` from a reader
    thread until :meth:`stop`. ``wait_first(timeout)`` blocks until the first line has been handled."""

    def __init__(self, interval_ms: int, on_line: Callable[[str], None], exe: str | None = None):
        self._exe = exe or executable()
        if self._exe is None:
            raise FileNotFoundError("tegrastats is not on PATH (not a Jetson, or L4T tools not installed)")
        self._interval_ms = max(1, int(interval_ms))
        self._on_line = on_line
        self._first = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TegrastatsStream:
        self._proc = subprocess.Popen([self._exe, "--interval", str(self._interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, name="segdeploy-tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                self._on_line(line)
            finally:
                self._first.set()
        self._first.set()  # the process ended: nobody should wait for a line that will not come

    def wait_first(self, timeout: float) -> bool:
        return self._first.wait(timeout)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)


class TegrastatsMemory:
    """Shared-memory use from tegrastats, as a sampled reader: ``read()`` is the latest ``RAM`` figure in bytes,
    ``peak`` the largest seen since start (tegrastats samples on its own clock, so the peak is kept here)."""

    method = "tegrastats-ram"

    def __init__(self, interval_ms: int = 20, exe: str | None = None, first_line_timeout_s: float = 5.0):
        self.latest: int | None = None
        self.peak = 0
        self._stream = TegrastatsStream(interval_ms, self._on_line, exe).start()
        if not self._stream.wait_first(first_line_timeout_s) or self.latest is None:
            self._stream.stop()
            raise RuntimeError("tegrastats printed no RAM figure")

    def _on_line(self, line: str) -> None:
        used = parse_ram_used_bytes(line)
        if used is not None:
            self.latest = used
            self.peak = max(self.peak, used)

    def read(self) -> int:
        return self.peak

    def close(self) -> None:
        self._stream.stop()
