"""Training settings checked before any work, and the error for a training that diverged."""

from __future__ import annotations

import math
from pathlib import Path

from segdeploy.errors import SegdeployError

MIN_IMG_SIZE = 32  # five stride-2 stages (U-Net, SegFormer, ...) leave one pixel at 32


def check_config(cfg) -> None:
    """One error per setting that cannot train, naming the option."""
    rules = [
        (cfg.epochs >= 1, f"--epochs {cfg.epochs}: at least one epoch is needed.", "pass --epochs 1 or more."),
        (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size}: a batch holds at least one image.",
         "pass --batch-size 1 or more."),
        (math.isfinite(cfg.lr) and cfg.lr > 0, f"--lr {cfg.lr:g}: the learning rate must be a positive number.",
         "pass e.g. --lr 1e-4 (the study picks from 1e-4, 5e-5, 1e-5)."),
        (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0, f"weight decay {cfg.weight_decay:g} is negative.",
         "use a weight decay >= 0."),
        (cfg.img_size >= MIN_IMG_SIZE, f"--img-size {cfg.img_size}: the networks downsample by up to 32, so the "
                                       f"input must be at least {MIN_IMG_SIZE} pixels.",
         "pass --img-size 64 or more (a multiple of 32; the study uses 512)."),
        (cfg.patience >= 1, f"--patience {cfg.patience}: must be at least 1.", "pass --patience 1 or more."),
        (cfg.augment >= 0, f"--augment {cfg.augment:g} is negative.", "pass --augment 0 (none) or more."),
        (cfg.max_train_images is None or cfg.max_train_images >= 1,
         f"--max-train-images {cfg.max_train_images}: must be at least 1.", "omit it to use every training image."),
        (cfg.workers is None or cfg.workers >= 0, f"--workers {cfg.workers} is negative.", "pass --workers 0 or more."),
    ]
    for ok, message, fix in rules:
        if not ok:
            raise SegdeployError(message, fix=fix)
    from segdeploy.train.precision import amp_mode

    amp_mode(cfg.amp)  # an unknown --amp is refused before any work


def check_input_size(model, in_chans: int, img_size: int, device, name: str) -> None:
    """One forward pass of a zero image: a size the architecture cannot take is a one-line error before training,
    not a traceback from inside the first batch."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size, device=device))
    except (RuntimeError, ValueError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SegdeployError(f"model {name} cannot take --img-size {img_size} ({type(e).__name__}: {first}).",
                             fix="pass a multiple of 32 (e.g. 64, 256 or the study's 512).") from e
    finally:
        model.train(was_training)


def diverged(out: Path, *, epoch: int, step: int, loss: float, lr: float, best_epoch: int, best: float,
             saved_epoch: int) -> SegdeployError:
    """Training stops at the first non-finite loss; what was saved before stays (it is finite)."""
    kept = []
    if best_epoch >= 0:
        kept.append(f"model.safetensors of epoch {best_epoch + 1} (val Dice {best:.4f})")
    if saved_epoch >= 0:
        kept.append(f"the training state of epoch {saved_epoch + 1}")
    kept_text = ("kept: " + " and ".join(kept)) if kept else "nothing was saved (it diverged in the first epoch)"
    return SegdeployError(f"training diverged: the loss became {loss} at epoch {epoch + 1}, step {step + 1} "
                          f"(--lr {lr:g}); {kept_text}.", path=out,
                          fix="lower --lr (the study uses 1e-4 to 1e-5) and train again with --restart.")
