"""``segdeploy data check|info PATH``: find every problem in a dataset folder, or summarise it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Check and describe dataset folders (images/, masks/, meta.json, split.json).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

PATH_HELP = "Dataset folder (images/ + masks/), or a registered name such as 'synthetic' or 'synthetic:48'."


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _resolve(spec: str) -> tuple[Path, str]:
    from segdeploy.data.folder import resolve_spec

    return resolve_spec(spec)


def _short(file: str, root: Path) -> str:
    try:
        return Path(file).relative_to(root).as_posix() or "."
    except ValueError:
        return file


@app.command()
def check(path: str = typer.Argument(..., help=PATH_HELP),
          format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json.")) -> None:
    """Read every image and mask and list each problem with its file and fix. Exit code 1 if any error."""
    from segdeploy.data.check import check_dataset, summarize
    from segdeploy.fileio import dumps

    root, _ = _resolve(path)
    problems = check_dataset(root)
    counts = summarize(problems)
    n_pairs = _count_pairs(root)
    if format is OutputFormat.json:
        typer.echo(dumps({"root": str(root), "ok": counts["error"] == 0, "pairs": n_pairs, **{
            f"{k}s": v for k, v in counts.items()}, "problems": [p.as_dict() for p in problems]}, indent=2))
    else:
        console = Console()
        if problems:
            table = Table(title=f"{root}: {counts['error']} errors, {counts['warning']} warnings", title_justify="left")
            table.add_column("severity")
            table.add_column("file", overflow="fold")
            table.add_column("problem", overflow="fold")
            table.add_column("fix", overflow="fold")
            for p in problems:
                style = "bold red" if p.severity == "error" else "yellow"
                table.add_row(f"[{style}]{p.severity}[/]", _short(p.file, root), p.message, p.fix)
            console.print(table)
        if counts["error"] == 0:
            warnings = f", {counts['warning']} warnings" if counts["warning"] else ""
            console.print(f"[green]OK[/] {root}: {n_pairs} image/mask pairs{warnings}", highlight=False,
                          soft_wrap=True)
    if counts["error"]:
        raise typer.Exit(1)


def _count_pairs(root: Path) -> int:
    from segdeploy.data.folder import list_files

    if not ((root / "images").is_dir() and (root / "masks").is_dir()):
        return 0
    return len(set(list_files(root / "images")) & set(list_files(root / "masks")))


@app.command()
def info(path: str = typer.Argument(..., help=PATH_HELP),
         format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json.")) -> None:
    """Counts, image sizes, channels, class frequencies and split sizes of a dataset."""
    from segdeploy.data.check import dataset_info
    from segdeploy.fileio import dumps

    root, name = _resolve(path)
    data = dataset_info(root, name=name)
    if format is OutputFormat.json:
        typer.echo(dumps(data, indent=2))
        return
    console = Console()
    size = data["image_size"]
    ch = data["channels"]
    console.print(f"[bold]{data['name']}[/] {data['root']}" + (f"  ({data['title']})" if data["title"] else ""),
                  highlight=False, soft_wrap=True)
    console.print(f"{data['counts']['pairs']} pairs ({data['counts']['empty_masks']} with empty masks); image HxW "
                  f"{_hw(size['min_hw'])} .. {_hw(size['max_hw'])}, median {_hw(size['median_hw'])}; "
                  f"in_chans {ch['in_chans']} (modes {', '.join(f'{m}: {n}' for m, n in ch['modes'].items())})",
                  highlight=False, soft_wrap=True)
    console.print(data["classes_source"] + (f"; group_regex {data['group_regex']}" if data["group_regex"] else ""),
                  highlight=False, soft_wrap=True)
    table = Table(title_justify="left")
    for col in ("index", "class", "pixel fraction", "images"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for j, c in enumerate(data["classes"]):
        table.add_row(str(j), c, f"{data['class_pixel_fraction'][c]:.4f}", str(data["images_per_class"][c]))
    console.print(table)
    if data.get("undeclared_labels"):
        console.print(f"[bold red]undeclared label values[/] {data['undeclared_labels']}: run segdeploy data check")
    splits = data["splits"]
    if "error" in splits:
        console.print(f"[yellow]splits[/]: {splits['error']}", highlight=False, soft_wrap=True)
    else:
        how = "split.json" if splits["method"] == "split.json" else (
            f"seeded group k-fold (seed {splits['seed']}, k {splits['k']}, fold {splits['fold']})")
        console.print(f"splits ({how}): " + ", ".join(f"{k} {v}" for k, v in splits["counts"].items()),
                      highlight=False, soft_wrap=True)


def _hw(hw: list) -> str:
    return "x".join(str(int(round(v))) if float(v).is_integer() else f"{v:g}" for v in hw)
