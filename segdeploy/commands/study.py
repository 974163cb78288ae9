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


@app.command()
def plan(
    study: Path = typer.Argument(..., help="a study folder (or results .jsonl) of a pilot study, whose per-image "
                                           "spread is used; or anything, with --sd"),
    delta: float = typer.Option(0.02, "--delta", min=1e-4, help="the Dice difference to detect"),
    sd: float | None = typer.Option(None, "--sd", min=0.0, help="sd of the per-image paired Dice differences "
                                                                "(default: from the pilot's results)"),
    fold_sd: float = typer.Option(0.0, "--fold-sd", min=0.0, help="sd over folds of the per-fold Δ (default: from "
                                                                  "the pilot where it has several folds, else 0)"),
    power: float = typer.Option(0.8, "--power", min=0.5, max=0.99),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-4, max=0.5),
) -> None:
    """Estimate how many test images (and folds) a study needs to detect a Dice difference of --delta, before
    spending GPU-days: n = s² / ((Δ / (z_{1-α/2} + z_power))² − s_fold² / F), the inverse of the smallest
    detectable Δ the report states (segdeploy.analysis.verdict)."""
    from rich.console import Console
    from rich.table import Table

    from segdeploy.errors import SegdeployError
    from segdeploy.analysis.verdict import images_needed, min_detectable_delta

    rows = []  # (dataset, s_img, s_fold, n now, folds now)
    if sd is None:
        from segdeploy.analysis.rows import load_rows
        from segdeploy.analysis.summary import summarize as compute

        summary = compute(load_rows([study]), [], n_resamples=200, permutation=False)
        rows = [(c.dataset, c.s_img, c.s_fold if c.s_fold is not None else fold_sd, c.test.n if c.test else None,
                 c.n_folds) for c in summary.comparisons if c.s_img is not None and c.dataset in summary.learned
                and summary.learned[c.dataset].learned is not False]
        if not rows:
            raise SegdeployError("the pilot has no learned dataset with a paired comparison to take the spread "
                                 "from.", path=study, fix="pass --sd (e.g. 0.1), or run a pilot with both families.")
    else:
        rows = [("(given)", sd, fold_sd, None, None)]
    table = Table(title=f"test images needed to detect Δ = {delta:g} (power {power:g}, two-sided α {alpha:g})",
                  title_justify="left")
    for column in ("dataset", "sd per image", "sd over folds", "images now", "detectable now", "1 fold", "3 folds",
                   "5 folds"):
        table.add_column(column)
    for dataset, s, sf, n, folds in rows:
        now = min_detectable_delta(s, n, sf, folds, alpha=alpha, power=power) if n else None
        need = [images_needed(delta, s, sf, f, alpha=alpha, power=power) for f in (1, 3, 5)]
        table.add_row(dataset, f"{s:.3f}", f"{sf:.3f}", "-" if n is None else str(n),
                      "-" if now is None else f"{now:.3f}", *("more folds" if k is None else str(k) for k in need))
    Console().print(table)
