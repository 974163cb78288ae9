"""``segdeploy study``: the study grid's commands. ``summarize`` is here; ``init`` and ``run`` are registered on
the same ``app`` by their own module."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Run a study grid and summarise it (specialized vs general).")

PUBLISHED_HELP = ("published Dice to show beside measured costs: auto (a published.csv in the study folder, else "
                  "the shipped reference-study table), borst2026, none, or a CSV path (model,dataset,dice,source)")


@app.command()
def summarize(
    inputs: list[Path] = typer.Argument(..., help="study folder(s) holding results.jsonl, or results .jsonl files"),
    published: str = typer.Option("auto", "--published", help=PUBLISHED_HELP),
    resamples: int = typer.Option(2000, "--resamples", min=100, help="bootstrap resamples for the CIs"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and permutation draws"),
) -> None:
    """Print the study's answer and tables: Dice over folds with 95% bootstrap CIs, best general vs best
    specialized (paired CI, Wilcoxon and permutation p), ranks, cost per configuration, shift, lr choice, failures."""
    from rich.console import Console

    from segdeploy.report.build import resolve_published
    from segdeploy.report.console import print_document
    from segdeploy.report.study_report import build_document
    from segdeploy.analysis.rows import load_rows, results_files
    from segdeploy.analysis.summary import summarize as compute

    rows = load_rows(inputs)
    summary = compute(rows, resolve_published(published, inputs), n_resamples=resamples, seed=seed)
    print_document(Console(), build_document(summary, results_files(inputs), draw=False))
