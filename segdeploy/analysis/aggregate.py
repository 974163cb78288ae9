"""Accuracy over a study's rows: learning-rate choice, per model x dataset Dice over folds with its bootstrap CI,
the specialized-vs-general comparison and ranks (the numeric work is in ``segdeploy.analysis.stats``).

Rules:

* **accuracy row of a cell** (one trained model scored on one dataset): its ``torch`` fp32 row (THE reference of
  ΔDice), else its first fp32 row that has a Dice; lower precisions are deployment variants, judged in
  ``segdeploy.analysis.cost``.
* **learning rate**: per model x training dataset, the lr with the highest mean *validation* Dice over folds
  (``val_dice``; the test split is never looked at); ties go to the smaller lr. With one lr there is nothing to
  choose; with several and no validation Dice the model is not reported (and says why), never chosen on test.
* **best specialized / best general** on a dataset: the model of that family with the highest mean test Dice
  over folds, as the study issue defines it. Picking the best of several on test makes both Dice values a little
  optimistic; the difference between the two picks is what the comparison tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from segdeploy.analysis import stats
from segdeploy.analysis.rows import StudyRow, load_per_image
from segdeploy.evaluation.selection import mean_by_lr, select_lr

SPECIALIZED, GENERAL = "specialized", "general"
ALL_DATASETS = "all datasets"
SIDECAR_TOLERANCE = 1e-6  # a sidecar whose micro Dice differs from its row's by more is stale


def fold_order(fold: str | None):
    text = "" if fold is None else str(fold)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def accuracy_row(cell_rows: Iterable[StudyRow]) -> StudyRow | None:
    usable = [r for r in cell_rows if r.ok and r.dice is not None and r.precision == "fp32"]
    return next((r for r in usable if r.backend == "torch"), usable[0] if usable else None)


@dataclass(frozen=True)
class LrChoice:
    model: str
    dataset: str
    lr: float | None
    val_by_lr: dict  # lr -> (mean validation Dice or None, folds with one)
    note: str = ""


def lr_choices(rows: Sequence[StudyRow]) -> dict[tuple[str, str], LrChoice]:
    """(model, training dataset) -> the lr reported; see the module docstring."""
    val: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.in_domain:
            folds = val[(r.model, r.train_dataset)][r.lr]
            if r.val_dice is not None or r.fold not in folds:
                folds[r.fold] = r.val_dice if r.val_dice is not None else folds.get(r.fold)
    choices = {}
    for (model, dataset), by_lr in val.items():
        summary = mean_by_lr(by_lr)
        if len(by_lr) == 1:
            lr = next(iter(by_lr))
            choices[(model, dataset)] = LrChoice(model, dataset, lr, summary, "one learning rate")
            continue
        lr = select_lr({lr: m for lr, (m, _) in summary.items()})
        if lr is None:
            choices[(model, dataset)] = LrChoice(model, dataset, None, summary,
                                                 "several learning rates and no validation Dice to choose one")
            continue
        choices[(model, dataset)] = LrChoice(model, dataset, lr, summary, "best mean validation Dice")
    return choices


def chosen(rows: Sequence[StudyRow], choices: dict[tuple[str, str], LrChoice]) -> list[StudyRow]:
    """The rows of the chosen lr (every target, every backend); rows of a model without a choice are dropped."""
    out = []
    for r in rows:
        choice = choices.get((r.model, r.train_dataset))
        if choice is None or (choice.lr == r.lr and (choice.lr is not None or len(choice.val_by_lr) == 1)):
            out.append(r)
    return out


@dataclass
class ModelAccuracy:
    dataset: str
    model: str
    family: str
    lr: float | None
    folds: list[str]
    fold_dice: list[float]
    dice: float | None
    dice_std: float | None
    ci: stats.Interval | None
    iou: float | None
    recall: float | None
    precision: float | None
    hd95: float | None
    dice_per_class: dict
    n_images: int | None
    val_dice: float | None
    confusions: stats.FoldConfusions | None = field(default=None, repr=False)
    note: str = ""
    refs: list = field(default_factory=list, repr=False)  # the accuracy row of each fold (StudyRow)


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _fold_confusions(refs: list[StudyRow]) -> tuple[stats.FoldConfusions | None, str]:
    """Per-image confusions of the cells' accuracy rows, checked against the rows' own Dice."""
    if any(r.per_image is None for r in refs):
        return None, "no per-image sidecar: no CI, no paired test"
    folds = []
    for r in refs:
        data = load_per_image(r)
        recomputed = stats.micro_scores(data.confusion)["dice"]
        if recomputed is None or abs(recomputed - r.dice) > SIDECAR_TOLERANCE:
            return None, (f"per-image sidecar of fold {r.fold} gives Dice {recomputed} but its row says "
                          f"{r.dice:.6f}: sidecar not used")
        folds.append((data.ids, data.confusion))
    return stats.FoldConfusions.from_folds(folds), ""


def model_accuracy(rows: Sequence[StudyRow], choices: dict, *, n_resamples: int = stats.N_RESAMPLES,
                   seed: int = 0) -> list[ModelAccuracy]:
    """Per model x dataset (in-domain, at the chosen lr): Dice mean ± std over folds, bootstrap CI, the other
    metrics averaged over folds."""
    cells: dict[tuple, list[StudyRow]] = defaultdict(list)
    for r in chosen(rows, choices):
        if r.in_domain:
            cells[(r.train_dataset, r.model, r.fold)].append(r)
    by_model: dict[tuple, list[StudyRow]] = defaultdict(list)
    for (dataset, model, _), cell_rows in cells.items():
        ref = accuracy_row(cell_rows)
        if ref is not None:
            by_model[(dataset, model)].append(ref)
    out = []
    for (dataset, model), refs in sorted(by_model.items()):
        refs.sort(key=lambda r: fold_order(r.fold))
        mean, std = stats.mean_std([r.dice for r in refs])
        confusions, note = _fold_confusions(refs)
        ci = stats.dice_ci(confusions, n_resamples=n_resamples, seed=seed) if confusions is not None else None
        classes = list(dict.fromkeys(c for r in refs for c in r.dice_per_class))
        out.append(ModelAccuracy(
            dataset=dataset, model=model, family=refs[0].family, lr=refs[0].lr, folds=[r.fold for r in refs],
            fold_dice=[r.dice for r in refs], dice=mean, dice_std=std, ci=ci, iou=_mean(r.iou for r in refs),
            recall=_mean(r.recall for r in refs), precision=_mean(r.precision_fg for r in refs),
            hd95=_mean(r.hd95 for r in refs),
            dice_per_class={c: _mean(r.dice_per_class.get(c) for r in refs) for c in classes},
            n_images=refs[0].n_images, val_dice=_mean(r.val_dice for r in refs), confusions=confusions,
            note=note, refs=refs))
    return out


@dataclass
class Comparison:
    dataset: str  # a dataset, or ALL_DATASETS
    general: ModelAccuracy | list[ModelAccuracy]
    specialized: ModelAccuracy | list[ModelAccuracy]
    general_dice: float
    specialized_dice: float
    delta: float  # general - specialized (positive: the general model is better)
    ci: stats.Interval | None
    test: stats.PairedTest | None
    n_dropped: int  # images scored by only one of the two
    note: str = ""
    s_img: float | None = None  # sd of the per-image paired Dice differences (pooled over datasets)
    s_fold: float | None = None  # sd over folds of the per-fold Δ (None with one fold)
    n_folds: int = 1
    datasets: list = field(default_factory=list)  # the datasets compared (one, or the learned ones pooled)

    @property
    def p(self) -> float | None:
        """The primary p: the bootstrap test dual to the CI."""
        return self.ci.p if self.ci is not None else None

    @property
    def min_detectable_delta(self) -> float | None:
        from segdeploy.analysis.verdict import min_detectable_delta

        n = self.test.n if self.test is not None else 0
        if self.s_img is None or not n:
            return None
        # pooled with equal weights: var = sum_d s_d^2 / n_d / D^2 ~ s^2 / (total images), so n is the total
        return min_detectable_delta(self.s_img, n, self.s_fold or 0.0, self.n_folds)

    @property
    def general_model(self) -> str:
        return self.general.model if isinstance(self.general, ModelAccuracy) else self.general[0].model

    @property
    def specialized_model(self) -> str:
        s = self.specialized
        return s.model if isinstance(s, ModelAccuracy) else s[0].model


def _best(accs: Iterable[ModelAccuracy], family: str) -> ModelAccuracy | None:
    pool = [a for a in accs if a.family == family and a.dice is not None]
    return max(pool, key=lambda a: (a.dice, a.model), default=None)


def _compare(dataset: str, generals: list[ModelAccuracy], specials: list[ModelAccuracy], *, n_resamples: int,
             seed: int, permutation: bool) -> Comparison:
    g_dice = float(np.mean([a.dice for a in generals]))
    s_dice = float(np.mean([a.dice for a in specials]))
    ci = test = s_img = None
    dropped, note = 0, ""
    if all(a.confusions is not None for a in (*generals, *specials)):
        pairs = [stats.paired(g.confusions, s.confusions) for g, s in zip(generals, specials)]
        dropped = sum(len(g.confusions.ids) + len(s.confusions.ids) - 2 * len(pg.ids)
                      for (g, s), (pg, _) in zip(zip(generals, specials), pairs))
        if all(len(pg.ids) for pg, _ in pairs):
            ci = stats.paired_delta_ci(pairs, n_resamples=n_resamples, seed=seed)
            a = np.concatenate([pg.image_dice() for pg, _ in pairs])
            b = np.concatenate([ps.image_dice() for _, ps in pairs])
            test = stats.paired_tests(a, b, permutation=permutation, seed=seed)
            s_img = float(np.std(a - b, ddof=1)) if a.size > 1 else None
        else:
            note = "the two models share no test image"
    else:
        note = "no per-image sidecars: no CI, no paired test"
    one = len(generals) == 1
    folds = min(len(a.fold_dice) for a in (*generals, *specials))
    s_fold = None
    if folds > 1 and all(len(g.fold_dice) == len(s.fold_dice) for g, s in zip(generals, specials)):
        per_fold = np.mean([np.subtract(g.fold_dice, s.fold_dice) for g, s in zip(generals, specials)], axis=0)
        s_fold = float(np.std(per_fold, ddof=1))
    return Comparison(dataset, generals[0] if one else generals, specials[0] if one else specials, g_dice,
                      s_dice, g_dice - s_dice, ci, test, dropped, note, s_img, s_fold, folds,
                      sorted({a.dataset for a in generals}))


def family_comparison(accs: Sequence[ModelAccuracy], *, n_resamples: int = stats.N_RESAMPLES, seed: int = 0,
                      permutation: bool = True, pooled: Sequence[str] | None = None) -> list[Comparison]:
    """Best general vs best specialized per dataset, then over the datasets in ``pooled`` (default: all; the
    caller passes the learned ones) when there are several: the models with a Dice on every one of them, best by
    their mean over them, the difference averaged over them with equal weight (a stratified bootstrap)."""
    kw = dict(n_resamples=n_resamples, seed=seed, permutation=permutation)
    by_dataset: dict[str, list[ModelAccuracy]] = defaultdict(list)
    for a in accs:
        by_dataset[a.dataset].append(a)
    out = []
    for dataset, group in by_dataset.items():
        g, s = _best(group, GENERAL), _best(group, SPECIALIZED)
        if g is not None and s is not None:
            out.append(_compare(dataset, [g], [s], **kw))
    datasets = sorted(by_dataset) if pooled is None else sorted(set(pooled) & set(by_dataset))
    if len(datasets) > 1:
        complete: dict[str, list[ModelAccuracy]] = defaultdict(list)
        for a in accs:
            if a.dataset in datasets:
                complete[a.model].append(a)
        complete = {m: sorted(v, key=lambda a: a.dataset) for m, v in complete.items()
                    if sorted(a.dataset for a in v if a.dice is not None) == datasets}
        best = {}
        for family in (GENERAL, SPECIALIZED):
            pool = {m: v for m, v in complete.items() if v[0].family == family}
            if pool:
                best[family] = max(pool.values(), key=lambda v: (np.mean([a.dice for a in v]), v[0].model))
        if len(best) == 2:
            out.append(_compare(ALL_DATASETS, best[GENERAL], best[SPECIALIZED], **kw))
    return out


def rank_table(accs: Sequence[ModelAccuracy], datasets: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """model -> {dataset: rank, ALL_DATASETS: mean rank over the datasets it has} (1 = best mean Dice), over
    ``datasets`` (default: all; the caller passes the learned ones: ranks of noise are noise)."""
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for dataset in sorted({a.dataset for a in accs} if datasets is None else set(datasets)):
        scores = {a.model: a.dice for a in accs if a.dataset == dataset and a.dice is not None}
        for model, rank in stats.ranks(scores).items():
            table[model][dataset] = rank
    for model, per in table.items():
        per[ALL_DATASETS] = float(np.mean(list(per.values())))
    return dict(table)
