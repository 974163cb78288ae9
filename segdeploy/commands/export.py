"""``segdeploy export RUN_DIR``: ONNX fp32/fp16/int8 with parity checks and a manifest."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

_STATUS_STYLE = {"ok": "green", "failed": "bold red"}


def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by `segdeploy train`."),
    precisions: str = typer.Option("fp32,fp16,int8", "--precisions", "-p",
                                   help="Comma-separated subset of fp32,fp16,int8."),
    calib_images: int = typer.Option(32, "--calib-images", help="Training images for INT8 calibration."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="INT8 calibration: minmax|entropy|percentile."),
    parity_images: int = typer.Option(8, "--parity-images", help="Test images for the ONNX-vs-PyTorch check."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset for the dynamo exporter (>= 17)."),
    int8_auto: bool = typer.Option(False, "--int8-auto", help="Keep the most sensitive layers out of INT8 until its "
                                                              "validation Dice is >= 99% of fp32."),
    int8_forms: str = typer.Option("tensorrt,cpu", "--int8-forms",
                                   help="INT8 Q/DQ forms: tensorrt (model.int8.onnx, always written: symmetric int8, "
                                        "what TensorRT loads) and cpu (model.int8-cpu.onnx: uint8 activations, "
                                        "what onnxruntime's CPU EP and OpenVINO load)."),
) -> None:
    """Export a trained run to ONNX (dynamic batch) and check every file against PyTorch fp32.

    Writes RUN_DIR/onnx/model.<precision>.onnx and RUN_DIR/onnx/manifest.json. Exits 1 when a requested
    precision failed (its manifest entry holds the reason); the other precisions are still exported.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from segdeploy.commands.util import fmt_num
    from segdeploy.records import comma_list
    from segdeploy.export import export_run
    from segdeploy.run.folder import manifest_path

    console = Console()
    wanted = comma_list(precisions)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("export", total=len(wanted))

        def on_step(precision: str, step: str) -> None:
            if step == "done":
                progress.advance(task)
            else:
                progress.update(task, description=f"{precision}: {step}")

        manifest = export_run(run_dir, wanted, calib_images=calib_images, calib_method=calib_method,
                              parity_images=parity_images, opset=opset, int8_auto=int8_auto, on_step=on_step,
                              int8_forms=comma_list(int8_forms))

    entries = manifest.precisions
    table = Table(title=f"ONNX export of {manifest.model} ({run_dir})")
    for column, justify in (("precision", "left"), ("file", "left"), ("MB", "right"), ("max |diff|", "right"),
                            ("argmax agree", "right"), ("status", "left")):
        table.add_column(column, justify=justify, no_wrap=column == "file")
    rows = []
    for precision in wanted:
        rows.append((precision, entries[precision]))
        forms = entries[precision].get("forms") or {}
        rows += [(f"{precision} ({form})", entry) for form, entry in forms.items() if "status" in entry]
    for label, entry in rows:
        parity = entry.get("parity") or {}
        status = entry["status"]
        style = _STATUS_STYLE.get(status, "")
        file_name = Path(entry["file"]).name if entry.get("file") else "-"
        table.add_row(label, file_name, fmt_num(entry.get("size_mb"), ".2f"),
                      fmt_num(parity.get("max_abs_diff"), ".2e"), fmt_num(parity.get("argmax_agreement"), ".4f"),
                      f"[{style}]{status}[/]")
    console.print(table)
    failed = [p for p in wanted if entries[p]["status"] != "ok"]
    for precision in failed:
        console.print(f"[bold red]{precision} failed:[/] {entries[precision]['error']}", highlight=False)
    for label, entry in rows:
        if "(" in label and entry["status"] != "ok":  # a failed extra form: its backends load the tensorrt form
            console.print(f"[yellow]{label} failed:[/] {entry['error']}", highlight=False)
    done = [entries[p] for p in wanted if entries[p]["status"] == "ok"]
    if done:
        console.print(f"{done[0]['exporter']} exporter, opset {done[0]['opset']}; parity vs PyTorch fp32 on "
                      f"{done[0]['parity']['n_images']} test image(s)", highlight=False)
    auto = (entries.get("int8") or {}).get("int8_auto")
    if auto and "int8" in wanted:
        tries = ", ".join(f"{a['excluded']} excluded: {a['dice']:.4f}" for a in auto["attempts"] if a["dice"] is not None)
        verdict = {True: "[green]met[/]", False: "[red]not met[/]", None: "not measurable"}[auto["met"]]
        console.print(f"--int8-auto: fp32 Dice {auto['fp32_dice'] or 0:.4f}, target {auto['target']:.0%}: {verdict}"
                      f" ({tries}); kept in floating point: {', '.join(auto['excluded_nodes']) or 'none'}")
    console.print(f"manifest: {manifest_path(run_dir)}", highlight=False)
    if failed:
        raise typer.Exit(1)
