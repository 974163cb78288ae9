"""Latency and throughput, with trtexec's definitions so numbers can be set beside a trtexec log.

trtexec (samples/common/sampleReporting.cpp) warms up for a fixed time (200 ms), then runs until both a minimum
duration (3 s) and a minimum number of iterations are reached, and reports min/max/mean/median and a percentile
for each of:

* "Latency" = H2D + GPU compute + D2H of one query: here ``Engine.run`` on a host array, timed host to host;
* "GPU Compute Time" = the kernels only: here ``Engine.infer`` on a device-resident input. Where the engine
  enqueues on a CUDA stream it exposes (``Engine.compute_stream``: torch, torch-compile, tensorrt, and the ONNX
  Runtime CUDA and TensorRT EPs, which are handed a stream of ours) this is, as in trtexec, the time between two
  CUDA events recorded on that stream around the call (``compute_timer: "cuda-events"``). Otherwise it is host
  time around the call plus a synchronize (``compute_timer: "host"``; on CPU there are no copies, so it equals
  the latency; both are reported anyway).
  Like trtexec's, the event time includes gaps where the GPU waits for the host to enqueue, so a model whose
  launch overhead exceeds its kernels shows that overhead here (CUDA graphs remove it);
* "Throughput" = queries / wall time: here images per second at batch B, ``B / median(batch-B run time)``.

A percentile is reported only where the count of timings supports it (``PERCENTILE_MIN_N``): p90 from 10, p95
from 20, p99 from 100 timed iterations, else it is null. trtexec would print "p99" of 10 runs, which is their
maximum; a table that shows it as a p99 claims a tail it never observed. The default loop runs at least
``MIN_ITERS`` = 20 iterations so that p95 is supported.

A loop whose timings scatter is flagged ``noisy`` (:func:`noise`), as trtexec warns that "GPU compute time is
unstable, with coefficient of variance = X%".
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

PERCENTILES = (90, 95, 99)
# the fewest timings that support each percentile: the smallest counts where it is not simply the maximum (p90
# of 10 timings is the 9th, of 9 the 9th = the maximum; p95 of 20 the 19th; p99 of 100 the 99th)
PERCENTILE_MIN_N = {90: 10, 95: 20, 99: 100}
# the default minimum of timed iterations per loop: enough for p95 (PERCENTILE_MIN_N)
MIN_ITERS = PERCENTILE_MIN_N[95]
# a loop is noisy above either threshold. trtexec warns from a coefficient of variation of 1% on a GPU with
# locked clocks; a CPU that shares its cores with the OS scatters more, so 10% here. CV alone is swayed by one
# slow call, so the robust p90/p50 ratio is checked too: 1.5 means a tenth of the calls took half as long again as
# the median (the cost study's unet torch fp32 on a busy host: p90/p50 2.45; its quiet rows: 1.01-1.20)
NOISY_CV = 0.10
NOISY_SPREAD = 1.5
# warm-up runs at least this many calls as well as ``warmup_s``: trtexec's 200 ms is one call of a 150 ms CPU
# model, and the first calls of a CPU session are slower (thread-pool spin-up, arena growth, first-touch pages)
WARMUP_ITERS = 5


def find_percentile(sorted_ms: np.ndarray, percentile: float) -> float:
    """trtexec's ``findPercentile``: in the ascending series of n timings, exclude the top
    ``floor((1 - p/100) * n)`` and return the largest remaining one, i.e. the ``ceil(p/100 * n)``-th smallest timing:
    numpy's ``method="inverted_cdf"``. Unlike numpy's default (linear interpolation) it always returns an observed
    timing: p99 of 100 runs is the 99th smallest, p99 of fewer than 100 runs is the maximum.
    """
    if len(sorted_ms) == 0:
        return float("inf")  # as trtexec does for an empty series
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile {percentile} is not in [0, 100]")
    # numpy forms p/100 * n in floating point, where p99.9 of 1000 runs lands a hair above 999 and would pick the
    # maximum; a nudge far below any real gap between p/100 * n and an integer keeps exact products exact
    return float(np.percentile(sorted_ms, max(percentile - 1e-9, 0.0), method="inverted_cdf"))


def summarize(times_ms: np.ndarray | list[float]) -> dict:
    """mean, p50 (the median: mean of the two middle values for an even count, as trtexec's ``findMedian``),
    p90/p95/p99 (``find_percentile``; None where fewer timings than ``PERCENTILE_MIN_N`` asks), min, max, n,
    in milliseconds, and ``cv``: the coefficient of variation (population standard deviation / mean, as
    trtexec computes it)."""
    x = np.sort(np.asarray(times_ms, dtype=np.float64))
    if x.size == 0:
        raise ValueError("no timings to summarize")
    mean = float(x.mean())
    out = {"mean": mean, "p50": float(np.median(x))}
    out.update({f"p{p}": find_percentile(x, p) if x.size >= PERCENTILE_MIN_N[p] else None for p in PERCENTILES})
    out.update({"min": float(x[0]), "max": float(x[-1]), "n": int(x.size),
                "cv": float(x.std() / mean) if mean > 0 else None})
    return out


def supported(summary: dict | None, p: int) -> float | None:
    """``summary``'s p-th percentile where its count supports it: rows written before bench/3 stored p99 of 10
    runs (their maximum), and are read through this."""
    summary = summary or {}
    n = summary.get("n")
    return None if n is not None and n < PERCENTILE_MIN_N[p] else summary.get(f"p{p}")


def noise(loops: dict[str, dict | None], host_load: float | None = None,
          cores: int | None = None) -> tuple[bool | None, str | None]:
    """``(noisy, reason)`` for a row's timed loops (``{"latency": summary, "batch-8": summary, ...}``): noisy where
    a loop's coefficient of variation exceeds ``NOISY_CV`` or its p90/p50 exceeds ``NOISY_SPREAD``, or where
    the host's 1-minute load exceeded its cores (other work competed for them). None where nothing could be
    judged (no loop with a CV or a p90, and no load)."""
    reasons, judged = [], False
    for name, s in loops.items():
        if not s:
            continue
        cv, p50, p90 = s.get("cv"), s.get("p50"), s.get("p90")
        if cv is not None:
            judged = True
            if cv > NOISY_CV:
                reasons.append(f"{name} CV {cv:.0%} > {NOISY_CV:.0%}")
        if p90 is not None and p50:
            judged = True
            if p90 / p50 > NOISY_SPREAD:
                reasons.append(f"{name} p90/p50 {p90 / p50:.2f} > {NOISY_SPREAD}")
    if host_load is not None and cores:
        judged = True
        if host_load > cores:
            reasons.append(f"host load {host_load:.1f} > {cores} cores")
    if not judged:
        return None, None
    return bool(reasons), "; ".join(reasons) or None


class HostTimer:
    """Milliseconds of ``perf_counter`` around one call, ``sync`` (e.g. ``torch.cuda.synchronize``) included, so
    asynchronous work is charged to the call that queued it."""

    method = "host"

    def __init__(self, sync: Callable[[], None] | None = None):
        self._sync = sync

    def time(self, fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        if self._sync is not None:
            self._sync()
        return (time.perf_counter() - t0) * 1e3


class CudaEventTimer:
    """Milliseconds between two CUDA events recorded on ``stream`` before and after one call: the device's own
    clock, as trtexec's "GPU Compute Time". Waits for the end event, so calls never overlap.

    ``make_event`` builds a timing event (default ``torch.cuda.Event(enable_timing=True)``); anything with
    ``record(stream)``, ``synchronize()`` and ``elapsed_time(end)`` in ms will do.
    """

    method = "cuda-events"

    def __init__(self, stream, make_event: Callable[[], object] | None = None):
        if make_event is None:
            import torch

            def make_event():
                return torch.cuda.Event(enable_timing=True)
        self._stream = stream
        self._start, self._end = make_event(), make_event()

    def time(self, fn: Callable[[], object]) -> float:
        self._start.record(self._stream)
        fn()
        self._end.record(self._stream)
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def measure(fn: Callable[[], object], *, warmup_s: float = 0.2, duration_s: float = 1.0,
            min_iters: int = MIN_ITERS, max_iters: int = 100_000, sync: Callable[[], None] | None = None, timer=None,
            warmup_iters: int = WARMUP_ITERS) -> dict:
    """Time ``fn`` after a warm-up: at least ``warmup_iters`` calls (and at least one) and ``warmup_s`` seconds,
    then timed calls until both ``duration_s`` seconds and ``min_iters`` iterations are reached (never more than
    ``max_iters``).

    Each iteration is timed on its own by ``timer`` (default :class:`HostTimer` with ``sync``); warm-up and loop
    length are wall-clock. Returns :func:`summarize` of the iteration times (ms) plus ``total_s`` (seconds spent
    in the timed loop).
    """
    if min_iters < 1 or max_iters < min_iters:
        raise ValueError(f"need 1 <= min_iters <= max_iters, got {min_iters}, {max_iters}")
    timer = timer or HostTimer(sync)
    start, warm = time.perf_counter(), 0
    while True:
        timer.time(fn)
        warm += 1
        if warm >= warmup_iters and time.perf_counter() - start >= warmup_s:
            break

    times: list[float] = []
    loop_start = time.perf_counter()
    while len(times) < max_iters:
        times.append(timer.time(fn))
        if time.perf_counter() - loop_start >= duration_s and len(times) >= min_iters:
            break
    out = summarize(times)
    out["total_s"] = time.perf_counter() - loop_start
    return out


def compute_timer(engine):
    """CUDA events on the engine's stream where it exposes one, else host time with its synchronize."""
    stream = getattr(engine, "compute_stream", None)
    return CudaEventTimer(stream) if stream is not None else HostTimer(engine.synchronize)


def measure_engine(engine, batch_1: np.ndarray, batch_b: np.ndarray, *, warmup_s: float = 0.2,
                   duration_s: float = 1.0, min_iters: int = MIN_ITERS, max_iters: int = 100_000,
                   warmup_iters: int = WARMUP_ITERS) -> dict:
    """trtexec-style numbers for one engine (see the module docstring).

    ``batch_1``: (1, C, S, S) and ``batch_b``: (B, C, S, S) normalised float32 host arrays. Returns
    ``latency_ms`` (batch 1, host to host), ``compute_ms`` (batch 1, device-resident input and output, timed
    as ``compute_timer`` says),
    ``batch_latency_ms`` (batch B, host to host), ``throughput_ips`` (images/s at batch B) and the energy of the
    batch-B loop (``avg_power_w``, ``energy_j_per_image``; see :mod:`segdeploy.bench.power`).
    """
    timing = dict(warmup_s=warmup_s, duration_s=duration_s, min_iters=min_iters, max_iters=max_iters,
                  warmup_iters=warmup_iters)
    latency = measure(lambda: engine.run(batch_1), **timing)

    on_device = engine.to_device(batch_1)
    engine.synchronize()
    timer = compute_timer(engine)
    compute = measure(lambda: engine.infer(on_device), timer=timer, **timing)

    from segdeploy.bench.power import PowerMeter

    b = int(batch_b.shape[0])
    calls = [0]

    def run_batch():
        calls[0] += 1
        return engine.run(batch_b)

    # warm up outside the energy window (first calls at a new batch size may build or tune kernels), then time
    # the throughput loop inside it; images count every call inside the window, its one warm-up call included
    measure(lambda: engine.run(batch_b), warmup_s=warmup_s, warmup_iters=warmup_iters, duration_s=0.0, min_iters=1)
    with PowerMeter(engine.device) as power:
        batch_latency = measure(run_batch, **{**timing, "warmup_s": 0.0, "warmup_iters": 1})
    return {
        "latency_ms": latency,
        "compute_ms": compute,
        "compute_timer": timer.method,
        "batch_latency_ms": batch_latency,
        "throughput_ips": b / (batch_latency["p50"] / 1e3),
        **power.result(images=calls[0] * b),
    }
