"""``segdeploy check``: fail (exit 1) when accuracy regressed against a baseline or a deployed precision
fell below 99% of its fp32 Dice; exit 2 (via the CLI's error handler) for missing or invalid files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table


def _points(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{100 * value:.2f}"


def check(
    results: Path = typer.Argument(..., help="results JSONL written by `segdeploy bench`"),
    baseline: Path = typer.Option(..., "--baseline", help="baseline JSON (segdeploy.baseline/1)"),
    tolerance: float | None = typer.Option(
        None, "--tolerance", min=0.0, help="allowed Dice drop in points (default: the baseline's value, else 1.0)"),
    write_baseline: bool = typer.Option(False, "--write-baseline",
                                        help="write --baseline from RESULTS (latest ok row per configuration)"),
    strict: bool = typer.Option(False, "--strict", help="fail a non-fp32 row that has no torch fp32 reference "
                                                        "(same run, split, images and device kind) for the 99% rule"),
    any_machine: bool = typer.Option(False, "--any-machine",
                                     help="with --write-baseline: entries that apply on every machine class (fixed "
                                          "weights, only deployment varies); default: this machine class's entries, "
                                          "those of other classes kept"),
) -> None:
    """Accuracy regression gate: compare RESULTS with a baseline and with each model's fp32 Dice."""
    from segdeploy.fileio import atomic_write_json
    from segdeploy.records import CheckKey
    from segdeploy.report.check import (DEFAULT_TOLERANCE, applicable_entries, check_results, load_baseline,
                                        load_results, machine_class, make_baseline)

    console = Console()
    rows = load_results(results)
    machines = sorted({m for r in rows if (m := machine_class(r)) is not None})
    if write_baseline:
        existed = baseline.exists()
        keep = load_baseline(baseline)["entries"] if existed and not any_machine else []
        data = make_baseline(rows, DEFAULT_TOLERANCE if tolerance is None else tolerance,
                             per_machine=not any_machine, keep=keep)
        atomic_write_json(baseline, data)
        n_kept = sum(e.get("machine") not in machines for e in data["entries"]) if not any_machine else 0
        scope = "any machine" if any_machine or not machines else " and ".join(machines)
        console.print(f"{'replaced' if existed else 'wrote'} {baseline}: {len(data['entries']) - n_kept} "
                      f"configurations for {scope}" + (f", {n_kept} of other machine classes kept" if n_kept else "")
                      + f"; tolerance {data['tolerance_dice_points']:g} Dice points")
        return

    base = load_baseline(baseline)
    applied, others = applicable_entries(base, rows)
    if others and not any(e.get("machine") for e in applied):
        # trained weights differ between machine classes, so another class's Dice is not this one's yardstick
        console.print(f"[yellow]no baseline entries for this machine class ({', '.join(machines) or 'unknown'})"
                      f"[/]: {baseline} has entries for {'; '.join(others)}. Every configuration is new here and "
                      f"only the 99% rule applies; record this class with --write-baseline (it keeps the others).")
    findings = check_results(rows, base, tolerance, strict=strict)
    # a field with one value across all configurations goes to the title, leaving room for the rest
    fields = CheckKey._fields
    label = {"device_kind": "device"}
    values = {name: {getattr(f.key, name) for f in findings} for name in fields}
    varying = [name for name in fields if len(values[name]) > 1]
    common = ", ".join(f"{label.get(name, name)} {next(iter(values[name]))}" for name in fields
                       if len(values[name]) == 1)
    table = Table(title=f"accuracy check of {results} against {baseline}" + (f" ({common})" if common else ""),
                  title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("status", no_wrap=True)
    for name in varying:
        table.add_column(label.get(name, name))
    for name in ("dice", "ref", "Δ pts"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("rule")
    for f in findings:
        rule = f.rule + (f": {f.reason}" if f.reason else "")
        style = "bold red" if f.failed else {"new": "cyan", "no fp32 ref": "yellow"}.get(f.status)
        table.add_row(f.status, *(str(getattr(f.key, name)) for name in varying), _points(f.dice), _points(f.reference),
                      _points(f.delta_points, signed=True), rule, style=style)
    console.print(table)

    failed = Counter(f.status for f in findings if f.failed)
    n_configs = len({f.key for f in findings})
    n_new = sum(f.status == "new" for f in findings)
    n_unref = sum(f.status == "no fp32 ref" and not f.failed for f in findings)
    unref = f"; {n_unref} without a torch fp32 reference (--strict fails them)" if n_unref else ""
    if failed:
        detail = ", ".join(f"{n} {status}" for status, n in failed.items())
        n_bad = len({f.key for f in findings if f.failed})
        console.print(f"[bold red]FAIL[/]: {n_bad} of {n_configs} configurations failed ({detail}); {n_new} new"
                      f"{unref}.")
        raise typer.Exit(code=1)
    console.print(f"[green]OK[/]: {n_configs} configurations checked, none failed; {n_new} new{unref}.")


def report(
    inputs: list[Path] = typer.Argument(..., help="study folder(s) holding results.jsonl, or results .jsonl files"),
    out: Path = typer.Option(..., "--out", help="folder for report.html, report.md and summary.csv"),
    published: str = typer.Option("auto", "--published", help="published Dice beside measured costs: auto, "
                                  "borst2026, none, or a CSV path (model,dataset,dice,source)"),
    resamples: int = typer.Option(2000, "--resamples", min=100, help="bootstrap resamples for the CIs"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and permutation draws"),
    cam_images: bool = typer.Option(True, "--cam-images/--no-cam-images",
                                    help="embed Grad-CAM montages (pictures of the data); --no-cam-images keeps "
                                         "only their numbers, for a report that may be shared where the images "
                                         "may not"),
) -> None:
    """Write the study report: report.html (one offline file, figures inline), report.md and summary.csv."""
    from segdeploy.report.build import write_report

    files = write_report(inputs, out, published=published, n_resamples=resamples, seed=seed,
                         cam_images=cam_images)
    Console().print(f"wrote {files.html} ({files.html_bytes / 1e6:.2f} MB, {files.n_figures} figures), "
                    f"{files.markdown} and {files.csv}")
