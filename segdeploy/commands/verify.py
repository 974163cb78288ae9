"""``segdeploy models verify NAME|all`` (registered under ``segdeploy models`` by :mod:`segdeploy.commands.app`):
the checks are :mod:`segdeploy.bench.verify`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from segdeploy.commands.util import check_format, fmt_num
from segdeploy.fileio import atomic_write_json, dumps


def _print_single(result: dict, console: Console) -> None:
    name, size = result["model"], result["img_size"]
    if result["status"] == "failed":
        console.print(f"[bold red]{name}: export failed[/]: {result['reason']}", highlight=False)
        return
    table = Table(title=f"{name}: ONNX Runtime vs PyTorch ({result['exporter']} exporter, "
                        f"opset {result['opset']}, {size}x{size})")
    for column in ("batch", "max |diff|", "mean |diff|", "max |logit|", "argmax agree", "ok"):
        table.add_column(column, justify="right")
    for b, c in result["batches"].items():
        table.add_row(b, f"{c['max_abs_diff']:.2e}", f"{c['mean_abs_diff']:.2e}", f"{c['ref_abs_max']:.3g}",
                      f"{c['argmax_agreement']:.5f}", "[green]yes[/]" if c["ok"] else "[bold red]no[/]")
    console.print(table)
    lat = result["latency_ms"]
    declared = result["declared_params_m"]
    console.print(f"params {result['params_m']:.2f}M at 512x512 ("
                  + (f"declared {declared}M" if declared is not None else "no declared figure")
                  + f"), {result['gmacs']:.2f} GMACs at {size}x{size}, ONNX Runtime CPU fp32 batch 1: "
                  f"median {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms ({lat['n']} runs)", highlight=False)
    if result["reason"]:
        console.print(f"[bold red]mismatch[/]: {result['reason']}", highlight=False)
    if "dynamo_error" in result:
        console.print(f"[yellow]dynamo exporter failed, legacy used[/]: {result['dynamo_error']}", highlight=False)


def _print_report(report: dict, console: Console) -> None:
    from segdeploy.bench.verify import STATUS_STYLE

    size, host = report["img_size"], report["host"]
    table = Table(title=f"segdeploy models verify ({size}x{size}; ONNX Runtime {host['onnxruntime']} CPU on "
                        f"{host['cpu']}, {host['cpu_count']} cores)",
                  caption="params at 512x512 with 2 classes; GMACs at the verified size, batch 1; diff and "
                          "argmax: worst of batch 1 and 3; latency: fp32 ONNX, batch 1")
    for column, justify in (("model", "left"), ("status", "left"), ("params (M)", "right"), ("declared", "right"),
                            ("GMACs", "right"), ("exporter", "left"), ("max |diff|", "right"),
                            ("argmax", "right"), ("p50 ms", "right"), ("p90 ms", "right"), ("reason", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "reason")
    for r in report["models"]:
        batches = list(r.get("batches", {}).values())
        lat = r.get("latency_ms") or {}
        table.add_row(r["model"], STATUS_STYLE[r["status"]], fmt_num(r.get("params_m"), ".2f"),
                      fmt_num(r.get("declared_params_m"), ".1f"), fmt_num(r.get("gmacs"), ".2f"),
                      r.get("exporter", "-"),
                      fmt_num(max((c["max_abs_diff"] for c in batches), default=None), ".1e"),
                      fmt_num(min((c["argmax_agreement"] for c in batches), default=None), ".5f"),
                      fmt_num(lat.get("p50"), ".1f"), fmt_num(lat.get("p90"), ".1f"), r["reason"] or "")
    console.print(table)
    s = report["summary"]
    console.print(f"{s['ok']} ok, {s['mismatch']} mismatch, {s['failed']} failed", highlight=False)


def verify(name: str = typer.Argument(..., help="Registered model name (see `segdeploy models`), or `all`."),
           img_size: int = typer.Option(256, "--img-size"),
           num_classes: int = typer.Option(3, "--num-classes"),
           in_chans: int = typer.Option(3, "--in-chans"),
           tiny: bool | None = typer.Option(None, "--tiny/--full",
                                            help="With `all`: only the -tiny configurations / only the full ones."),
           fmt: str = typer.Option("table", "--format", help="table or json."),
           out: Path | None = typer.Option(None, "--out", help="Also write the JSON report to this file.")) -> None:
    """Export NAME (random weights) to ONNX and check ONNX Runtime against PyTorch at batch 1 and 3; also report
    parameters against the declared count, GMACs and ONNX Runtime CPU latency at batch 1.

    Passes when max |diff| <= 1e-3 x max(1, max |logit|) and argmax agreement >= 0.999 at both batch sizes and
    the built model is within ±10% of its declared size. `all` verifies every registered model, going on past
    failures (each becomes a row with its reason). Exits 1 if any model does not pass.
    """
    from segdeploy.bench.verify import select_models, verify_model, verify_models

    check_format(fmt)
    names = select_models(name, tiny)
    if name == "all":
        result = verify_models(names, img_size=img_size, num_classes=num_classes, in_chans=in_chans, out=out)
        passed = result["summary"]["ok"] == len(names)
    else:
        with Console(stderr=True).status(f"verifying {name} at {img_size}x{img_size}"):
            result = verify_model(name, img_size=img_size, num_classes=num_classes, in_chans=in_chans)
        passed = result["status"] == "ok"
        if out is not None:
            atomic_write_json(out, result)
    if fmt == "json":
        typer.echo(dumps(result, indent=2))
    elif name == "all":
        _print_report(result, Console())
    else:
        _print_single(result, Console())
    if not passed:
        raise typer.Exit(1)
