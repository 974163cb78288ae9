"""Whether a dataset's models learned anything, whether a cell's training converged, and the power of a comparison.

* **trivial baselines** (recorded by bench in each scored row, ``trivial_dice``; ``segdeploy.evaluation.trivial``):
  all background, all foreground, and the training split's per-pixel prior as a fixed mask, scored on the same test
  images as the model. A dataset's baseline is the best of them, averaged over the folds (the prior differs by
  fold).
* **a model learned** when the lower end of its 95% bootstrap CI of test Dice lies above the baseline (the margin
  beyond its CI); without a CI, when its Dice exceeds the baseline by more than ``MARGIN``. **A dataset is "not
  learned"** when none of its models did: it has no winner, and it is left out of the pooled verdict and the ranks.
  Without a recorded baseline (rows from an older segdeploy) the question is open (``learned = None``) and the
  dataset is treated as learned, saying so.
* **under-trained cell**: training was not stopped early and its validation Dice was still rising at the end: the
  mean over the last ``k`` epochs exceeds the mean over the ``k`` before by more than ``RISE`` (k = max(2,
  epochs // 5)). Such a cell's numbers are marked wherever they appear.
* **minimum detectable Δ** (80% power, two-sided α 0.05), normal approximation for a paired difference:
  ``MDE = (z_{1-α/2} + z_{power}) * sqrt(s_img² / n + s_fold² / F)``, with ``s_img`` the standard deviation of the
  per-image paired Dice differences (each image's Dice averaged over folds), ``n`` the paired test images, ``s_fold``
  the standard deviation of the per-fold Δ over ``F`` folds (0 with one fold: the training spread is then unknown,
  not absent). ``images_needed`` solves the same formula for ``n``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

MARGIN = 0.01  # Dice a model must beat the trivial baseline by when it has no CI
RISE = 0.005  # validation-Dice rise over the last epochs that counts as "still rising"
ALPHA, POWER = 0.05, 0.80
TRIVIAL_NAMES = {"all_bg": "all background", "all_fg": "all foreground", "prior": "the training prior mask"}


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def min_detectable_delta(s_img: float, n: int, s_fold: float = 0.0, folds: int = 1, *, alpha: float = ALPHA,
                         power: float = POWER) -> float | None:
    if n < 2 or s_img is None:
        return None
    return z_sum(alpha, power) * math.sqrt(s_img ** 2 / n + (s_fold or 0.0) ** 2 / max(folds, 1))


def images_needed(delta: float, s_img: float, s_fold: float = 0.0, folds: int = 1, *, alpha: float = ALPHA,
                  power: float = POWER) -> int | None:
    """Test images for ``delta`` to be detected with ``folds`` folds; None when the fold spread alone exceeds what
    ``delta`` allows (more folds are needed, not more images)."""
    room = (delta / z_sum(alpha, power)) ** 2 - (s_fold or 0.0) ** 2 / max(folds, 1)
    if delta <= 0 or room <= 0:
        return None
    return max(2, math.ceil(s_img ** 2 / room - 1e-9))


def under_trained(curve: dict | None) -> bool | None:
    """True when validation Dice was still rising at the end (see the module docstring); None without a curve."""
    if not curve:
        return None
    val = [v for v in curve.get("val_dice") or [] if v is not None]
    if len(val) < 4:
        return None
    if curve.get("stopped_early"):
        return False
    k = max(2, len(val) // 5)
    return float(np.mean(val[-k:]) - np.mean(val[-2 * k:-k])) > RISE


def best_trivial(rows) -> tuple[str, float] | None:
    """(name, fold-mean Dice) of the best trivial predictor in the rows (accuracy rows of one dataset's folds)."""
    per: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        for name, value in (r.trivial_dice or {}).items():
            if value is not None:
                per[name].append(value)
    if not per:
        return None
    name = max(per, key=lambda n: np.mean(per[n]))
    return name, float(np.mean(per[name]))


@dataclass
class Learned:
    dataset: str
    learned: bool | None
    why: str
    baseline: tuple[str, float] | None = None
    beats: dict = field(default_factory=dict)  # model -> bool (beats the baseline)
    under_trained: dict = field(default_factory=dict)  # model -> [folds whose curve was still rising]


def judge(dataset: str, accs: Sequence, refs: dict) -> Learned:
    """``accs``: the dataset's ``ModelAccuracy``; ``refs``: model -> its accuracy rows (one per fold)."""
    baseline = best_trivial([r for rows in refs.values() for r in rows])
    rising = {m: [r.fold for r in rows if under_trained(r.curve)] for m, rows in refs.items()}
    rising = {m: f for m, f in rising.items() if f}
    scored = [a for a in accs if a.dice is not None]
    if not scored:
        return Learned(dataset, None, "no model has a test Dice", baseline, {}, rising)
    best = max(scored, key=lambda a: a.dice)
    if baseline is None:
        return Learned(dataset, None, "no trivial baseline recorded in the rows (bench of an older segdeploy): "
                                      "whether models learned is not tested", None, {}, rising)
    name, value = baseline

    def beats(a) -> bool:
        if a.ci is not None and a.ci.low is not None:
            return a.ci.low > value
        return a.dice > value + MARGIN

    verdicts = {a.model: beats(a) for a in scored}
    what = f"{TRIVIAL_NAMES.get(name, name)} scores {value:.3f}"
    ci = (f" [95% CI {best.ci.low:.3f}, {best.ci.high:.3f}]" if best.ci is not None and best.ci.low is not None
          else f" (no CI: margin {MARGIN})")
    if any(verdicts.values()):
        n = sum(verdicts.values())
        why = f"{n} of {len(verdicts)} models beat the best trivial predictor ({what}) beyond their CI"
        return Learned(dataset, True, why, baseline, verdicts, rising)
    why = f"no model beats the best trivial predictor: {what}, best model {best.model} {best.dice:.3f}{ci}"
    if rising:
        why += f"; validation Dice still rising at the end for {len(rising)} of {len(refs)} models (under-trained)"
    return Learned(dataset, False, why, baseline, verdicts, rising)
