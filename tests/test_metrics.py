"""segdeploy.evaluation.metrics: Dice/IoU/HD95 checked against independent computations and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from segdeploy.evaluation.metrics import SegMetrics, confusion_matrix, hd95


def _blobby_masks(rng: np.random.Generator, shape: tuple[int, int], k: int) -> np.ndarray:
    """Class-index masks with contiguous regions (rectangles), so surfaces and overlaps are non-trivial."""
    mask = np.zeros(shape, np.uint8)
    for c in range(1, k):
        for _ in range(2):
            y0, x0 = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
            h, w = rng.integers(2, shape[0] // 2), rng.integers(2, shape[1] // 2)
            mask[y0:y0 + h, x0:x0 + w] = c
    return mask


def _perturb(rng: np.random.Generator, mask: np.ndarray, k: int) -> np.ndarray:
    pred = np.roll(mask, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    flip = rng.random(mask.shape) < 0.05
    pred[flip] = rng.integers(0, k, size=int(flip.sum()))
    return pred


def test_confusion_matrix_counts_gt_rows_pred_columns():
    gt = np.array([[0, 1], [1, 2]])
    pred = np.array([[0, 2], [1, 2]])
    cm = confusion_matrix(pred, gt, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_micro_dice_equals_direct_set_overlap_over_concatenated_split():
    rng = np.random.default_rng(0)
    k = 4
    shapes = [(40, 30), (25, 50), (33, 33), (48, 20), (16, 64)]
    gts = [_blobby_masks(rng, s, k) for s in shapes]
    preds = [_perturb(rng, g, k) for g in gts]
    m = SegMetrics(k, ["bg", "a", "b", "c"], compute_hd95=False)
    for p, g in zip(preds, gts):
        m.update(p, g)
    res = m.result()

    all_p = np.concatenate([p.ravel() for p in preds])
    all_g = np.concatenate([g.ravel() for g in gts])
    direct = {}
    for c, name in enumerate(["a", "b", "c"], 1):
        p, g = all_p == c, all_g == c
        direct[name] = 2 * np.logical_and(p, g).sum() / (p.sum() + g.sum())
    assert res["dice_per_class"] == pytest.approx(direct, rel=1e-12)
    assert res["dice"] == pytest.approx(np.mean(list(direct.values())), rel=1e-12)
    assert 0.3 < res["dice"] < 0.99  # the perturbation leaves a real, imperfect overlap
    assert res["n_images"] == len(shapes)


def test_dice_iou_relation_per_class():
    rng = np.random.default_rng(1)
    m = SegMetrics(3, compute_hd95=False)
    for _ in range(4):
        g = _blobby_masks(rng, (30, 30), 3)
        m.update(_perturb(rng, g, 3), g)
    res = m.result()
    for name, iou in res["iou_per_class"].items():
        assert res["dice_per_class"][name] == pytest.approx(2 * iou / (1 + iou), rel=1e-12)


def test_hand_computed_case_with_absent_class_and_per_image_rule():
    names = ["background", "a", "b", "c"]
    m = SegMetrics(4, names)
    # image 1: a: TP 1, FN 1 -> Dice 2/3; b: TP 2, FP 1 -> Dice 4/5; c absent everywhere
    m.update(np.array([[0, 1, 0], [2, 2, 2]]), np.array([[0, 1, 1], [0, 2, 2]]))
    res = m.result()
    assert res["dice_per_class"] == pytest.approx({"a": 2 / 3, "b": 4 / 5, "c": None})
    assert res["dice"] == pytest.approx((2 / 3 + 4 / 5) / 2)  # c is excluded, not counted as 0
    assert res["iou_per_class"]["a"] == pytest.approx(1 / 2)
    assert res["iou_per_class"]["b"] == pytest.approx(2 / 3)
    assert res["precision_fg"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["recall_fg"] == pytest.approx((1 / 2 + 1) / 2)

    # image 2: no foreground in either -> counts 1.0 per image, adds nothing to the micro counts
    m.update(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    # image 3: one pixel of a missed entirely -> a scores 0, b (absent in both) is skipped -> image Dice 0
    gt3 = np.zeros((2, 2), np.uint8)
    gt3[0, 0] = 1
    m.update(np.zeros((2, 2), np.uint8), gt3)
    res = m.result()
    image_scores = [(2 / 3 + 4 / 5) / 2, 1.0, 0.0]
    assert res["dice_per_image"] == pytest.approx(np.mean(image_scores))
    assert res["dice_per_class"]["a"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 2))  # TP 1, FN 2 over the split
    assert res["dice_per_class"]["c"] is None
    # HD95 pairs: image 1 a and b defined; image 3 a has GT but no prediction -> excluded and counted
    assert res["hd95_excluded"] == 1


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Border pixels: in the mask and with a 4-neighbour outside it (the image edge counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(mask & ~inner)


def _brute_hd95(a: np.ndarray, b: np.ndarray) -> float:
    d = cdist(_brute_surface(a), _brute_surface(b))
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


def test_hd95_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(20):
        shape = (int(rng.integers(12, 40)), int(rng.integers(12, 40)))
        a = _blobby_masks(rng, shape, 2) == 1
        b = (_perturb(rng, a.astype(np.uint8), 2) == 1) | (rng.random(shape) < 0.02)
        if not a.any() or not b.any():
            continue
        assert hd95(b, a) == pytest.approx(_brute_hd95(b, a), rel=1e-9)
        checked += 1
    assert checked >= 15


def test_hd95_hand_cases_and_empty_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2, 2] = True
    b[2, 5] = True
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, a) == 0.0
    assert hd95(a, np.zeros_like(a)) is None


def test_segmetrics_hd95_is_mean_over_images_and_classes():
    rng = np.random.default_rng(3)
    m = SegMetrics(3)
    expected = []
    for _ in range(3):
        g = _blobby_masks(rng, (24, 24), 3)
        p = _perturb(rng, g, 3)
        m.update(p, g)
        expected += [_brute_hd95(p == c, g == c) for c in (1, 2) if (p == c).any() and (g == c).any()]
    assert m.result()["hd95"] == pytest.approx(np.mean(expected), rel=1e-9)
