"""``segdeploy data check|info|dedupe PATH`` and ``data import FORMAT SRC DEST``: bring a data set into the folder
layout, find every problem in it, describe it, find its duplicates."""

from __future__ import annotations

from enum import Enum
from typing import Optional
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Import, check, describe and de-duplicate dataset folders (images/, masks/, meta.json).",
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
    """Counts, image sizes, intensities, class balance, empty masks, groups and split sizes of a dataset."""
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
    console.print(f"sizes: {size['distinct_sizes']} distinct, most common " + ", ".join(
        f"{h}x{w} ({n})" for h, w, n in size["common_hw"][:3]) + "; longer side quartiles " +
        "/".join(f"{v:g}" for v in size["longer_side_quartiles"]), highlight=False, soft_wrap=True)
    console.print("intensity " + "; ".join(f"{c}: {v['min']}..{v['max']} (p1 {v['p1']}, p99 {v['p99']}, mean "
                                             f"{v['mean']:g} +- {v['std']:g})" for c, v in data["intensity"].items()),
                  highlight=False, soft_wrap=True)
    groups = data["groups"]
    console.print(data["classes_source"] + (f"; group_regex {data['group_regex']}" if data["group_regex"] else "")
                  + (f"; {groups['count']} groups (by {' + '.join(groups['by'])})" if "count" in groups else
                     f"; groups: {groups.get('error')}"), highlight=False, soft_wrap=True)
    if data["empty_mask_ids"]:
        n = data["counts"]["empty_masks"]
        console.print(f"empty masks ({n}): {', '.join(data['empty_mask_ids'][:5])}" + (" ..." if n > 5 else ""),
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


class DedupeMode(str, Enum):
    group = "group"
    drop = "drop"
    off = "off"


class MaskEncoding(str, Enum):
    auto = "auto"
    index = "index"
    binary = "binary"
    palette = "palette"


def _pair_of_floats(text: str | None, flag: str) -> tuple[float, float] | None:
    from segdeploy.errors import SegdeployError

    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SegdeployError(f"{flag} {text!r}: expected two numbers LO,HI.", fix=f"e.g. {flag}=-160,240") from None
    if not hi > lo:
        raise SegdeployError(f"{flag} {text!r}: HI must be above LO.", fix=f"e.g. {flag}=-160,240")
    return lo, hi


@app.command("import")
def import_(
    format: str = typer.Argument(..., metavar="FORMAT", help="masks, nnunet, acdc or camus."),
    src: Path = typer.Argument(..., help="The data set as downloaded: a folder or a .zip."),
    dest: Path = typer.Argument(..., help="Dataset folder to create (images/, masks/, meta.json, ...)."),
    resize_longer: Optional[int] = typer.Option(None, help="Shrink images so the longer side is at most N px "
                                                           "(masks nearest-neighbour); never enlarges."),
    dedupe: DedupeMode = typer.Option(DedupeMode.group, help="group: near-duplicates share a group (never split "
                                                             "apart); drop: keep one of each set; off."),
    threshold: Optional[int] = typer.Option(None, help="Near-duplicate Hamming distance of 64-bit perceptual "
                                                       "hashes (default 4)."),
    force: bool = typer.Option(False, help="Replace DEST if it exists."),
    images: Optional[str] = typer.Option(None, help="masks: sub-folder holding the images (default: found)."),
    masks: Optional[str] = typer.Option(None, help="masks: sub-folder holding the masks (default: found)."),
    pair_regex: Optional[str] = typer.Option(None, help="masks: group 1 of this regex on the file name pairs an "
                                                        "image with its masks (DRIVE: '^(\\d+)_')."),
    mask_encoding: MaskEncoding = typer.Option(MaskEncoding.auto, help="masks: auto, index (value = class), binary "
                                                                       "(0/255, JPEG-safe) or palette."),
    palette: Optional[str] = typer.Option(None, help='masks: RGB colours of the classes, "255,0,0=neoplastic;'
                                                     '0,255,0=non_neoplastic" (black = background).'),
    tolerance: float = typer.Option(100.0, help="masks: RGB distance within which a colour is its palette entry."),
    ignore_value: Optional[int] = typer.Option(None, help="masks: a mask value marking 'ignore' (e.g. a 255 border "
                                                          "around class-index labels), imported as background."),
    max_ratio: float = typer.Option(100.0, help="A .zip member declaring more than N times its compressed size is "
                                                "refused before anything is unpacked (zip bomb)."),
    max_unpacked_gb: float = typer.Option(200.0, help="A .zip declaring more than N GB in total is refused before "
                                                      "anything is unpacked."),
    classes: Optional[str] = typer.Option(None, help="Class names, comma-separated, index = label "
                                                     "(default: from the format, the palette, or class_K)."),
    axis: int = typer.Option(2, help="Volumes: voxel axis to slice along (2 = axial for most scans)."),
    window: Optional[str] = typer.Option(None, help="Volumes/16-bit: fixed intensity window LO,HI, e.g. "
                                                    "--window=-160,240 for abdominal CT."),
    percentiles: Optional[str] = typer.Option(None, help="Volumes/16-bit: clip to these per-volume percentiles "
                                                         "LO,HI (default 0.5,99.5; 8-bit data is kept as is)."),
    skip_empty: bool = typer.Option(False, help="Volumes: leave out slices whose mask is all background."),
    channels: Optional[str] = typer.Option(None, help="nnunet: input channels to keep, e.g. 0 or 0,1,2."),
    format_: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json."),
) -> None:
    """Import a data set as downloaded (folder or .zip) into segdeploy's layout, atomically, then check it."""
    from segdeploy.data.importers.base import ImportOptions
    from segdeploy.data.importers.build import import_dataset
    from segdeploy.fileio import dumps

    opts = ImportOptions(
        resize_longer=resize_longer, dedupe=dedupe.value, threshold=threshold, force=force, images=images,
        masks=masks, pair_regex=pair_regex, mask_encoding=mask_encoding.value, palette=palette, tolerance=tolerance,
        ignore_value=ignore_value, max_ratio=max_ratio, max_unpacked_gb=max_unpacked_gb,
        classes=[c.strip() for c in classes.split(",")] if classes else None, axis=axis,
        window=_pair_of_floats(window, "--window"), percentiles=_pair_of_floats(percentiles, "--percentiles"),
        skip_empty=skip_empty, channels=tuple(int(c) for c in channels.split(",")) if channels else None)
    report = import_dataset(format, src, dest, opts, progress=format_ is OutputFormat.table)
    if format_ is OutputFormat.json:
        typer.echo(dumps(report.to_json(), indent=2))
        return
    _print_import(report)


def _print_import(report) -> None:
    console = Console()
    size = report.size_hw
    console.print(f"[bold green]imported[/] {report.format} {report.source} -> {report.dest}: {report.pairs} pairs, "
                  f"{report.groups} groups, {report.empty_masks} empty masks; HxW {_hw(size['min'])} .. "
                  f"{_hw(size['max'])}, median {_hw(size['median'])}", highlight=False, soft_wrap=True)
    table = Table(title_justify="left")
    for col in ("index", "class", "pixel fraction", "images"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for j, c in enumerate(report.classes):
        table.add_row(str(j), c, f"{report.class_pixel_fraction[c]:.4f}", str(report.images_per_class[c]))
    console.print(table)
    if report.duplicates is not None:
        d = report.duplicates
        console.print(f"duplicates: {d['exact_duplicates']} exact, {d['near_duplicates']} near in {d['sets']} sets "
                      f"({d['blank_skipped']} blank images not compared)"
                      + (f"; dropped {len(report.dropped)}" if report.dropped else
                         ("; each set is one group (groups.json)" if d["sets"] else "")), highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if report.skipped:
        table = Table(title=f"{len(report.skipped)} source files skipped", title_justify="left")
        table.add_column("file", overflow="fold")
        table.add_column("reason", overflow="fold")
        for s in report.skipped[:50]:
            table.add_row(s.path, s.reason)
        console.print(table)
        if len(report.skipped) > 50:
            console.print(f"... and {len(report.skipped) - 50} more: see {report.dest}/import.json")
    check = report.check
    console.print(f"data check: [green]OK[/] ({check.get('warning', 0)} warnings)", highlight=False)


@app.command()
def dedupe(path: str = typer.Argument(..., help=PATH_HELP),
           threshold: Optional[int] = typer.Option(None, help="Hamming distance of 64-bit perceptual hashes "
                                                              "(default 4)."),
           report: Optional[Path] = typer.Option(None, help="Where to write the JSON report (default: "
                                                            "PATH/dedupe.json)."),
           write_groups: bool = typer.Option(False, help="Also write PATH/groups.json so each duplicate set is one "
                                                         "group in future splits (changes k-fold splits)."),
           group_regex: Optional[str] = typer.Option(None, help="Patient/case of an id (default: meta.json's), "
                                                                "to count sets that span patients."),
           format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json.")) -> None:
    """Find exact and near-duplicate images in a dataset folder, and the groups and splits each set spans."""
    from segdeploy.data.dedupe import DEFAULT_THRESHOLD, REPORT_FILE, dedupe_dataset
    from segdeploy.data.folder import GROUPS_FILE
    from segdeploy.errors import SegdeployError
    from segdeploy.fileio import atomic_write_json, dumps

    root, _ = _resolve(path)
    result = dedupe_dataset(root, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                            group_regex=group_regex)
    data = result.to_json()
    target = report or root / REPORT_FILE
    try:
        atomic_write_json(target, data)
        if write_groups:
            atomic_write_json(root / GROUPS_FILE, result.groups_json())
    except OSError as e:
        raise SegdeployError(f"cannot write the report ({e.strerror}).", path=target,
                             fix="pass --report FILE somewhere writable (the data set may be read-only).") from e
    if format is OutputFormat.json:
        typer.echo(dumps(data, indent=2))
        return
    s = data["summary"]
    console = Console()
    console.print(f"{root}: {s['images']} images, {s['exact_duplicates']} exact and {s['near_duplicates']} near "
                  f"duplicates in {s['sets']} sets (phash distance <= {result.threshold}); {s['sets_across_groups']} "
                  f"sets span several groups, {s['sets_across_splits']} span several splits; {s['blank_skipped']} "
                  f"blank images not compared -> {target}", highlight=False, soft_wrap=True)
    if result.sets:
        table = Table(title_justify="left")
        for col in ("ids", "distinct", "max distance", "groups", "splits"):
            table.add_column(col, overflow="fold")
        for d in result.sets[:30]:
            table.add_row(", ".join(d.ids[:4]) + (f" (+{len(d.ids) - 4})" if len(d.ids) > 4 else ""),
                          str(d.distinct), str(d.max_distance), str(len(d.groups)), ", ".join(d.splits))
        console.print(table)
