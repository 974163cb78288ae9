"""``segdeploy demo``: the whole pipeline on the built-in default, one specialized and one general model.

data (generated) -> train -> export (fp32/fp16/int8 ONNX) -> bench (torch, onnxruntime; each configuration in a
process of its own) -> table (120 columns); the steps are :func:`segdeploy.study.demo.run_demo`, a built-in one-fold
study run through the study's cell code.
"""

from __future__ import annotations

from pathlib import Path

import typer

from segdeploy.commands.options import BENCH, Device, Duration, MinIters
from segdeploy.commands.util import number_option

DEMO_MODELS = ("unet-tiny", "segformer-tiny")  # specialized vs general, small enough for a 2-core CPU


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the runs, ONNX files and results."),
    data: str = typer.Option("synthetic", help="Dataset: the generated default or a folder."),
    models: str = typer.Option(",".join(DEMO_MODELS), help="Comma-separated registered models."),
    epochs: int = typer.Option(20, help="Training epochs per model."),
    lr: float = typer.Option(2e-3, callback=number_option("--lr", positive=True),
                             help="AdamW learning rate (tiny models from scratch take a larger one)."),
    augment: float = typer.Option(0.5, callback=number_option("--augment"),
                                  help="Geometric augmentation strength (1 = the study's ranges)."),
    img_size: int = typer.Option(128, help="Network input size."),
    backends: str = typer.Option("torch,onnxruntime", help="Backends to benchmark."),
    precisions: str = typer.Option("fp32,fp16,int8", help="Precisions to export and benchmark."),
    device: Device = "auto",
    duration: Duration = BENCH.duration,
    min_iters: MinIters = BENCH.min_iters,
) -> None:
    """Run the main job end to end and print the comparison table."""
    from rich.console import Console

    from segdeploy.bench.table import WIDTH, print_tables
    from segdeploy.records import comma_list
    from segdeploy.study.demo import run_demo

    console = Console(width=WIDTH)  # the whole demo reads in 120 columns, as its table does
    run_dirs, rows = run_demo(out, models, data=data, epochs=epochs, lr=lr, augment=augment,
                              img_size=img_size, backends=backends, precisions=precisions, device=device,
                              duration=duration, min_iters=min_iters, say=lambda text: console.print(f"[dim]{text}[/]"),
                              stage=console.rule)
    print_tables(rows, console)
    wanted = comma_list(precisions)
    console.print("\n[bold]Wrote[/]")
    for run_dir in run_dirs:
        console.print(f"  {run_dir}/model.safetensors, model.json   (checkpoint + metadata)")
        console.print(f"  {run_dir}/onnx/model.{{{','.join(wanted)}}}.onnx, onnx/manifest.json")
    console.print(f"  {out / 'results.jsonl'}   (one JSON line per model x backend x precision)")
    console.print(f"  {out}/predictions/   (class-index PNGs at original resolution)")
