"""The run's own images for export: parity and calibration inputs, and validation pairs for ``--int8-auto``.

Images are preprocessed exactly as every backend sees them (the run's ``img_size``/``mean``/``std``), from the
run's recorded split of the dataset it was trained on, so test images stay held out of calibration.
"""

from __future__ import annotations

import random

import numpy as np

from segdeploy.errors import SegdeployError


def load_images(run, split: str, n: int, *, seed: int | None = None) -> np.ndarray:
    """``n`` preprocessed images (N, C, S, S) float32 from the run's dataset split: the first ``n`` ids of the
    split, or a seeded random choice of ``n`` when ``seed`` is given."""
    from segdeploy.data import open_dataset
    from segdeploy.data.transforms import preprocess

    meta = run.meta
    if not meta.dataset.spec:
        raise SegdeployError("the run's model.json names no dataset (dataset.spec): parity and calibration need "
                             "its images.", fix="add \"dataset\": {\"spec\": PATH_OR_NAME} to model.json (an imported model: import it "
                                 "again with --data PATH_OR_NAME).")
    dataset = open_dataset(meta.dataset.open_spec(), class_map=meta.dataset.class_map)
    # the run's recorded ids (calibration: train only); parity is no accuracy claim, so test ids the folder lost
    # since training only warn
    ids = run.split_ids(dataset, split, allow_missing=True)
    ids = sorted(random.Random(seed).sample(ids, min(n, len(ids)))) if seed is not None else ids[:n]
    images = [preprocess(dataset.load(i).image, meta.img_size, meta.mean, meta.std)[0] for i in ids]
    return np.stack(images).astype(np.float32, copy=False)
