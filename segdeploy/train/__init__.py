"""The common training protocol (reference study): AdamW, REX schedule, cross-entropy, identical augmentations,
early stopping on validation Dice, mixed precision on CUDA (and on bf16 CPUs with --amp auto); resumable after Ctrl-C or a crash."""

from segdeploy.train.loop import TrainConfig, train_model
from segdeploy.train.schedule import rex_factor

__all__ = ["TrainConfig", "train_model", "rex_factor"]
