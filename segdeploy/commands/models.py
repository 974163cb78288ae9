"""``segdeploy models``: the registry with measured size and compute. (``segdeploy models verify`` lives in
:mod:`segdeploy.bench.verify`: it exports and times, which is the layers above this one.)"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(invoke_without_command=True, add_completion=False,
                  help="List the registered models (measured params, GFLOPs) or verify their ONNX export.")


def _model_rows(console: Console) -> list[dict]:
    from segdeploy.errors import describe_error
    from segdeploy.models import list_models, model_info
    from segdeploy.models.profile import PROFILE_SIZE, build_for_profile, profile_model

    rows = []
    with console.status("measuring models") as status:
        for name in list_models():
            info = model_info(name)
            status.update(f"measuring {name} at {PROFILE_SIZE}x{PROFILE_SIZE}")
            row = {"name": name, "family": info.family, "declared_params_m": info.params_m,
                   "source": info.source, "tiny_of": info.tiny_of, "img_size": PROFILE_SIZE}
            try:
                row.update(profile_model(build_for_profile(name), 3, PROFILE_SIZE))
            except Exception as e:  # one broken model must not hide the others
                row["error"] = describe_error(e)
            rows.append(row)
    return rows


@app.callback()
def models(ctx: typer.Context,
           fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """Registered models: family, measured and declared parameters, compute at 512x512, source."""
    from segdeploy.commands.util import check_format, fmt_num
    from segdeploy.models.profile import PROFILE_SIZE

    if ctx.invoked_subcommand is not None:
        return
    check_format(fmt)
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
        table.add_row(r["name"], r["family"], fmt_num(r.get("params_m"), ".2f"),
                      fmt_num(r["declared_params_m"], ".1f"), fmt_num(r.get("gmacs"), ".1f"),
                      fmt_num(r.get("gflops"), ".1f"), r["source"] if "error" not in r else f"[red]{r['error']}[/]")
    Console().print(table)


@app.command("import")
def import_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="onnx, smp, hf or nnunet."),
    src: str = typer.Argument(..., help="The model: an .onnx file, or the folder save_pretrained / nnU-Net wrote."),
    run_dir: str = typer.Argument(..., metavar="RUN", help="The run folder to write (must not be a run yet)."),
    data: str = typer.Option(None, "--data", help="Dataset whose test split parity, export and bench use "
                                                  "(its train split calibrates INT8)."),
    family: str = typer.Option(None, "--family", help="specialized|general (default: nnunet specialized, "
                                                      "others general)."),
    mean: str = typer.Option(None, "--mean", help="Per-channel mean on the 0-1 scale, e.g. 0.485,0.456,0.406."),
    std: str = typer.Option(None, "--std", help="Per-channel std on the 0-1 scale."),
    size: int = typer.Option(None, "--size", help="Square input side the model runs at."),
    classes: str = typer.Option(None, "--classes", help="Class names, comma-separated (index = label)."),
    in_chans: int = typer.Option(None, "--in-chans", help="Input channels (onnx with a symbolic channel axis)."),
    spec: Path = typer.Option(None, "--spec", help="onnx: a JSON with mean, std, size, classes, in_chans."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Accept pytorch_model.bin (a pickle: loading "
                                                                    "it can run code its author put in it)."),
    folds: str = typer.Option(None, "--folds", help="nnunet: folds to use, e.g. 0 or 0,1,2,3,4 or all."),
    checkpoint: str = typer.Option("final", "--checkpoint", help="nnunet: final or best."),
    preprocessed: Path = typer.Option(None, "--preprocessed", help="nnunet: the preprocessed dataset folder "
                                                                   "(splits_final.json), where debug.json's is gone."),
    mirroring: bool = typer.Option(True, "--mirroring/--no-mirroring", help="nnunet: test-time mirroring over the "
                                                                           "checkpoint's allowed axes."),
    tile_step: float = typer.Option(0.5, "--tile-step", help="nnunet: sliding-window step as a fraction of the "
                                                             "patch (0 < step <= 1; nnU-Net's default 0.5)."),
    parity_images: int = typer.Option(4, "--parity-images", help="Images for the parity check (0: skip)."),
) -> None:
    """Turn a model trained elsewhere into a run folder: export, bench, check, report and cam accept it."""
    from segdeploy.records import comma_list
    from segdeploy.models.importers import import_model
    from segdeploy.models.importers.base import ImportOptions

    floats = (lambda text: [float(v) for v in text.split(",") if v.strip()] if text else None)
    options = ImportOptions(family=family, mean=floats(mean), std=floats(std), size=size,
                            classes=comma_list(classes) if classes else None, in_chans=in_chans,
                            allow_pickle=allow_pickle, folds=folds, checkpoint=checkpoint, preprocessed=preprocessed,
                            mirroring=mirroring, tile_step=tile_step, spec=spec)
    meta = import_model(fmt, src, run_dir, options, data=data, parity_images=parity_images)
    record = meta["imported"]
    console = Console()
    console.print(f"[bold]{run_dir}[/]: {meta['model']} ({meta['family']}), {meta['num_classes']} classes, "
                  f"{meta['in_chans']}-channel {meta['img_size']}x{meta['img_size']} input; "
                  f"{len(record['files'])} file(s) hashed", highlight=False)
    parity = record.get("parity")
    if parity:
        diff = parity.get("max_abs_logit_diff")
        style = "green" if parity["met"] else "bold red"
        console.print(f"parity with {fmt}'s own prediction on {parity['images']}: [{style}]"
                      f"{parity['pixel_agreement']:.4%}[/] of pixels agree"
                      + (f", max |logit diff| {diff:.2e}" if diff is not None else ""), highlight=False)
    for note in record.get("notes") or []:
        console.print(f"note: {note}", highlight=False)
