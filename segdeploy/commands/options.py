"""Options several commands share, defined once: ``device: Device = "auto"`` in a command's signature gives it
the same flag, check and help text as every other command taking a device.

The option name comes from the parameter (``batch`` -> ``--batch``), so a command keeps its own spelling."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from segdeploy.commands.util import number_option

Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Duration = Annotated[float, typer.Option(callback=number_option("--duration"),
                                         help="Minimum seconds per timed loop (trtexec: 3).")]
MinIters = Annotated[int, typer.Option("--min-iters", min=1, help=(
    "Minimum timed iterations per loop, as well as --duration (p90 needs 10, p95 20, p99 100; a percentile with "
    "fewer is left blank)."))]
Warmup = Annotated[float, typer.Option(callback=number_option("--warmup"),
                                       help="Warm-up seconds before each timed loop (trtexec: 0.2).")]
WarmupIters = Annotated[int, typer.Option(help="Warm-up calls before each timed loop, as well as --warmup seconds "
                                               "(a slow CPU model needs more than one call to settle).")]
BenchBatch = Annotated[int, typer.Option(help="Batch size for the accuracy pass and the throughput measurement "
                                              "(tensorrt: within the engine profile, 1:8:32 unless built otherwise; "
                                              "--batch 32 measures throughput at that profile's largest batch, as "
                                              "trtexec would).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="Host threads for the CPU runtimes (torch: set_num_threads, onnxruntime: "
                             "intra_op_num_threads, openvino: INFERENCE_NUM_THREADS); default: each runtime's own. "
                             "Recorded in each row.")]
Timeout = Annotated[Optional[float], typer.Option(
    "--timeout", callback=number_option("--timeout", positive=True),
    help="With --isolate process: seconds after which a configuration's worker is killed and recorded as a failed "
         "row (a hung runtime).")]
