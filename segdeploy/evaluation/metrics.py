"""Segmentation accuracy at each image's original resolution.

``dice`` is the reference study's metric (Borst & Kounev 2026): per foreground class, TP/FP/FN are summed over the
whole split (micro), Dice is computed per class from those sums, then averaged over the foreground classes.
Background (class 0) is never part of a mean.

Empty-class rules, stated once because they change the numbers:

* split level: a class absent from the whole split in both the ground truth and the prediction has no Dice/IoU
  (``None``, written as JSON null, not 0) and is left out of the mean; precision is ``None`` for a class never
  predicted, recall ``None`` for a class never present.
* per image (``dice_per_image``): a foreground class absent from both the ground truth and the prediction of an
  image is skipped for that image; an image with no foreground at all in either counts as 1.0 (a correct empty
  prediction). The image's score is the mean over the remaining classes; the row reports the mean over images.
* ``hd95``: the 95th percentile of the symmetric surface distances in pixels (MedPy's ``hd95`` definition: both
  directed surface-distance sets pooled, then ``np.percentile(.., 95)``), per image and foreground class, then
  averaged. A pair where the ground truth or the prediction is empty has no defined distance: it is excluded, and
  counted in ``hd95_excluded`` when the other side is not empty (a class absent from both is simply not there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
    k = num_classes
    if pred.size and (min(pred.min(), gt.min()) < 0 or max(pred.max(), gt.max()) >= k):
        raise ValueError(f"class index out of range [0, {k}): prediction {pred.min()}..{pred.max()}, "
                         f"ground truth {gt.min()}..{gt.max()}")
    return np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [float(n / d) if d > 0 else None for n, d in zip(num, den)]


def per_class_scores(cm: np.ndarray) -> dict[str, list[float | None]]:
    """Dice, IoU, precision and recall per class (all classes, background included) from a confusion matrix."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def image_dice(cm: np.ndarray) -> float:
    """One image's mean foreground Dice under the per-image rule in the module docstring."""
    fg = per_class_scores(cm)["dice"][1:]
    present = [v for v in fg if v is not None]
    return float(np.mean(present)) if present else 1.0


def _surface(mask: np.ndarray) -> np.ndarray:
    # the border pixels of a region: the mask minus its 4-connected erosion (as MedPy does); pixels on the image
    # edge count as border because erosion pads with background
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (pixels) from each surface pixel of ``a`` to the nearest surface pixel of ``b``."""
    surf_a, surf_b = _surface(a.astype(bool)), _surface(b.astype(bool))
    # EDT of the complement gives, at every pixel, the distance to the nearest surface pixel of b
    to_b = ndimage.distance_transform_edt(~surf_b)
    return to_b[surf_a]


def hd95(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """95th-percentile symmetric Hausdorff distance between two binary masks; None if either is empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if not pred.any() or not gt.any():
        return None
    both = np.concatenate([surface_distances(pred, gt), surface_distances(gt, pred)])
    return float(np.percentile(both, 95))


class SegMetrics:
    """Accumulates confusion counts and per-image scores over a split, one ``update`` per image."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, *, compute_hd95: bool = True):
        if num_classes < 2:
            raise ValueError("need at least background and one foreground class")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.compute_hd95 = compute_hd95
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.image_dice: list[float] = []
        self.hd95_values: list[list[float]] = [[] for _ in range(num_classes)]
        self.hd95_excluded = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Add one image (H, W) class-index prediction and ground truth at original resolution; returns its
        confusion matrix."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        cm = confusion_matrix(pred, gt, self.num_classes)
        self.cm += cm
        self.image_dice.append(image_dice(cm))
        if self.compute_hd95:
            for c in range(1, self.num_classes):
                d = hd95(pred == c, gt == c)
                if d is None:
                    # empty on one side only: the distance is undefined and the error goes unscored, so count
                    # it; empty on both sides: nothing to measure, not counted
                    self.hd95_excluded += int(cm[c, :].sum() > 0 or cm[:, c].sum() > 0)
                else:
                    self.hd95_values[c].append(d)
        return cm

    def result(self) -> dict:
        out = _split_scores(self.cm, self.image_dice, self.class_names)
        if self.compute_hd95:
            fg = self.class_names[1:]
            hd_all = [d for per in self.hd95_values[1:] for d in per]
            out["hd95"] = float(np.mean(hd_all)) if hd_all else None
            out["hd95_per_class"] = {name: _mean(self.hd95_values[c]) for c, name in enumerate(fg, 1)}
            out["hd95_excluded"] = self.hd95_excluded
        return out


def micro_scores(confusion: np.ndarray) -> dict:
    """The micro scores of (K, K) or (N, K, K) confusions (summed over the images first): mDSC, mIoU, mean recall
    and mean precision over the foreground classes, and the foreground Dice per class. The one place a split's
    Dice is computed from confusions: bench rows, their statistics and the study's bootstrap all use it."""
    cm = np.asarray(confusion)
    if cm.ndim == 3:
        cm = cm.sum(axis=0)
    scores = per_class_scores(cm)
    return {"dice": _mean(scores["dice"][1:]), "iou": _mean(scores["iou"][1:]),
            "recall": _mean(scores["recall"][1:]), "precision": _mean(scores["precision"][1:]),
            "dice_per_class": scores["dice"][1:], "iou_per_class": scores["iou"][1:]}


def _split_scores(cm: np.ndarray, per_image_dice: Sequence[float], class_names: Sequence[str]) -> dict:
    micro = micro_scores(cm)
    fg = list(class_names)[1:]
    return {
        "n_images": len(per_image_dice),
        "dice": micro["dice"],
        "dice_per_class": dict(zip(fg, micro["dice_per_class"])),
        "dice_per_image": float(np.mean(per_image_dice)) if len(per_image_dice) else None,
        "iou": micro["iou"],
        "iou_per_class": dict(zip(fg, micro["iou_per_class"])),
        "precision_fg": micro["precision"],
        "recall_fg": micro["recall"],
    }


def confusion_scores(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """The overlap part of :meth:`SegMetrics.result` (everything but HD95) recomputed from per-image confusion
    matrices ``(N, K, K)`` (rows = ground truth): micro scores from their sum, ``dice_per_image`` from each.

    Any subset or resample of the images (a bootstrap over images, one patient's slices) is scored by indexing
    the first axis, without running a model again."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 3 or confusion.shape[1] != confusion.shape[2]:
        raise ValueError(f"expected per-image confusion matrices (N, K, K), got {confusion.shape}")
    k = confusion.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    return _split_scores(confusion.sum(axis=0, dtype=np.int64), [image_dice(cm) for cm in confusion], names)
