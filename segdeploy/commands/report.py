"""``segdeploy check``: fail (exit 1) when accuracy regressed against a baseline or a deployed precision
fell below 99% of its fp32 Dice; exit 2 (via the CLI's error handler) for missing or invalid files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from segdeploy.commands.util import number_option


def _points(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{100 * value:.2f}"


def check(
    results: Path = typer.Argument(..., help="results JSONL written by `segdeploy bench`"),
    baseline: Path = typer.Option(..., "--baseline", help="baseline JSON (segdeploy.baseline/2; /1 still loads)"),
    tolerance: float | None = typer.Option(
        None, "--tolerance", callback=number_option("--tolerance"), help="allowed Dice drop in points (default: the baseline's value, else 1.0)"),
    write_baseline: bool = typer.Option(False, "--write-baseline",
                                        help="write --baseline from RESULTS (latest ok row per configuration)"),
    strict: bool = typer.Option(False, "--strict", help="also fail (else warn): a non-fp32 row without a torch fp32 "
                                                        "reference (same run, split, images and device kind) for the "
                                                        "99% rule, a baseline entry with no row in RESULTS, and a "
                                                        "configuration whose entries are all for other machine "
                                                        "classes"),
    any_machine: bool = typer.Option(False, "--any-machine",
                                     help="with --write-baseline: entries that apply on every machine class (fixed "
                                          "weights, only deployment varies); default: this machine class's entries, "
                                          "those of other classes kept"),
) -> None:
    """Accuracy regression gate: compare RESULTS with a baseline and with each model's fp32 Dice."""
    from segdeploy.fileio import atomic_write_json
    from segdeploy.rowkeys import CheckKey
    from segdeploy.report.check import (DEFAULT_TOLERANCE, applicable_entries, check_results, load_baseline,
                                        load_results, machine_class, make_baseline)

    console = Console()
    rows = load_results(results)
    machines = sorted({m for r in rows if (m := machine_class(r)) is not None})
    if write_baseline:
        existed = baseline.exists()
        previous = load_baseline(baseline)["entries"] if existed else []
        data = make_baseline(rows, DEFAULT_TOLERANCE if tolerance is None else tolerance,
                             per_machine=not any_machine, keep=[] if any_machine else previous, previous=previous)
        atomic_write_json(baseline, data)
        n_kept = len(data["entries"]) - len(make_baseline(rows, per_machine=not any_machine)["entries"])
        scope = "any machine" if any_machine or not machines else " and ".join(machines)
        console.print(f"{'replaced' if existed else 'wrote'} {baseline}: {len(data['entries']) - n_kept} "
                      f"configurations for {scope}" + (f", {n_kept} of other machine classes kept" if n_kept else "")
                      + f"; tolerance {data['tolerance_dice_points']:g} Dice points")
        return

    base = load_baseline(baseline)
    applied, others = applicable_entries(base, rows)
    findings = check_results(rows, base, tolerance, strict=strict)
    elsewhere = [f for f in findings if f.status == "other machine class"]
    if others and elsewhere:
        # trained weights differ between machine classes, so another class's Dice is not this one's yardstick
        console.print(f"[{'bold red]error' if strict else 'yellow]warning'}: no baseline entries for this machine "
                      f"class ({', '.join(machines) or 'unknown'})[/] for {len(elsewhere)} configurations: "
                      f"{baseline} has entries for {'; '.join(others)}. Only the 99% rule applies to them"
                      f"{' (--strict fails them)' if not strict else ''}; record this class with --write-baseline "
                      "(it keeps the others).", soft_wrap=True)
    absent = [f for f in findings if f.status == "missing" and f.dice is None and f.reason is None
              and f.rule.endswith("not in the results")]
    if absent and not strict:
        console.print(f"[yellow]warning[/]: {len(absent)} baseline entries have no row in {results} "
                      "(--strict fails them).", soft_wrap=True)
    # a field with one value across all configurations goes to the title, leaving room for the rest
    fields = CheckKey._fields
    label = {"device_kind": "device"}
    values = {name: {getattr(f.key, name) for f in findings} for name in fields}
    varying = [name for name in fields if len(values[name]) > 1]
    common = ", ".join(f"{label.get(name, name)} {next(iter(values[name]))}" for name in fields
                       if len(values[name]) == 1 and values[name] != {None})  # None: a field no row has
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
    out: Path = typer.Option(..., "--out", help="folder for report.html, report.md, summary.csv and answer.json"),
    published: str = typer.Option("auto", "--published", help="published Dice beside measured costs: auto, "
                                  "borst2026, none, or a CSV path (model,dataset,dice,source)"),
    resamples: int = typer.Option(2000, "--resamples", min=100, help="bootstrap resamples for the CIs"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and permutation draws"),
    cam_images: bool = typer.Option(True, "--cam-images/--no-cam-images",
                                    help="embed Grad-CAM montages (pictures of the data); --no-cam-images keeps "
                                         "only their numbers, for a report that may be shared where the images "
                                         "may not"),
) -> None:
    """Write the study report: report.html (one offline file, figures inline), report.md, summary.csv and
    answer.json (the verdict per dataset as data)."""
    from segdeploy.report.build import write_report

    files = write_report(inputs, out, published=published, n_resamples=resamples, seed=seed,
                         cam_images=cam_images)
    Console().print(f"wrote {files.html} ({files.html_bytes / 1e6:.2f} MB, {files.n_figures} figures), "
                    f"{files.markdown}, {files.csv} and {files.answer}")
