"""CPU INT8 benchmark: full-size models from `segdeploy export`, batch 1, N threads, every CPU runtime and INT8 form.

    PYTHONPATH=. python benchmarks/cpu_int8.py [--models unet,segformer-b3] [--size 256] [--threads 2] [--rounds 5]

For each model: a seeded random-init checkpoint (speed does not depend on training; accuracy parity on a trained
model is covered by tests/test_int8_forms.py) is exported with the project's own `export_run` (fp32 + int8 in both
forms: model.int8.onnx = TensorRT form, model.int8-cpu.onnx = uint8-activation CPU form). Then every engine is
loaded through the project's backends (the form each backend does not load by default is loaded explicitly, to
show why the default is what it is), warmed up, and timed in interleaved rounds: each round runs every engine a few
times in a rotating order, so load from other processes on a shared machine hits all of them alike. Printed per engine:
median latency, p90/p50 (the spread), the best round, the speed-up over torch fp32, the fraction of pixels whose
class agrees with torch fp32 on a few synthetic images, and, for onnxruntime, how many Conv/MatMul nodes its CPU
EP runs as integer kernels (QLinearConv/QLinearMatMul) and how many as DequantizeLinear + float op. File sizes and
the load average before and after are printed too; --json writes everything to a file.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_run(model_name: str, size: int, out: Path, calib_images: int) -> Path:
    """A seeded random-init checkpoint of ``model_name`` at ``size`` px on the synthetic set's classes, exported."""
    import torch

    from segdeploy.export import export_run
    from segdeploy.models import create_model
    from segdeploy.run.folder import manifest_path, save_checkpoint

    run_dir = out / f"{model_name}-{size}"
    if manifest_path(run_dir).is_file():
        return run_dir  # exported by an earlier call with the same --out
    torch.manual_seed(0)
    meta = {"model": model_name, "family": None, "num_classes": 4,
            "classes": ["background", "cavity", "wall", "lesion"], "in_chans": 1, "img_size": size,
            "mean": [0.5], "std": [0.25], "dataset": {"spec": "synthetic:24"},
            "split": {"seed": 42, "k": 3, "fold": 0, "group_regex": None}}
    save_checkpoint(run_dir, create_model(model_name, num_classes=4, in_chans=1, img_size=size), meta)
    t0 = time.perf_counter()
    manifest = export_run(run_dir, ["fp32", "int8"], calib_images=calib_images, parity_images=2)
    failed = {p: e.get("error") for p, e in manifest.precisions.items() if e["status"] != "ok"}
    if failed:
        raise SystemExit(f"{model_name}: export failed: {failed}")
    print(f"  exported {model_name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run_dir


def ort_kernels(path: Path, tmp: Path) -> dict:
    """Conv/MatMul of the graph onnxruntime's CPU EP runs: as integer kernels, or as DequantizeLinear + float op."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node)
    return {"integer": ops["QLinearConv"] + ops["QLinearMatMul"] + ops["MatMulIntegerToFloat"],
            "float": ops["Conv"] + ops["MatMul"] + ops["FusedMatMul"] + ops["FusedConv"]}


def engines(run, threads: int, tmp: Path) -> dict:
    """label -> (engine, extra info): every CPU runtime x precision x INT8 form worth comparing."""
    import onnxruntime as ort

    from segdeploy.engines import load_engine, openvino_backend
    from segdeploy.run.folder import onnx_path

    class OrtSession:  # one given ONNX file on ORT's CPU EP, whichever form the backend itself would pick
        def __init__(self, session):
            self.session, self.info = session, {}

        def run(self, x):
            return self.session.run(None, {"input": x})[0]

        def close(self):
            self.session = None

    found = {"torch fp32": (load_engine("torch", run, "fp32", "cpu", threads=threads), {})}
    found["onnxruntime fp32"] = (load_engine("onnxruntime", run, "fp32", "cpu", threads=threads), {})
    for form, path in (("cpu", onnx_path(run.dir, "int8", "cpu")), ("tensorrt", onnx_path(run.dir, "int8"))):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        found[f"onnxruntime int8 ({form} form)"] = (OrtSession(session),
                                                    {"ort_conv_matmul": ort_kernels(path, tmp)})
    found["openvino fp32"] = (load_engine("openvino", run, "fp32", "cpu", threads=threads), {})
    if openvino_backend.OpenVinoEngine.check("bf16", "cpu", backend="openvino") is None:
        found["openvino bf16"] = (load_engine("openvino", run, "bf16", "cpu", threads=threads), {})
    core = openvino_backend._core()
    for form, path in (("cpu", onnx_path(run.dir, "int8", "cpu")), ("tensorrt", onnx_path(run.dir, "int8"))):
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        engine = openvino_backend.OpenVinoEngine(run, "int8", "cpu", backend="openvino", threads=threads)
        engine.compile_model(core, core.read_model(str(path)), config)
        layers = openvino_backend.weighted_layer_precisions(engine.compiled((1, *run.input_shape)))
        found[f"openvino int8 ({form} form)"] = (engine, {"ov_weighted_layers": layers})
    return found


def interleaved(timed: dict, x: np.ndarray, rounds: int, per_round: int, warmup: int) -> dict[str, list[float]]:
    """``rounds`` x every engine (rotating order): a pause and one untimed run, then ``per_round`` timed runs.

    The pause and the untimed run are there because the runtimes' worker threads keep spinning for a while after a
    call (onnxruntime's intra-op pool, libgomp under torch): on 2 cores the engine timed right after another
    runtime's call would otherwise share the cores with those spinning threads."""
    for engine, _ in timed.values():
        for _ in range(warmup):
            engine.run(x)
    times: dict[str, list[float]] = {label: [] for label in timed}
    labels = list(timed)
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            engine = timed[label][0]
            time.sleep(0.05)
            engine.run(x)
            for _ in range(per_round):
                t0 = time.perf_counter()
                engine.run(x)
                times[label].append((time.perf_counter() - t0) * 1e3)
    return times


def bench_model(model_name: str, args, out: Path) -> dict:
    from segdeploy.export import load_images, read_manifest
    from segdeploy.run.folder import load_run

    print(f"\n## {model_name} at {args.size} px, batch 1, {args.threads} threads", flush=True)
    run = load_run(make_run(model_name, args.size, out, args.calib_images))
    manifest = read_manifest(run.dir).precisions
    sizes = {"fp32": manifest["fp32"]["size_mb"], "int8 (tensorrt form)": manifest["int8"]["size_mb"],
             "int8 (cpu form)": manifest["int8"]["forms"]["cpu"]["size_mb"]}
    images = load_images(run, "test", 4)
    with tempfile.TemporaryDirectory() as tmp:
        timed = engines(run, args.threads, Path(tmp))
    reference = timed["torch fp32"][0].run(images)
    agreement = {label: float((engine.run(images).argmax(1) == reference.argmax(1)).mean())
                 for label, (engine, _) in timed.items()}
    load_before = os.getloadavg()
    times = interleaved(timed, images[:1], args.rounds, args.per_round, args.warmup)
    load_after = os.getloadavg()
    torch_median = float(np.median(times["torch fp32"]))
    rows = []
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)\n")
    print("| engine | median ms | p90/p50 | best ms | x torch fp32 | pixels = torch fp32 | kernels |")
    print("|---|---|---|---|---|---|---|")
    for label, ts in times.items():
        median = float(np.median(ts))
        row = {"engine": label, "median_ms": median, "p90_over_p50": float(np.percentile(ts, 90) / median),
               "best_ms": float(np.min(ts)), "speedup_vs_torch_fp32": torch_median / median,
               "argmax_agreement_vs_torch_fp32": agreement[label], **timed[label][1],
               "engine_info": {k: v for k, v in timed[label][0].info.items() if k not in ("onnx", "weights")}}
        rows.append(row)
        kernels = row.get("ort_conv_matmul") or row.get("ov_weighted_layers") or ""
        print(f"| {label} | {median:.1f} | {row['p90_over_p50']:.2f} | {row['best_ms']:.1f} | "
              f"{row['speedup_vs_torch_fp32']:.2f} | {agreement[label]:.4f} | {kernels} |", flush=True)
    print("\nfile sizes (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
    for engine, _ in timed.values():
        engine.close()
    return {"model": model_name, "size": args.size, "threads": args.threads, "rounds": args.rounds,
            "per_round": args.per_round,
            "load_before": load_before, "load_after": load_after, "file_size_mib": sizes, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet,segformer-b3")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3, help="timed runs of each engine per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each engine before the rounds")
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="keep the exported runs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args()

    from segdeploy.machine.envinfo import environment

    env = environment()
    print(f"CPU {env['cpu']} ({env['cpu_cores']} cores usable), ISA {env['cpu_isa']}; "
          f"onnxruntime {env['onnxruntime']['version']}, torch {env['torch']['version']}")
    with tempfile.TemporaryDirectory(prefix="segdeploy-cpu-int8-") as tmp:
        out = args.out or Path(tmp)
        results = [bench_model(m.strip(), args, out) for m in args.models.split(",") if m.strip()]
    if args.json:
        args.json.write_text(json.dumps({"env": env, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
