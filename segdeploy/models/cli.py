"""``segdeploy models``: the registry with measured size and compute; ``segdeploy models verify NAME``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(invoke_without_command=True, add_completion=False,
                  help="List the registered models (measured params, GFLOPs) or verify one's ONNX export.")

PROFILE_SIZE = 512  # the study's input size: GFLOPs are comparable across models only at one size
PROFILE_CLASSES = 2  # the head's width barely changes the totals; binary is the common case
VERIFY_BATCHES = (1, 3)  # the export's dummy batch is 2: both sizes prove the batch axis is dynamic
# ORT and PyTorch fp32 usually agree to ~1e-5; 1e-3 of the logit scale leaves room for different conv
# algorithms while catching a wrong graph. Pixels whose top two logits tie may flip class, hence 0.999.
VERIFY_REL_TOL = 1e-3
VERIFY_MIN_ARGMAX_AGREEMENT = 0.999
_FORMATS = ("table", "json")


def _check_format(fmt: str) -> None:
    if fmt not in _FORMATS:
        from segdeploy.errors import SegdeployError

        raise SegdeployError(f"unknown format {fmt!r}.", fix=f"use --format {' or '.join(_FORMATS)}.")


def _model_rows(console: Console) -> list[dict]:
    from segdeploy.export.onnx_export import describe_error
    from segdeploy.models import create_model, list_models, model_info
    from segdeploy.models.profile import profile_model

    rows = []
    with console.status("measuring models") as status:
        for name in list_models():
            info = model_info(name)
            status.update(f"measuring {name} at {PROFILE_SIZE}x{PROFILE_SIZE}")
            row = {"name": name, "family": info.family, "declared_params_m": info.params_m,
                   "source": info.source, "tiny_of": info.tiny_of, "img_size": PROFILE_SIZE}
            try:
                row.update(profile_model(_build_for_profile(name), 3, PROFILE_SIZE))
            except Exception as e:  # one broken model must not hide the others
                row["error"] = describe_error(e)
            rows.append(row)
    return rows


def _build_for_profile(name: str):
    """The model on the meta device (no memory, no weight init: a 50M-parameter model builds in well under a second
    instead of seconds); on CPU when its constructor needs real tensors."""
    import torch

    from segdeploy.models import create_model

    kwargs = dict(num_classes=PROFILE_CLASSES, in_chans=3, img_size=PROFILE_SIZE)
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except Exception:  # noqa: BLE001 -- e.g. a constructor that computes something from real values
        return create_model(name, **kwargs)


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.callback()
def models(ctx: typer.Context,
           fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """Registered models: family, measured and declared parameters, compute at 512x512, source."""
    if ctx.invoked_subcommand is not None:
        return
    _check_format(fmt)
    rows = _model_rows(Console(stderr=True))
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"segdeploy models (compute at {PROFILE_SIZE}x{PROFILE_SIZE}, batch 1)",
                  caption="GMACs = multiply-adds, what most papers call GFLOPs; GFLOPs = 2 x GMACs")
    for column, justify in (("name", "left"), ("family", "left"), ("params (M)", "right"),
                            ("declared (M)", "right"), ("GMACs", "right"), ("GFLOPs", "right"), ("source", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "source")
    for r in rows:
        table.add_row(r["name"], r["family"], _num(r.get("params_m"), ".2f"), _num(r["declared_params_m"], ".1f"),
                      _num(r.get("gmacs"), ".1f"), _num(r.get("gflops"), ".1f"),
                      r["source"] if "error" not in r else f"[red]{r['error']}[/]")
    Console().print(table)


def verify_model(name: str, img_size: int = 256, num_classes: int = 3, in_chans: int = 3) -> dict:
    """Export a freshly initialised ``name`` and compare ONNX Runtime with PyTorch at batch 1 and 3."""
    import tempfile

    import numpy as np
    import torch

    from segdeploy.export.onnx_export import ExportFailed, export_onnx, parity
    from segdeploy.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size).eval()
    result = {"model": name, "img_size": img_size, "num_classes": num_classes, "in_chans": in_chans,
              "tolerance": {"max_abs_diff_rel": VERIFY_REL_TOL, "min_argmax_agreement": VERIFY_MIN_ARGMAX_AGREEMENT}}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="segdeploy-verify-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        try:
            result.update(export_onnx(model, path, (in_chans, img_size, img_size)))
        except ExportFailed as e:
            return {**result, "status": "failed", "error": e.message}
        checks = {}
        for b in VERIFY_BATCHES:
            check = parity(path, model, rng.standard_normal((b, in_chans, img_size, img_size), dtype=np.float32))
            check["ok"] = (check["max_abs_diff"] <= VERIFY_REL_TOL * max(1.0, check["ref_abs_max"])
                           and check["argmax_agreement"] >= VERIFY_MIN_ARGMAX_AGREEMENT)
            checks[str(b)] = check
    return {**result, "batches": checks, "status": "ok" if all(c["ok"] for c in checks.values()) else "mismatch"}


@app.command()
def verify(name: str = typer.Argument(..., help="Registered model name (see `segdeploy models`)."),
           img_size: int = typer.Option(256, "--img-size"),
           num_classes: int = typer.Option(3, "--num-classes"),
           in_chans: int = typer.Option(3, "--in-chans"),
           fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """Export NAME (random weights) to ONNX and check ONNX Runtime against PyTorch at batch 1 and 3.

    Passes when max |diff| <= 1e-3 x max(1, max |logit|) and argmax agreement >= 0.999 at both batch
    sizes; exits 1 otherwise.
    """
    _check_format(fmt)
    with Console(stderr=True).status(f"exporting {name} at {img_size}x{img_size}"):
        result = verify_model(name, img_size=img_size, num_classes=num_classes, in_chans=in_chans)
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
    else:
        console = Console()
        if result["status"] == "failed":
            console.print(f"[bold red]{name}: export failed[/]: {result['error']}", highlight=False)
        else:
            table = Table(title=f"{name}: ONNX Runtime vs PyTorch ({result['exporter']} exporter, "
                                f"opset {result['opset']}, {img_size}x{img_size})")
            for column in ("batch", "max |diff|", "mean |diff|", "max |logit|", "argmax agree", "ok"):
                table.add_column(column, justify="right")
            for b, c in result["batches"].items():
                table.add_row(b, f"{c['max_abs_diff']:.2e}", f"{c['mean_abs_diff']:.2e}", f"{c['ref_abs_max']:.3g}",
                              f"{c['argmax_agreement']:.5f}", "[green]yes[/]" if c["ok"] else "[bold red]no[/]")
            console.print(table)
            if "dynamo_error" in result:
                console.print(f"[yellow]dynamo exporter failed, legacy used[/]: {result['dynamo_error']}",
                              highlight=False)
    if result["status"] != "ok":
        raise typer.Exit(1)
