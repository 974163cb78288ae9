"""Statistics of the study, as pure functions of arrays (numpy, scipy); no rows, no files.

Definitions (they change the numbers, so they are stated once here):

* **micro scores**: per-image confusion matrices (rows = ground truth) are summed over the images, then Dice, IoU,
  recall and precision are computed per class (``segdeploy.evaluation.metrics.per_class_scores``) and averaged over the
  foreground classes present (the reference study's mDSC, mIoU, mean recall, mean precision).
* **per-image Dice**: ``segdeploy.evaluation.metrics.image_dice`` (an image with no foreground anywhere counts 1.0).
* **folds**: a model's Dice is the mean over folds of each fold's micro Dice on its test images; the spread is
  the sample standard deviation (ddof=1; None with one fold).
* **bootstrap over test images**: the unit resampled is an image id. The ids are the union over folds (with
  segdeploy's fixed test split every fold tests the same images); a drawn id contributes its confusion to every
  fold that tested it, each fold's micro Dice is recomputed from the drawn images, then averaged over folds. With
  several folds the folds are drawn first (with replacement), then the images (a two-stage bootstrap), so the
  fold-to-fold spread of training enters the interval as well as the choice of test images. Each draw becomes
  image weights (how often each id was drawn) and ``weights @ confusions``, so no resampled copy is built.
* **interval and test are one statistic**: the percentile interval and the two-sided bootstrap p-value come from
  the same draws of the same quantity, the interval being the inversion of the test (``percentile_interval``),
  so the 95% CI excludes 0 exactly when p < 0.05.
* **paired comparison** (the primary test): two models are paired by image id (ids scored by only one are dropped
  and counted) and, with as many folds, by fold; the same draw is applied to both, and the statistic is the
  difference of their fold-mean micro Dice. Over several datasets the draw is stratified by dataset (each
  resampled within itself) and the differences are averaged with equal weight per dataset.
* **secondary tests** on per-image Dice (each image's Dice averaged over the folds that tested it), labelled as
  such wherever shown: the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided) and a sign-flip
  permutation test of the mean difference (``scipy.stats.permutation_test``). They test another quantity (the
  mean per-image Dice, not the micro Dice) and may disagree with the primary p.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from segdeploy.evaluation.metrics import image_dice, micro_scores  # noqa: F401 (stats.micro_scores)

N_RESAMPLES = 2000
CONFIDENCE = 0.95


def per_image_dice(confusions: np.ndarray) -> np.ndarray:
    """(N,) per-image mean foreground Dice from (N, K, K) confusions."""
    return np.array([image_dice(cm) for cm in np.asarray(confusions)], dtype=np.float64)


def weighted_micro_dice(weights: np.ndarray, confusions: np.ndarray) -> np.ndarray:
    """Micro mDSC for each row of image weights: (B, N) weights, (N, K, K) confusions -> (B,).
    The vectorised twin of ``micro_scores(...)["dice"]`` (NaN where no foreground class has a Dice)."""
    n, k, _ = confusions.shape
    summed = (np.asarray(weights, np.float64) @ confusions.reshape(n, k * k).astype(np.float64)).reshape(-1, k, k)
    tp = np.diagonal(summed, axis1=1, axis2=2)
    denominator = summed.sum(axis=2) + summed.sum(axis=1)  # (tp + fn) + (tp + fp)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denominator > 0, 2 * tp / denominator, np.nan)[:, 1:]
    out = np.full(dice.shape[0], np.nan)
    defined = ~np.isnan(dice).all(axis=1)
    out[defined] = np.nanmean(dice[defined], axis=1)
    return out


@dataclass(frozen=True)
class FoldConfusions:
    """A model's per-image confusions on one id axis: ``confusion[f, i]`` is image ``ids[i]`` in fold ``f``
    (zeros where fold ``f`` did not test it; ``tested`` says which)."""

    ids: np.ndarray  # (N,) str
    confusion: np.ndarray  # (F, N, K, K)
    tested: np.ndarray  # (F, N) bool

    @classmethod
    def from_folds(cls, folds: Sequence[tuple[np.ndarray, np.ndarray]], ids: Sequence[str] | None = None):
        """From (ids, (N_f, K, K)) per fold, on the union of the folds' ids (or on ``ids``, dropping others)."""
        if not folds:
            raise ValueError("no folds")
        axis = np.array(sorted(set().union(*(map(str, f_ids) for f_ids, _ in folds))) if ids is None else ids,
                        dtype=str)
        position = {i: n for n, i in enumerate(axis.tolist())}
        k = folds[0][1].shape[-1]
        confusion = np.zeros((len(folds), len(axis), k, k), np.int64)
        tested = np.zeros((len(folds), len(axis)), bool)
        for f, (f_ids, cms) in enumerate(folds):
            for image_id, cm in zip(map(str, f_ids), cms):
                if image_id in position:
                    confusion[f, position[image_id]] = cm
                    tested[f, position[image_id]] = True
        return cls(axis, confusion, tested)

    def restrict(self, ids: Sequence[str]) -> FoldConfusions:
        position = {i: n for n, i in enumerate(self.ids.tolist())}
        take = np.array([position[i] for i in ids], dtype=int)
        return FoldConfusions(np.asarray(ids, dtype=str), self.confusion[:, take], self.tested[:, take])

    @property
    def n_folds(self) -> int:
        return int(self.confusion.shape[0])

    def fold_dice(self, weights: np.ndarray, fold_weights: np.ndarray | None = None) -> np.ndarray:
        """(B,) fold-mean micro mDSC for (B, N) image weights; ``fold_weights`` (B, F) counts how often each fold
        was drawn (None: every fold once)."""
        per_fold = np.stack([weighted_micro_dice(weights, c) for c in self.confusion]).T  # (B, F)
        fw = np.ones_like(per_fold) if fold_weights is None else np.asarray(fold_weights, np.float64)
        fw = np.where(np.isnan(per_fold), 0.0, fw)  # a draw may leave a fold without foreground
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nansum(per_fold * fw, axis=1) / fw.sum(axis=1)

    def image_dice(self) -> np.ndarray:
        """(N,) each image's Dice averaged over the folds that tested it."""
        per_fold = np.array([per_image_dice(c) for c in self.confusion])  # (F, N)
        return (per_fold * self.tested).sum(axis=0) / np.maximum(self.tested.sum(axis=0), 1)


def _weights(indices: np.ndarray, n: int) -> np.ndarray:
    """(..., m) drawn indices -> (prod(...), n) counts of each index per draw."""
    flat = np.asarray(indices).astype(np.int64).reshape(-1, np.shape(indices)[-1])
    rows = np.repeat(np.arange(flat.shape[0]), flat.shape[1])
    return np.bincount(rows * n + flat.ravel(), minlength=flat.shape[0] * n).reshape(flat.shape[0], n)


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval; for a difference also its dual p-value (``p``) and the bootstrap standard error."""

    low: float | None
    high: float | None
    method: str
    p: float | None = None  # two-sided bootstrap p of "the quantity is 0", the dual of [low, high]
    se: float | None = None  # standard deviation of the bootstrap distribution
    n_resamples: int = 0  # draws with a defined value

    def covers(self, value: float) -> bool:
        return self.low is not None and self.low <= value <= self.high

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and not self.covers(0.0)


Statistic = Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # (B, N) image weights, (B, F) fold weights


def bootstrap_distribution(strata: Sequence[Statistic], sizes: Sequence[int], folds: Sequence[int], *,
                           n_resamples: int = N_RESAMPLES, seed: int = 0, batch: int = 200) -> np.ndarray:
    """(B,) draws of ``mean_s strata[s](image weights_s, fold weights_s)``, NaN draws dropped. Each stratum
    (dataset) is resampled on its own: with several folds, first its folds with replacement, then its test
    images (a two-stage bootstrap, so the fold-to-fold spread of training enters the interval); with one fold,
    its images only."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_resamples, batch):
        b = min(batch, n_resamples - start)
        values = []
        for fn, n, f in zip(strata, sizes, folds):
            w = _weights(rng.integers(0, n, (b, n)), n)
            fw = _weights(rng.integers(0, f, (b, f)), f) if f > 1 else None
            values.append(fn(w, fw))
        out.append(np.mean(values, axis=0))
    draws = np.concatenate(out)
    return draws[np.isfinite(draws)]


def percentile_interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(low, high, p) from bootstrap draws, built so that the interval excludes 0 exactly when p < 1 - confidence.

    p = min(1, 2 min((#{d <= 0} + 1) / (B + 1), (#{d >= 0} + 1) / (B + 1))), the percentile bootstrap's
    two-sided p-value with the +1 correction (Davison & Hinkley 1997, eq. 4.11). The interval is its inversion:
    every d0 whose p(d0) >= alpha, i.e. the order statistics [d_(m), d_(B-m+1)] with m = ceil(alpha/2 (B+1)) - 1
    (1-based; with too few draws for that, m < 1, every d0 passes and the interval is unbounded). So "the CI excludes
    0" and "p < alpha" are the same statement."""
    d = np.sort(np.asarray(draws, np.float64))
    b = d.size
    alpha = 1 - confidence
    m = int(np.ceil(alpha / 2 * (b + 1) - 1e-9)) - 1
    low, high = (d[m - 1], d[b - m]) if m >= 1 else (-np.inf, np.inf)
    below, above = int(np.sum(d <= 0)), int(np.sum(d >= 0))
    p = min(1.0, 2 * min(below + 1, above + 1) / (b + 1))
    return float(low), float(high), p


def bootstrap_ci(strata: Sequence[Statistic], sizes: Sequence[int], folds: Sequence[int] | None = None, *,
                 n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Percentile CI (and its dual p, see ``percentile_interval``) of the stratified statistic."""
    folds = list(folds) if folds is not None else [1] * len(sizes)
    if min(sizes) < 2:
        return Interval(None, None, "too few images")
    draws = bootstrap_distribution(strata, sizes, folds, n_resamples=n_resamples, seed=seed)
    if draws.size < 0.9 * n_resamples:  # most draws undefined: no interval worth stating
        return Interval(None, None, "undefined")
    low, high, p = percentile_interval(draws, confidence)
    if not (np.isfinite(low) and np.isfinite(high)):
        return Interval(None, None, "too few resamples")
    how = "percentile, folds then images" if max(folds) > 1 else "percentile, images"
    return Interval(low, high, how, p, float(np.std(draws, ddof=1)), int(draws.size))


def dice_ci(model: FoldConfusions, **kw) -> Interval:
    """95% bootstrap CI of a model's fold-mean micro mDSC (folds, then test images)."""
    return bootstrap_ci([model.fold_dice], [len(model.ids)], [model.n_folds], **kw)


def paired(a: FoldConfusions, b: FoldConfusions) -> tuple[FoldConfusions, FoldConfusions]:
    """Both models restricted to the ids both scored, in one order."""
    common = sorted(set(a.ids.tolist()) & set(b.ids.tolist()))
    return a.restrict(common), b.restrict(common)


def _paired_statistic(a: FoldConfusions, b: FoldConfusions) -> tuple[Statistic, int]:
    """Dice(a) - Dice(b) on the same drawn images; the same drawn folds when both have as many folds (fold k of
    both used the same split), else each model's fold mean over all its folds."""
    if a.n_folds == b.n_folds:
        return (lambda w, fw: a.fold_dice(w, fw) - b.fold_dice(w, fw)), a.n_folds
    return (lambda w, fw: a.fold_dice(w) - b.fold_dice(w)), 1


def paired_delta_ci(pairs: Sequence[tuple[FoldConfusions, FoldConfusions]], **kw) -> Interval:
    """CI and dual p of the mean over strata (datasets, each weighted equally) of Dice(a) - Dice(b), each pair
    already on common ids (``paired``); each dataset is resampled within itself."""
    made = [_paired_statistic(a, b) for a, b in pairs]
    return bootstrap_ci([fn for fn, _ in made], [len(a.ids) for a, _ in pairs], [f for _, f in made], **kw)


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean_difference: float | None
    p_wilcoxon: float | None
    p_permutation: float | None


def paired_tests(a: np.ndarray, b: np.ndarray, *, permutation: bool = True, n_resamples: int = 9999,
                 seed: int = 0) -> PairedTest:
    """Two-sided paired tests of per-image scores ``a`` vs ``b`` (same images, same order)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    n = a.size
    if n == 0:
        return PairedTest(0, None, None, None)
    diff = a - b
    p_w = None
    if np.any(diff != 0):  # all-zero differences: the signed-rank statistic is undefined
        p_w = float(sps.wilcoxon(a, b).pvalue)
    p_p = None
    if permutation and n >= 2:
        res = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                   permutation_type="samples", n_resamples=n_resamples,
                                   rng=np.random.default_rng(seed))
        p_p = float(res.pvalue)
    return PairedTest(n, float(diff.mean()), p_w, p_p)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None for fewer than two values)."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return None, None
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 = highest score; ties share the average rank (``scipy.stats.rankdata``)."""
    names = list(scores)
    r = sps.rankdata([-scores[n] for n in names], method="average")
    return {n: float(v) for n, v in zip(names, r)}


def pareto_front(cost: Sequence[float], quality: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point beats: lower or equal cost with higher or equal quality and one
    of them strictly."""
    c, q = np.asarray(cost, np.float64), np.asarray(quality, np.float64)
    better_or_equal = (c[None, :] <= c[:, None]) & (q[None, :] >= q[:, None])
    strictly = (c[None, :] < c[:, None]) | (q[None, :] > q[:, None])
    return ~(better_or_equal & strictly).any(axis=1)
