"""Bench's settings, defined once: each key's name, default and help text. ``segdeploy bench``'s options
(:mod:`segdeploy.commands.options`), the study file's bench keys (:mod:`segdeploy.study.config`), its template
comments and the plan's bench fingerprint keys are read from here, so a default or a help text is changed in one
place. (``run_bench`` takes the same names; its older ``*_s`` keywords still read, with a deprecation line.)"""

from __future__ import annotations

from dataclasses import dataclass

from segdeploy.bench.latency import MIN_ITERS, WARMUP_ITERS
from segdeploy.records import key

_ISOLATE = ("process: each configuration in a fresh process (its own memory baseline; a crash is a failed row); "
            "none: all in this process.")


@dataclass(frozen=True)
class BenchConfig:
    batch: int = key(8, "Batch size for the accuracy pass and the throughput measurement (tensorrt: within the "
                        "engine profile, 1:8:32 unless built otherwise; --batch 32 measures throughput at that "
                        "profile's largest batch, as trtexec would).")
    device: str = key("auto", "auto, cpu, cuda or cuda:N.")
    warmup: float = key(0.2, "Warm-up seconds before each timed loop (trtexec: 0.2).")
    warmup_iters: int = key(WARMUP_ITERS, "Warm-up calls before each timed loop, as well as --warmup seconds (a slow "
                                          "CPU model needs more than one call to settle).")
    duration: float = key(1.0, "Minimum seconds per timed loop (trtexec: 3).")
    min_iters: int = key(MIN_ITERS, "Minimum timed iterations per loop, as well as --duration (p90 needs 10, p95 "
                                    "20, p99 100; a percentile with fewer is left blank).")
    threads: int | None = key(None, "Host threads for the CPU runtimes (torch: set_num_threads, onnxruntime: "
                                    "intra_op_num_threads, openvino: INFERENCE_NUM_THREADS); default: each runtime's "
                                    "own. Recorded in each row.")
    isolate: str = key("process", _ISOLATE)
    timeout: float | None = key(None, "With process isolation: seconds after which a configuration's worker is "
                                      "killed and recorded as a failed row (a hung runtime).")
