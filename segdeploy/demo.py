"""``segdeploy demo``: the whole pipeline on the built-in default, one specialized and one general model.

data (generated) -> train -> export (fp32/fp16/int8 ONNX) -> bench (torch, onnxruntime) -> table.
Every step is resumable: re-running the demo reuses finished runs, exports and result rows.
"""

from __future__ import annotations

from pathlib import Path

import typer

DEMO_MODELS = ("unet-tiny", "segformer-tiny")  # specialized vs general, small enough for a 2-core CPU


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the runs, ONNX files and results."),
    data: str = typer.Option("synthetic", help="Dataset: the generated default or a folder."),
    models: str = typer.Option(",".join(DEMO_MODELS), help="Comma-separated registered models."),
    epochs: int = typer.Option(20, help="Training epochs per model."),
    lr: float = typer.Option(2e-3, help="AdamW learning rate (tiny models from scratch take a larger one)."),
    augment: float = typer.Option(0.5, help="Geometric augmentation strength (1 = the study's ranges)."),
    img_size: int = typer.Option(128, help="Network input size."),
    backends: str = typer.Option("torch,onnxruntime", help="Backends to benchmark."),
    precisions: str = typer.Option("fp32,fp16,int8", help="Precisions to export and benchmark."),
    device: str = typer.Option("auto"),
    duration: float = typer.Option(1.0, help="Seconds of timed iterations per latency figure."),
) -> None:
    """Run the main job end to end and print the comparison table."""
    from rich.console import Console

    from segdeploy.bench.runner import run_bench
    from segdeploy.cli_util import comma_list
    from segdeploy.bench.table import render
    from segdeploy.export import export_run
    from segdeploy.fileio import read_json
    from segdeploy.runs import TRAIN_STATE, manifest_path, read_meta
    from segdeploy.train.loop import TrainConfig, train_model

    console = Console()
    wanted = comma_list(precisions)
    run_dirs = []
    for name in comma_list(models):
        run_dir = out / name
        run_dirs.append(run_dir)
        has_meta = (run_dir / "model.json").is_file()
        if has_meta and read_meta(run_dir).complete:
            console.print(f"[dim]train {name}: done earlier ({run_dir})[/]")
        else:
            console.rule(f"train {name}")
            resume = (run_dir / TRAIN_STATE).is_file()
            # an unfinished run without a state to resume (killed before its first epoch was saved) starts over
            train_model(TrainConfig(data=data, model=name, out=run_dir, epochs=epochs, img_size=img_size,
                                    batch_size=8, lr=lr, augment=augment, device=device, patience=epochs,
                                    # fp32: results/baseline.json (make check) was recorded from fp32 training
                                    amp="off",
                                    resume=resume, restart=not resume and has_meta))
        manifest = read_json(manifest_path(run_dir)) if manifest_path(run_dir).is_file() else {}
        todo = [p for p in wanted if manifest.get("precisions", {}).get(p, {}).get("status") != "ok"]
        if todo:
            console.rule(f"export {name}")
            export_run(run_dir, todo)
        else:
            console.print(f"[dim]export {name}: done earlier[/]")

    results = out / "results.jsonl"
    console.rule("bench")
    rows = run_bench(run_dirs, data, comma_list(backends), wanted, results, device=device,
                     duration_s=duration, save_predictions=out / "predictions")
    for table in render(rows):
        console.print(table)
    console.print("\n[bold]Wrote[/]")
    for run_dir in run_dirs:
        console.print(f"  {run_dir}/model.safetensors, model.json   (checkpoint + metadata)")
        console.print(f"  {run_dir}/onnx/model.{{{','.join(wanted)}}}.onnx, onnx/manifest.json")
    console.print(f"  {results}   (one JSON line per model x backend x precision)")
    console.print(f"  {out}/predictions/   (class-index PNGs at original resolution)")
