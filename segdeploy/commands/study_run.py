"""``segdeploy study init`` and ``segdeploy study run`` (registered on ``segdeploy.commands.study.app`` beside
``summarize`` by ``segdeploy.commands.app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def init(
    path: Path = typer.Argument(Path("study.toml"), help="Study file to write."),
    template: str = typer.Option("demo", help="demo (tiny models, synthetic data, minutes on a CPU), reference "
                                              "(the reference study's grid, for a GPU), cost (full-size models, "
                                              "random weights, cost only)."),
    force: bool = typer.Option(False, help="Overwrite an existing file."),
) -> None:
    """Write a commented study file from a template."""
    from rich.console import Console

    from segdeploy.errors import SegdeployError
    from segdeploy.fileio import atomic_write_text
    from segdeploy.study.config import template_text

    text = template_text(template)
    if path.exists() and not force:
        raise SegdeployError("the file exists.", path=path, fix="choose another path, or pass --force.")
    atomic_write_text(path, text)
    Console().print(f"wrote {path} (template {template}); edit it, then: segdeploy study run {path} --out DIR",
                    highlight=False)


def run(
    study: Path = typer.Argument(..., help="Study file (TOML, see `segdeploy study init`)."),
    out: Path = typer.Option(..., "--out", help="Study folder: plan.json, results.jsonl, selection.json, cells/."),
    executor: str = typer.Option("local", help="local (in this process, one cell at a time) or ray "
                                               "(pip install segdeploy[cluster])."),
    address: Optional[str] = typer.Option(None, help="Ray: auto (the cluster this machine joined with `ray start`), "
                                                     "HEAD_IP:6379, or ray://HOST:10001 (Ray Client); default: a "
                                                     "new local Ray instance."),
    force: bool = typer.Option(False, help="Re-plan a folder that holds another study, or whose datasets changed "
                                           "since it was planned (cells whose settings or dataset changed are "
                                           "redone, their old rows dropped)."),
) -> None:
    """Train, export, benchmark (and explain) every cell; resumable: run the same command again to continue."""
    from rich.console import Console

    from segdeploy.study.runner import run_study

    console = Console()
    result = run_study(study, out, executor=executor, address=address, force=force, console=console)
    ran = result.ok + result.failed
    colour = "red" if result.failed else "green"
    console.print(f"[bold {colour}]{result.n_cells} cells[/]: {result.done_before} done earlier, {result.ok} ok and "
                  f"{result.failed} failed in this run ({result.seconds:.0f} s for {ran}) -> {result.results}",
                  highlight=False)
    if (result.study_dir / "selection.json").is_file():
        console.print(f"learning-rate selection (best mean validation Dice): {result.study_dir / 'selection.json'}",
                      highlight=False)
