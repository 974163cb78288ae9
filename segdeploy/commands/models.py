"""``segdeploy models``: the registry with measured size and compute. (``segdeploy models verify`` lives in
:mod:`segdeploy.bench.verify`: it exports and times, which is the layers above this one.)"""

from __future__ import annotations

import json

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
