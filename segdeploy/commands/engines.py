"""``segdeploy engines``: which backend x precision can run here, and TensorRT engine building."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segdeploy.commands.options import Device

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Inference backends: what can run on this machine, and TensorRT engine building.")


@app.command("list")
def list_engines(
    device: Device = "auto",
    run_dir: Optional[Path] = typer.Option(None, "--run", help="also check this run's ONNX files"),
) -> None:
    """Every backend x precision: available here, or the one-line reason it is not."""
    from rich.console import Console
    from rich.table import Table

    from segdeploy.engines import BACKENDS, check_backend
    from segdeploy.run.folder import PRECISIONS, load_run

    run = load_run(run_dir) if run_dir is not None else None
    table = Table(title=f"inference backends (device {device})")
    for column in ("backend", "precision", "status"):
        table.add_column(column)
    for backend in BACKENDS:
        for precision in PRECISIONS:
            reason = check_backend(backend, precision, device, run=run)
            table.add_row(backend, precision, "[green]available[/]" if reason is None else f"[yellow]{reason}[/]")
    Console().print(table)


@app.command()
def build(
    run_dir: Path = typer.Argument(..., help="run directory with onnx/model.<precision>.onnx"),
    precisions: str = typer.Option("fp32,fp16,int8", "--precisions", help="comma-separated ONNX precisions"),
    batch: str = typer.Option("1:8:32", "--batch", help="optimization profile MIN:OPT:MAX batch sizes"),
    workspace: Optional[int] = typer.Option(None, "--workspace", min=1, help="builder workspace limit in MiB"),
    device: str = typer.Option("cuda:0", "--device", help="GPU to build for: cuda or cuda:N (auto: cuda:0)"),
    force: bool = typer.Option(False, "--force", help="rebuild even when the engine is up to date"),
    dla: Optional[int] = typer.Option(None, "--dla", min=0,
                                      help="build for this Jetson DLA core (GPU fallback on; fp16/int8 and one "
                                           "fixed --batch only): engines/model.<precision>.dla<N>.engine"),
) -> None:
    """Build TensorRT engines (strongly typed, one optimization profile) into RUN_DIR/engines/."""
    from rich.console import Console
    from rich.table import Table

    from segdeploy.records import comma_list
    from segdeploy.engines.profiles import profile_shapes
    from segdeploy.engines.trt_backend import TensorRTEngine
    from segdeploy.engines.trt_build import build_engine, engine_path
    from segdeploy.errors import BackendUnavailable, SegdeployError
    from segdeploy.run.folder import PRECISIONS, load_run

    run = load_run(run_dir)
    wanted = comma_list(precisions)
    unknown = [p for p in wanted if p not in PRECISIONS]
    if unknown or not wanted:
        raise SegdeployError(f"unknown precision(s) {', '.join(unknown) or '(none given)'}.",
                             fix=f"use --precisions with some of {', '.join(PRECISIONS)}.")
    profile_shapes(batch, run.input_shape)  # a malformed --batch fails before minutes of building
    if dla is not None:
        from segdeploy.engines.trt_build import dla_problem

        problems = [p for p in (dla_problem(precision, batch) for precision in wanted) if p]
        if problems:
            raise SegdeployError(f"cannot build for DLA core {dla}: {problems[0]}.")
    # check everything first: one missing ONNX should not surface after the other engines took minutes
    for precision in wanted:
        reason = TensorRTEngine.check(precision, device, backend="tensorrt", run=run)
        if reason:
            raise BackendUnavailable(reason)
    table = Table(title=f"TensorRT engines in {run.dir / 'engines'}")
    for column in ("precision", "engine", "MB", "activations MB", "build s", "DLA layers (at most)", "status"):
        table.add_column(column)
    console = Console()
    for precision in wanted:
        with console.status(f"building {precision} engine (minutes for large models)..."):
            record, status = build_engine(run, precision, batch=batch, workspace_mib=workspace, device=device,
                                          force=force, dla=dla)
        act, placed = record.get("activation_bytes"), record.get("dla")
        table.add_row(precision, engine_path(run.dir, precision, dla).name, f"{record['engine_bytes'] / 1e6:.1f}",
                      "-" if act is None else f"{act / 1e6:.1f}", f"{record['build_seconds']:.1f}",
                      f"{placed['layers_on_dla']}/{placed['layers']}" if placed else "-", status)
    console.print(table)
