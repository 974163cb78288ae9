"""``segdeploy train``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segdeploy.commands.options import Device
from segdeploy.commands.util import number_option


def train(
    data: str = typer.Option(..., "--data", help="Dataset folder (standard layout) or a registered name, e.g. synthetic."),
    model: str = typer.Option(..., "--model", help="Registered model name (see `segdeploy models`)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
    epochs: int = typer.Option(150, help="Maximum epochs (the study: 150, with early stopping)."),
    img_size: int = typer.Option(512, help="Square network input; images are padded to square and resized."),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(1e-4, callback=number_option("--lr", positive=True),
                             help="AdamW learning rate (the study picks from 1e-4, 5e-5, 1e-5)."),
    device: Device = "auto",
    seed: int = typer.Option(42),
    patience: int = typer.Option(20, help="Early stopping: epochs without a validation Dice gain of min-delta."),
    min_delta: float = typer.Option(0.001, callback=number_option("--min-delta")),
    k: int = typer.Option(5, help="Cross-validation folds (ignored when the dataset has split.json)."),
    fold: int = typer.Option(0, help="Which fold is validation."),
    group_regex: Optional[str] = typer.Option(None, help="Regex on the image id whose group 1 names the patient/case; "
                                                         "a group never spans two splits."),
    augment: float = typer.Option(1.0, callback=number_option("--augment"), help="Strength of the geometric augmentations (0 = none)."),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers (default: 0 on CPU, 4 on CUDA)."),
    amp: Optional[str] = typer.Option(None, help="Mixed precision: auto (bf16 on sm80+ GPUs and on CPUs with "
                                      "AMX-BF16 or AVX512-BF16, fp16 on older GPUs, else fp32), bf16, fp16 (CUDA) "
                                      "or off. Default: auto on CUDA, off (fp32) on CPU."),
    pretrained: bool = typer.Option(False, help="Load the library's ImageNet encoder weights (needs the hub)."),
    weights: Optional[str] = typer.Option(None, help="Local weights file to initialise from (keys are reported)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    restart: bool = typer.Option(False, help="Discard what --out holds (a finished run, or one stuck after a crash "
                                             "or a full disk: checkpoint, training state, history, and the ONNX "
                                             "files and engines made from its weights) and train from scratch."),
    max_train_images: Optional[int] = typer.Option(None, help="Use only the first N training images (smoke tests)."),
    class_map: Optional[str] = typer.Option(None, "--class-map", help="Merge or select classes: 'polyp=1,2' "
                                            "(';' between classes; unnamed labels -> background) or a JSON file."),
) -> None:
    """Train a model with the common protocol (AdamW + REX, CE, same augmentations, early stopping on val Dice)."""
    from rich.console import Console

    from segdeploy.train.loop import TrainConfig, train_model

    cfg = TrainConfig(data=data, model=model, out=out, epochs=epochs, img_size=img_size, batch_size=batch_size, lr=lr,
                      device=device, seed=seed, patience=patience, min_delta=min_delta, k=k, fold=fold,
                      group_regex=group_regex, augment=augment, workers=workers, amp=amp, pretrained=pretrained,
                      weights=weights, resume=resume, restart=restart, max_train_images=max_train_images,
                      class_map=class_map)
    meta = train_model(cfg)
    val = meta.val or {}
    Console().print(f"[bold green]trained[/] {model}: best val Dice {val.get('dice', float('nan')):.4f} at epoch "
                    f"{meta.best_epoch}/{meta.epochs_run} ({meta.train_seconds} s) -> {out}/model.safetensors")
