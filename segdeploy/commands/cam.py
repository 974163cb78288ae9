"""``segdeploy cam``: Grad-CAM overlays and CAM-energy-in-ground-truth shares for the worst test images."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def cam(
    run_dir: Path = typer.Argument(..., help="run directory (model.safetensors + model.json)"),
    data: str = typer.Option(..., "--data", help="dataset folder or registered name, as for train/bench"),
    out: Path = typer.Option(..., "--out", help="folder for <id>__<class>.png overlays and cam.json"),
    worst: int = typer.Option(8, "--worst", min=0, help="the N test images with the lowest Dice"),
    random: int = typer.Option(4, "--random", min=0, help="plus this many other test images, drawn with --seed"),
    seed: int = typer.Option(0, "--seed", help="seed of the random pick"),
    layer: str | None = typer.Option(None, "--layer", help="dotted module name; default: chosen like M3d-CAM"),
    split: str = typer.Option("test", "--split", help="split to score and draw from"),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="score the run's recorded test images that "
                                       "are still in the dataset when some are missing (default: refuse)"),
) -> None:
    """Grad-CAM per foreground class from the PyTorch model, for the worst-N and a few random test images."""
    from segdeploy.xai.gradcam import CAM_JSON, gradcam_run

    console = Console()
    summary = gradcam_run(run_dir, data, out, worst=worst, random=random, seed=seed, layer=layer, split=split,
                          allow_missing=allow_missing, show_progress=True)

    names = list(summary["class_means"])
    images = Table(title=f"images drawn to {out} (<id>__<class>.png): CAM energy inside each class's ground truth")
    for column in ("id", "selected as", "Dice", *names):
        images.add_column(column, justify="left" if column in ("id", "selected as") else "right")
    for image in summary["images"]:
        images.add_row(image["id"], image["selected_as"], _fmt(image["dice"]),
                       *(_fmt(image["classes"][n]["cam_energy_in_gt"]) for n in names))
    console.print(images)

    table = Table(title=f"CAM energy inside the ground truth ({summary['model']}, layer {summary['layer']})")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("energy in GT", justify="right")
    table.add_column("GT area (chance)", justify="right")
    for name, means in summary["class_means"].items():
        table.add_row(name, str(means["n_images"]), _fmt(means["cam_energy_in_gt"]), _fmt(means["gt_area_fraction"]))
    console.print(table)
    console.print(f"scored {summary['n_scored']} {split} images; wrote {len(summary['files'])} overlays for "
                  f"{len(summary['images'])} images and {Path(out) / CAM_JSON}")
