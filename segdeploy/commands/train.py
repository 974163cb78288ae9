"""``segdeploy train``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segdeploy.commands.options import Device, train_option
from segdeploy.commands.util import number_option
from segdeploy.records import key_default
from segdeploy.train.config import TrainConfig


def train(
    data: str = typer.Option(..., "--data", help="Dataset folder (standard layout) or a registered name, e.g. synthetic."),
    model: str = typer.Option(..., "--model", help="Registered model name (see `segdeploy models`)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
    epochs: int = train_option("epochs"),
    img_size: int = train_option("img_size"),
    batch_size: int = train_option("batch_size"),
    lr: float = train_option("lr", callback=number_option("--lr", positive=True)),
    device: Device = key_default(TrainConfig, "device"),
    seed: int = train_option("seed"),
    patience: int = train_option("patience"),
    min_delta: float = train_option("min_delta", callback=number_option("--min-delta")),
    k: int = train_option("k"),
    fold: int = train_option("fold"),
    group_regex: Optional[str] = train_option("group_regex"),
    augment: float = train_option("augment", callback=number_option("--augment")),
    workers: Optional[int] = train_option("workers"),
    amp: Optional[str] = train_option("amp"),
    pretrained: bool = train_option("pretrained"),
    weights: Optional[str] = train_option("weights"),
    resume: bool = train_option("resume"),
    restart: bool = train_option("restart"),
    max_train_images: Optional[int] = train_option("max_train_images"),
    class_map: Optional[str] = train_option("class_map", "--class-map"),
) -> None:
    """Train a model with the common protocol (AdamW + REX, CE, same augmentations, early stopping on val Dice)."""
    from rich.console import Console

    from segdeploy.train.loop import train_model

    cfg = TrainConfig(data=data, model=model, out=out, epochs=epochs, img_size=img_size, batch_size=batch_size, lr=lr,
                      device=device, seed=seed, patience=patience, min_delta=min_delta, k=k, fold=fold,
                      group_regex=group_regex, augment=augment, workers=workers, amp=amp, pretrained=pretrained,
                      weights=weights, resume=resume, restart=restart, max_train_images=max_train_images,
                      class_map=class_map)
    meta = train_model(cfg)
    val = meta.val or {}
    Console().print(f"[bold green]trained[/] {model}: best val Dice {val.get('dice', float('nan')):.4f} at epoch "
                    f"{meta.best_epoch}/{meta.epochs_run} ({meta.train_seconds} s) -> {out}/model.safetensors")
