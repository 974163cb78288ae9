"""The common training protocol (reference study): AdamW, REX schedule, cross-entropy, identical augmentations,
early stopping on validation Dice, mixed precision on CUDA (and on bf16 CPUs with --amp auto); resumable after Ctrl-C
or a crash.

``TrainConfig`` lives in :mod:`segdeploy.train.config` (no torch); the loop's names load torch on first access
(PEP 562), so the command line can read the training keys without it."""

from segdeploy.train.config import TrainConfig

_LAZY = {"train_model": "segdeploy.train.loop", "rex_factor": "segdeploy.train.schedule"}

__all__ = ["TrainConfig", "train_model", "rex_factor"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
