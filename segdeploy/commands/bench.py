"""``segdeploy bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segdeploy.commands.options import (BENCH, BenchBatch, Device, Duration, Isolate, MinIters, Threads, Timeout, Warmup,
                                        WarmupIters)


def bench(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (from `segdeploy train`, exported with "
                                                    "`segdeploy export` for the ONNX backends)."),
    data: str = typer.Option(..., "--data", help="Dataset folder or registered name, with the runs' classes."),
    backends: str = typer.Option("torch,onnxruntime", help="Comma-separated: torch, torch-compile, onnxruntime, "
                                                          "onnxruntime-cuda, onnxruntime-trt, tensorrt, openvino, "
                                                          "openvino-gpu, openvino-npu."),
    precisions: str = typer.Option("fp32,fp16,int8", help="Comma-separated: fp32, fp16, bf16, int8."),
    results: Path = typer.Option(..., "--results", help="JSON-lines file; rows are appended, finished ones skipped."),
    save_predictions: Optional[Path] = typer.Option(None, "--save-predictions",
                                                    help="Write DIR/<run>/<backend>-<precision>/<id>.png class-index "
                                                         "masks at each image's original resolution."),
    split: str = typer.Option("test", help="train, val, test, or all (every image: cross-dataset evaluation)."),
    batch: BenchBatch = BENCH.batch,
    device: Device = BENCH.device,
    max_images: Optional[int] = typer.Option(None, help="Score only the first N images of the split (smoke tests)."),
    warmup: Warmup = BENCH.warmup,
    warmup_iters: WarmupIters = BENCH.warmup_iters,
    duration: Duration = BENCH.duration,
    min_iters: MinIters = BENCH.min_iters,
    force: bool = typer.Option(False, help="Re-run configurations that already have a row in --results."),
    class_map: Optional[str] = typer.Option(None, "--class-map", help="Map --data's labels onto the runs' classes, "
                                            "e.g. 'polyp=1,2' (cross-dataset scoring; refused if the classes differ)."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="When images of a run's recorded test split are gone from --data, score "
                                            "the remaining ones (default: refuse)."),
    threads: Threads = BENCH.threads,
    isolate: Isolate = BENCH.isolate,
    pipeline_grid: bool = typer.Option(False, "--pipeline-grid",
                                       help="Imported nnU-Net runs: measure each pipeline setting (one fold vs all "
                                            "of the run's folds x mirroring on/off x tile step 0.5/0.75/1.0), "
                                            "each imported and exported under RUN/pipelines/ when missing; "
                                            "--batch is the tiles per forward call."),
    timeout: Timeout = BENCH.timeout,
) -> None:
    """Accuracy (on the split, at original resolution) and deployment cost of every run x backend x precision."""
    from rich.console import Console

    from segdeploy.bench.runner import run_bench
    from segdeploy.bench.table import print_tables

    if pipeline_grid:
        from segdeploy.records import comma_list
        from segdeploy.models.importers.grid import expand_pipeline_grid

        run_dirs = expand_pipeline_grid(run_dirs, comma_list(precisions),
                                        on_step=lambda what: Console(stderr=True).print(f"pipeline grid: {what}"))
    rows = run_bench(run_dirs, data, backends, precisions, results, split=split, batch=batch, device=device,
                     save_predictions=save_predictions, max_images=max_images, warmup=warmup,
                     duration=duration, min_iters=min_iters, warmup_iters=warmup_iters, force=force,
                     class_map=class_map, allow_missing=allow_missing, threads=threads, isolate=isolate,
                     timeout=timeout)
    console = Console()
    print_tables(rows, console)
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "unavailable", "failed")}
    console.print(f"{counts['ok']} ok, {counts['unavailable']} unavailable, {counts['failed']} failed -> {results}"
                  + (f"; predictions in {save_predictions}" if save_predictions else ""))
    if rows and not counts["ok"]:
        console.print("[bold red]no configuration ran[/]: every row is unavailable or failed (reasons above).")
        raise typer.Exit(1)
