"""Trivial predictors scored on the same test images as a model, so a report can tell "learned" from "noise".

* ``all_bg``: every pixel background. Its Dice is 0 for every class present (by the micro rule a class never
  predicted and never present is left out), so it matters only on images with no foreground.
* ``all_fg``: every pixel one foreground class; with several foreground classes the best of them on these images
  (optimistic for the baseline, so "beats the baseline" is a harder test).
* ``prior``: the training split's per-pixel class prior as a fixed mask: each training mask letterboxed to the
  network size (as the model sees it), one-hot counts summed per pixel, the most frequent class per pixel; restored
  to each test image's resolution as a prediction would be. A model that only learned where lesions usually are
  scores this. At most ``MAX_PRIOR_MASKS`` training masks (evenly spaced in split order) are read, and the mask is
  kept per process for the same dataset, ids and size (a study benches many runs of one split).

Dice is the micro mDSC over the test images (``metrics.confusion_scores``), as the model's ``dice``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segdeploy.evaluation.metrics import confusion_matrix, confusion_scores

MAX_PRIOR_MASKS = 500
_PRIORS: dict[tuple, np.ndarray] = {}


def _mask(dataset, sample_id: str) -> np.ndarray:
    load_mask = getattr(dataset, "load_mask", None)
    return np.asarray(load_mask(sample_id) if load_mask is not None else dataset.load(sample_id).mask)


def _letterboxed_mask(mask: np.ndarray, img_size: int) -> np.ndarray:
    from segdeploy.data.transforms import letterbox

    # letterbox wants an image beside the mask; a 1-channel zero image of the mask's shape costs little
    _, out, _ = letterbox(np.zeros((*mask.shape, 1), np.uint8), mask.astype(np.uint8), img_size)
    return out


def prior_mask(dataset, train_ids: Sequence[str], img_size: int, num_classes: int) -> np.ndarray:
    """(S, S) uint8: the most frequent class per pixel over the (letterboxed) training masks."""
    ids = list(train_ids)
    key = (str(getattr(dataset, "root", id(dataset))), getattr(dataset, "name", None),
           repr(getattr(dataset, "class_map", None)), hash(tuple(ids)), img_size, num_classes)
    if key not in _PRIORS:
        if len(_PRIORS) > 64:
            _PRIORS.clear()
        _PRIORS[key] = _prior_mask(dataset, ids, img_size, num_classes)
    return _PRIORS[key]


def _prior_mask(dataset, ids: list[str], img_size: int, num_classes: int) -> np.ndarray:
    if len(ids) > MAX_PRIOR_MASKS:
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, MAX_PRIOR_MASKS).astype(int)]
    counts = np.zeros((num_classes, img_size, img_size), np.int64)
    rows, cols = np.indices((img_size, img_size))
    for sample_id in ids:
        m = _letterboxed_mask(_mask(dataset, sample_id), img_size).astype(np.int64)
        np.add.at(counts, (np.clip(m, 0, num_classes - 1), rows, cols), 1)
    return counts.argmax(axis=0).astype(np.uint8)


def trivial_dice(dataset, test_ids: Sequence[str], train_ids: Sequence[str] | None, *, img_size: int,
                 num_classes: int) -> dict[str, float | None]:
    """{"all_bg", "all_fg", "prior"} micro mDSC on ``test_ids``; ``prior`` is None without training ids."""
    from segdeploy.data.transforms import letterbox_meta, restore

    k = num_classes
    prior = prior_mask(dataset, train_ids, img_size, k) if train_ids else None
    one_hot = np.eye(k, dtype=np.float32)[prior].transpose(2, 0, 1) if prior is not None else None
    bg = np.zeros((k, k), np.int64)
    fg = np.zeros((k - 1, k, k), np.int64)
    pr = np.zeros((k, k), np.int64)
    for sample_id in test_ids:
        gt = _mask(dataset, sample_id).astype(np.int64)
        counts = np.bincount(gt.ravel(), minlength=k)[:k]
        # constant predictions: every ground-truth pixel of class g lands in one column
        bg[:, 0] += counts
        for c in range(1, k):
            fg[c - 1][:, c] += counts
        if one_hot is not None:
            pred = restore(one_hot, letterbox_meta(*gt.shape, img_size)).argmax(axis=0)
            pr += confusion_matrix(pred, gt, k)

    def dice(cm: np.ndarray) -> float | None:
        return confusion_scores(cm[None])["dice"]

    fg_scores = [d for d in (dice(cm) for cm in fg) if d is not None]
    return {"all_bg": dice(bg), "all_fg": max(fg_scores) if fg_scores else None,
            "prior": dice(pr) if one_hot is not None else None}
