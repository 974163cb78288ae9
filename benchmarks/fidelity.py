"""Do segdeploy's latency figures agree with the runtimes' own tools?

For each run, precision and batch (default 1 and 8, CPU), the same ONNX file is timed by segdeploy's loop
(``segdeploy.bench.latency.measure`` around ``Engine.run``, with bench's warm-up policy) and by the runtime's own
measurement, interleaved A/B (round r: segdeploy then tool, round r+1: tool then segdeploy) so that drift of a
shared machine falls on both sides equally. Each round pairs adjacent medians; the printed ratio is the median of
the per-round ratios segdeploy / tool, with their range, so noise is visible. Goal: within 5%.

Pairs:

* ``onnxruntime``: ONNX Runtime's own profiler (``enable_profiling``; its ``model_run`` events time
  ``InferenceSession::Run`` inside the runtime) on a second engine of the same file loaded the same way.
  "same calls": segdeploy's loop on the profiled engine vs ``model_run`` of those calls; "A/B": segdeploy's
  engine as bench loads it vs the profiled engine, interleaved (the profiler slows its session, so this
  one is biased below 1). ``onnxruntime_perf_test`` is neither in the pip wheel (it is built from source) nor in
  apt, hence the profiler.
* ``openvino``: segdeploy's ``openvino`` engine. "same calls": segdeploy's loop vs the request's own ``latency``
  of those calls (what ``benchmark_app``'s sync loop collects); "A/B": vs a ``benchmark_app`` process on the file
  the engine loaded, with the engine's settings (latency hint, sync API, one request, the engine's inference
  precision and threads, the same input shape via ``-data_shape`` so the model stays dynamic as the engine
  loads it), its reported median.
* ``trtexec`` (GPU only): skipped with a message where there is no CUDA GPU or no trtexec.

Usage (random-init runs are fine for timing; export them first)::

    python benchmarks/fidelity.py RUN_DIR... [--precisions fp32,int8] [--batches 1,8] [--rounds 4] [--iters 10]
        [--tools onnxruntime,openvino,trtexec] [--out fidelity.jsonl]

Every line records the 1-minute load average before and after the pair: on a machine shared with other work
the ratios are noisy, and the report must say so. Results and what they show: docs/results/fidelity-cpu.md
(quiet machine: benchmark_app A/B within 5% for unet and segformer-b3 at batch 1 and 8; same calls within 0.3%,
5% for a 10 ms model on OpenVINO, whose engine copies its output; the profiler slows the session it profiles on
models with many small nodes; OpenVINO computes fp32 files in bf16 on AVX-512 BF16 CPUs unless told f32).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segdeploy.bench.latency import WARMUP_ITERS, measure


def load_avg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def segdeploy_side(engine, x: np.ndarray, iters: int, warmup_iters: int) -> float:
    """segdeploy's own loop (bench's warm-up: 0.2 s and ``warmup_iters`` calls), fixed to ``iters`` timed calls;
    the median in ms."""
    out = measure(lambda: engine.run(x), warmup_s=0.2, warmup_iters=warmup_iters, duration_s=0.0,
                  min_iters=iters, max_iters=iters)
    return out["p50"]


# -- onnxruntime: the profiler's model_run events -------------------------------------------------------------


def _load_profiled_ort(run, precision, threads, tmp: Path):
    """segdeploy's onnxruntime engine, loaded exactly as bench loads it but with the profiler switched on in its
    session options (``ort_backend`` builds them from ``onnxruntime.SessionOptions()``, replaced for the load)."""
    import onnxruntime as ort

    from segdeploy.engines import load_engine

    real = ort.SessionOptions

    def profiled_options():
        options = real()
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp / f"ort-{run.name}-{precision}")
        return options

    ort.SessionOptions = profiled_options
    try:
        return load_engine("onnxruntime", run, precision, "cpu", threads=threads)
    finally:
        ort.SessionOptions = real


def _model_run_ms(session) -> list[float]:
    events = json.loads(Path(session.end_profiling()).read_text())
    return [e["dur"] / 1e3 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]


class Counted:
    """An engine whose ``run`` calls are counted, so the runtime's own records of the timed calls (the last
    ``n`` of them) can be picked out."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0

    def run(self, x):
        self.calls += 1
        return self.engine.run(x)


def ort_pair(run, precision, batch, x, args, tmp) -> list[dict]:
    """Two comparisons. Same calls: segdeploy's loop on its onnxruntime engine with the profiler on, against the
    profiler's ``model_run`` of those very calls (no drift can enter: this is the timer and the Python binding).
    A/B: segdeploy's engine as bench loads it (no profiler) against the profiled engine's ``model_run``,
    interleaved; it differs from 1 by what profiling costs the session."""
    from segdeploy.engines import load_engine

    plain = load_engine("onnxruntime", run, precision, "cpu", threads=args.threads)
    profiled_engine = _load_profiled_ort(run, precision, args.threads, tmp)
    profiled = Counted(profiled_engine)
    ours, ours_profiled, spans = [], [], []
    for r in range(args.rounds):
        def profiled_round():
            ours_profiled.append(segdeploy_side(profiled, x, args.iters, args.warmup_iters))
            spans.append((profiled.calls - args.iters, args.iters))

        steps = [lambda: ours.append(segdeploy_side(plain, x, args.iters, args.warmup_iters)), profiled_round]
        for step in (reversed(steps) if r % 2 else steps):
            step()
    model_run = _model_run_ms(profiled_engine.session)
    theirs = [statistics.median(model_run[start:start + n]) for start, n in spans]
    plain.close()
    profiled_engine.close()
    info = {k: v for k, v in plain.info.items() if isinstance(v, (str, int, float))}
    return [{"tool": "ort-profiler same-calls", "segdeploy_ms": ours_profiled, "tool_ms": theirs,
             "engine_info": info},
            {"tool": "ort-profiler A/B", "segdeploy_ms": ours, "tool_ms": theirs, "engine_info": info}]


# -- OpenVINO: benchmark_app ----------------------------------------------------------------------------------


class OvLatencies:
    """segdeploy's openvino engine, with the infer request's own ``latency`` read after each call: the figure
    ``benchmark_app``'s sync loop collects (the request is the backend's private state; a benchmark may look)."""

    def __init__(self, engine):
        self.engine, self.latencies = engine, []

    def run(self, x):
        out = self.engine.run(x)
        (_, request), = self.engine._requests.values()  # one request: dynamic shapes on the CPU
        self.latencies.append(request.latency)
        return out


def benchmark_app_median(path: Path, shape: tuple[int, ...], iters: int, infer_precision: str,
                         threads: int | None) -> float:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    dims = ",".join(str(d) for d in shape)
    # the engine's settings: latency hint, one synchronous request, its inference precision (left alone the CPU
    # plugin computes in bf16 where the CPU has AVX512_BF16), its threads
    cmd = [exe, "-m", str(path), "-d", "CPU", "-hint", "latency", "-api", "sync", "-nireq", "1",
           "-niter", str(iters), "-data_shape", f"[{dims}]", "-infer_precision", infer_precision]
    if threads:
        cmd += ["-nthreads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = re.search(r"Median:\s+([\d.]+)\s*ms", out.stdout)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"benchmark_app failed ({out.returncode}): {(out.stdout + out.stderr)[-800:]}")
    return float(match.group(1))


def ov_pair(run, precision, batch, x, args, tmp) -> list[dict]:
    """Same calls: segdeploy's loop on its openvino engine against the request's own ``latency`` of those calls.
    A/B: the same loop against a ``benchmark_app`` process on the file the engine loaded, interleaved."""
    from segdeploy.engines import load_engine
    from segdeploy.engines.openvino_backend import INFERENCE_PRECISION

    engine = OvLatencies(load_engine("openvino", run, precision, "cpu", threads=args.threads))
    path = Path(engine.engine.info["onnx"])  # int8: the CPU form, where it was exported
    ours, theirs, own = [], [], []

    def our_round():
        ours.append(segdeploy_side(engine, x, args.iters, args.warmup_iters))
        own.append(statistics.median(engine.latencies[-args.iters:]))

    def tool_round():
        theirs.append(benchmark_app_median(path, x.shape, args.iters, INFERENCE_PRECISION[precision],
                                           args.threads))

    for r in range(args.rounds):
        for step in ((tool_round, our_round) if r % 2 else (our_round, tool_round)):
            step()
    info = {k: v for k, v in engine.engine.info.items() if isinstance(v, (str, int, float))}
    engine.engine.close()
    return [{"tool": "ov request.latency same-calls", "segdeploy_ms": ours, "tool_ms": own, "engine_info": info},
            {"tool": "benchmark_app A/B", "segdeploy_ms": ours, "tool_ms": theirs, "engine_info": info}]


# -- trtexec ----------------------------------------------------------------------------------------------------


def trtexec_skip_reason() -> str | None:
    if shutil.which("trtexec") is None:
        return "trtexec not found on PATH"
    try:
        import torch
    except ImportError:
        return "no torch to find a CUDA GPU"
    return None if torch.cuda.is_available() else "no CUDA GPU"


# -- driver -----------------------------------------------------------------------------------------------------


PAIRS = {"onnxruntime": ort_pair, "openvino": ov_pair}


def summarize_pair(result: dict) -> dict:
    ratios = [a / b for a, b in zip(result["segdeploy_ms"], result["tool_ms"])]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "segdeploy_p50_ms": statistics.median(result["segdeploy_ms"]),
            "tool_p50_ms": statistics.median(result["tool_ms"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10, help="timed calls per tool per round")
    ap.add_argument("--warmup-iters", type=int, default=WARMUP_ITERS)
    ap.add_argument("--tools", default="onnxruntime,openvino,trtexec")
    ap.add_argument("--threads", type=int, help="--threads of the engines (and -nthreads of benchmark_app)")
    ap.add_argument("--out", type=Path, help="append one JSON line per pair")
    args = ap.parse_args(argv)

    from segdeploy.run.folder import load_run, onnx_path

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "trtexec" in tools:
        reason = trtexec_skip_reason()
        print(f"trtexec: skipped ({reason})" if reason else
              "trtexec: present, but this script times CPU pairs only; compare `segdeploy bench --backends "
              "tensorrt` with `trtexec --loadEngine` by hand (docs/architecture.md)")
    header = f"{'model':<14}{'prec':<6}{'batch':>5}  {'tool':<30}{'segdeploy ms':>13}{'tool ms':>10}" \
             f"{'ratio':>8}  {'round range':<13} load"
    print(header)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in args.runs:
            run = load_run(run_dir)
            for precision in args.precisions.split(","):
                if not onnx_path(run.dir, precision).is_file():
                    print(f"{run.meta.model:<14}{precision:<6}  no onnx/model.{precision}.onnx: skipped")
                    continue
                for batch in (int(b) for b in args.batches.split(",")):
                    x = rng.standard_normal((batch, *run.meta.input_shape)).astype(np.float32)
                    for tool in (t for t in tools if t in PAIRS):
                        before, t0 = load_avg(), time.time()
                        try:
                            results = PAIRS[tool](run, precision, batch, x, args, Path(tmp))
                        except Exception as e:  # noqa: BLE001 -- one pair's failure is a line, not the end
                            print(f"{run.meta.model:<14}{precision:<6}{batch:>5}  {tool}: failed: "
                                  f"{type(e).__name__}: {str(e)[:300]}")
                            continue
                        after = load_avg()
                        for result in results:
                            report(run, precision, batch, result, args, before, after, t0)
    return 0


def report(run, precision, batch, result, args, before, after, t0) -> None:
    row = {"model": run.meta.model, "precision": precision, "batch": batch, **result, **summarize_pair(result),
           "rounds": args.rounds, "iters": args.iters, "warmup_iters": args.warmup_iters, "load_before": before,
           "load_after": after, "seconds": round(time.time() - t0, 1),
           "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    print(f"{row['model']:<14}{precision:<6}{batch:>5}  {row['tool']:<30}{row['segdeploy_p50_ms']:>13.2f}"
          f"{row['tool_p50_ms']:>10.2f}{row['ratio']:>8.3f}  {row['ratio_min']:.3f}-{row['ratio_max']:.3f}  "
          f"{before}->{after}", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
