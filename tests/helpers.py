"""Builders shared by the tests: a valid run metadata record and a run directory with an untrained checkpoint."""

from __future__ import annotations

from pathlib import Path

from segdeploy.records import DatasetRef, RunMeta, SplitRecord

SYNTHETIC_CLASSES = ["background", "cavity", "wall", "lesion"]

TINY_DATA = "synthetic:24"
# the training arguments of the suite's tiny run (tests/conftest.py, tiny_run); a test that resumes or retrains the
# run passes the same ones
TINY_TRAIN_ARGS = ["--data", TINY_DATA, "--model", "unet-tiny", "--img-size", "64", "--batch-size", "4", "--k", "2",
                   "--device", "cpu"]


def make_meta(dataset=None, *, spec: str | None = None, split: dict | None = None, **overrides) -> RunMeta:
    """A ``RunMeta`` for an untrained ``unet-tiny`` at 64 px. With ``dataset`` (a ``SegDataset``) the classes,
    channels and dataset reference are that dataset's (``spec`` is what ``open_dataset`` was given; its name by
    default); without one, the built-in synthetic set's (grayscale, four classes). ``split`` sets the recorded
    split arguments (default seed 42, k 3, fold 0); any other field is set by keyword."""
    if dataset is not None:
        classes, in_chans = list(dataset.classes), dataset.in_chans
        ref = DatasetRef(spec=spec or dataset.name, name=dataset.name, root=str(dataset.root))
    else:
        classes, in_chans = list(SYNTHETIC_CLASSES), 1
        ref = DatasetRef(spec=spec)
    fields = dict(model="unet-tiny", family="specialized", num_classes=len(classes), classes=classes,
                  in_chans=in_chans, img_size=64, mean=[0.5] * in_chans, std=[0.25] * in_chans, dataset=ref,
                  split=SplitRecord(**{"seed": 42, "k": 3, "fold": 0, "group_regex": None, **(split or {})}))
    return RunMeta(**{**fields, **overrides})


def make_run(run_dir: str | Path, meta: RunMeta | None = None, *, seed: int = 0, **meta_overrides) -> Path:
    """An untrained checkpoint of ``meta``'s model (seeded weights, eval mode) saved in ``run_dir``."""
    import torch

    from segdeploy.models import create_model
    from segdeploy.run.folder import save_checkpoint

    meta = meta or make_meta(**meta_overrides)
    torch.manual_seed(seed)
    model = create_model(meta.model, num_classes=meta.num_classes, in_chans=meta.in_chans, img_size=meta.img_size)
    save_checkpoint(run_dir, model.eval(), meta)
    return Path(run_dir)
