"""The study's answer, verdict first: in words (``answer_sentences``, the report's first section) and as data
(``study_answer`` -> ``OUT/answer.json``, schema ``ANSWER_SCHEMA``), from one ``StudySummary``.

Verdict per dataset, in this order of precedence:

* ``not learned``: no model beats the best trivial predictor (``segdeploy.analysis.verdict``); no winner is named, the
  dataset is left out of the pooled verdict and the ranks;
* ``general`` / ``specialized``: the 95% CI of Δ = best general − best specialized (paired bootstrap of micro Dice
  over test images, folds then images) excludes 0, equivalently its dual p < 0.05; the sign names the family;
* ``no detectable difference``: otherwise (also without a CI: then ``test`` says why).

The pooled verdict covers the learned datasets only, each weighted equally (a stratified bootstrap).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdeploy.analysis.aggregate import ALL_DATASETS, Comparison
from segdeploy.analysis.fronts import Tradeoff, tradeoff_text
from segdeploy.analysis.published import LABEL
from segdeploy.analysis.summary import Answer, StudySummary, fmt_p

ANSWER_SCHEMA = "segdeploy.answer/1"
GENERAL, SPECIALIZED, NO_DIFFERENCE, NOT_LEARNED = ("general", "specialized", "no detectable difference",
                                                    "not learned")
NOT_MEASURED = "not measured"  # cost-only: Dice published elsewhere, no test possible
PRIMARY_TEST = "paired percentile bootstrap of Δ micro Dice over test images (folds, then images); p is the CI's dual"


def verdict(c: Comparison | None, learned: bool | None) -> str:
    if learned is False:
        return NOT_LEARNED
    if c is None or c.ci is None or c.ci.low is None or not c.ci.excludes_zero:
        return NO_DIFFERENCE
    return GENERAL if c.delta > 0 else SPECIALIZED


def _pm(value: float, std: float | None) -> str:
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _tradeoffs(summary: StudySummary, dataset: str) -> list[Tradeoff]:
    return [t for t in summary.tradeoffs if t.dataset == dataset]


def _marks(summary: StudySummary, datasets: list[str], models: list[str]) -> str:
    rising = [f"{m} on {d} (fold{'s' * (len(f) > 1)} {', '.join(map(str, f))})" for d in datasets for m in models
              if (f := summary.under_trained(d, m))]
    return f" Under-trained (validation Dice still rising at the end): {'; '.join(rising)}." if rising else ""


def _numbers(c: Comparison) -> str:
    g, s = c.general, c.specialized
    if c.dataset == ALL_DATASETS:
        head = (f"best general {c.general_model} mean Dice {c.general_dice:.3f} vs best specialized "
                f"{c.specialized_model} {c.specialized_dice:.3f}")
    else:
        head = (f"best general {c.general_model} Dice {_pm(g.dice, g.dice_std)} vs best specialized "
                f"{c.specialized_model} {_pm(s.dice, s.dice_std)}")
    text = f"{head}, Δ {c.delta:+.3f}"
    if c.ci is not None and c.ci.low is not None:
        n = c.test.n if c.test is not None else "?"
        floor = 2 / (c.ci.n_resamples + 1)  # every resample on one side: p is at most this, not equal to it
        p = f"p ≤ {floor:.3f}" if c.ci.p <= floor + 1e-12 and floor >= 0.001 else fmt_p(c.ci.p)
        text += (f" [95% CI {c.ci.low:+.3f}, {c.ci.high:+.3f}], {p} (paired bootstrap of micro Dice, "
                 f"{n} images, {c.n_folds} fold{'s' * (c.n_folds != 1)})")
        if c.test is not None and c.test.p_wilcoxon is not None:
            text += f"; secondary: Wilcoxon on per-image Dice {fmt_p(c.test.p_wilcoxon)}"
    elif c.note:
        text += f" ({c.note})"
    mde = c.min_detectable_delta
    if mde is not None:
        text += f"; smallest Δ this study could detect (80% power): {mde:.3f}"
    return text


def _sentence(summary: StudySummary, c: Comparison) -> Answer:
    if c.dataset == ALL_DATASETS:
        v = verdict(c, True)
        text = f"Over the {len(c.datasets)} learned datasets ({', '.join(c.datasets)}), each weighted equally: {v} — "
        text += _numbers(c) + "."
        text += _marks(summary, c.datasets, [c.general_model, c.specialized_model])
        return Answer(c.dataset, text, c, v)
    judged = summary.learned.get(c.dataset)
    v = verdict(c, judged.learned if judged else None)
    if v == NOT_LEARNED:
        text = (f"{c.dataset}: not learned — {judged.why}. No winner is named; left out of the pooled verdict and "
                f"the ranks (best general {c.general_model} {c.general_dice:.3f}, best specialized "
                f"{c.specialized_model} {c.specialized_dice:.3f}).")
    else:
        text = f"{c.dataset}: {v} — " + _numbers(c)
        if judged is not None and judged.learned is None:
            text += f" ({judged.why})"
        trade = [tradeoff_text(t) for t in _tradeoffs(summary, c.dataset)]
        text += "".join(f"; {t}" for t in trade if t) + "."
    text += _marks(summary, [c.dataset], [c.general_model, c.specialized_model])
    return Answer(c.dataset, text, c, v)


def _published_sentences(summary: StudySummary, measured: set[str]) -> list[Answer]:
    out = []
    for t in summary.tradeoffs:
        points = [p for pts in t.fronts.values() for p in pts]
        if t.dataset in measured or not any(p.source for p in points):
            continue
        best = {f: max(pts, key=lambda p: p.dice) for f, pts in t.fronts.items()}
        text = f"{t.dataset} ({LABEL}; no CI, no test)"
        if len(best) == 2:
            g, s = best[GENERAL], best[SPECIALIZED]
            text += (f": best general {g.config.model} Dice {g.dice:.3f}{' (approx.)' if g.approx else ''} vs best "
                     f"specialized {s.config.model} {s.dice:.3f}{' (approx.)' if s.approx else ''}, Δ "
                     f"{g.dice - s.dice:+.3f}")
        trade = tradeoff_text(t)
        sources = "; ".join(sorted({p.source for p in points if p.source}))
        out.append(Answer(t.dataset, f"{text}; {trade} (Dice source: {sources}).", None, None))
    return out


def answer_sentences(summary: StudySummary) -> list[Answer]:
    """One sentence per dataset, verdict first, then the pooled one; for a cost-only study the trade-off between
    the families' fronts on published Dice."""
    out = [_sentence(summary, c) for c in summary.comparisons]
    compared = {c.dataset for c in summary.comparisons}
    out += [Answer(d, f"{d}: not learned — {v.why}. No winner is named; left out of the ranks.", None, NOT_LEARNED)
            for d, v in summary.learned.items() if v.learned is False and d not in compared]
    return out + _published_sentences(summary, compared | set(summary.learned))


# answer.json ---------------------------------------------------------------------------------------------------


@dataclass
class DatasetAnswer:
    dataset: str
    verdict: str
    delta: float | None
    ci: list[float | None] | None
    p: float | None
    test: str
    n_images: int | None
    folds: int | None
    learned: bool | None
    why: str
    min_detectable_delta: float | None
    fronts: dict = field(default_factory=dict)  # family -> [config], per device (a config names its device)
    claims: list[dict] = field(default_factory=list)  # {"text", "faster": config, "slower": config}
    general_model: str | None = None
    specialized_model: str | None = None
    general_dice: float | None = None
    specialized_dice: float | None = None
    trivial_baseline: dict | None = None  # {"predictor", "dice"}
    under_trained: dict = field(default_factory=dict)  # model -> [folds]
    p_wilcoxon: float | None = None  # secondary, on per-image Dice
    sentence: str = ""


@dataclass
class PooledAnswer(DatasetAnswer):
    datasets: list[str] = field(default_factory=list)


@dataclass
class StudyAnswer:
    schema: str
    datasets: list[DatasetAnswer]
    pooled: PooledAnswer | None
    not_learned: list[str]
    primary_test: str = PRIMARY_TEST

    def to_json(self) -> dict:
        return asdict(self)


def _fronts(tradeoffs: list[Tradeoff]) -> tuple[dict, list[dict]]:
    fronts: dict[str, list[dict]] = {GENERAL: [], SPECIALIZED: []}
    claims = []
    for t in tradeoffs:
        for family, points in t.fronts.items():
            fronts.setdefault(family, []).extend(
                {**p.config.to_json(), "dice": p.dice, "p50_ms": p.p50_ms, "noisy": p.noisy,
                 **({"dice_source": p.source, "approx": p.approx} if p.source else {})} for p in points)
        claims += [{"text": c.text, "faster": c.faster.to_json(), "slower": c.slower.to_json()} for c in t.claims]
    return fronts, claims


def _record(summary: StudySummary, c: Comparison, a: Answer, cls=DatasetAnswer, **extra) -> DatasetAnswer:
    judged = summary.learned.get(c.dataset)
    learned = True if c.dataset == ALL_DATASETS else (judged.learned if judged else None)
    ok = a.verdict != NOT_LEARNED
    fronts, claims = _fronts(_tradeoffs(summary, c.dataset)) if ok else ({GENERAL: [], SPECIALIZED: []}, [])
    ci = [c.ci.low, c.ci.high] if c.ci is not None and c.ci.low is not None else None
    models = [c.general_model, c.specialized_model]
    datasets = c.datasets or [c.dataset]
    return cls(
        dataset=c.dataset, verdict=a.verdict, delta=c.delta, ci=ci, p=c.p,
        test=PRIMARY_TEST if ci else (c.note or "no CI"), n_images=c.test.n if c.test else None,
        folds=c.n_folds, learned=learned, why=judged.why if judged else ("learned datasets only" if learned else ""),
        min_detectable_delta=c.min_detectable_delta if ok else None, fronts=fronts, claims=claims,
        general_model=c.general_model, specialized_model=c.specialized_model, general_dice=c.general_dice,
        specialized_dice=c.specialized_dice,
        trivial_baseline=({"predictor": judged.baseline[0], "dice": judged.baseline[1]}
                          if judged and judged.baseline else None),
        under_trained={m: f for d in datasets for m in models if (f := summary.under_trained(d, m))},
        p_wilcoxon=c.test.p_wilcoxon if c.test else None, sentence=a.text, **extra)


def study_answer(summary: StudySummary) -> StudyAnswer:
    sentences = answer_sentences(summary)
    by_comparison = {id(a.comparison): a for a in sentences if a.comparison is not None}
    datasets, pooled = [], None
    for c in summary.comparisons:
        a = by_comparison[id(c)]
        if c.dataset == ALL_DATASETS:
            pooled = _record(summary, c, a, PooledAnswer, datasets=list(c.datasets))
        else:
            datasets.append(_record(summary, c, a))
    for a in sentences:
        if a.comparison is not None:
            continue
        if a.verdict == NOT_LEARNED:  # one family only, and it learned nothing
            datasets.append(DatasetAnswer(a.dataset, NOT_LEARNED, None, None, None, "none (one family)", None, None,
                                          False, summary.learned[a.dataset].why, None, sentence=a.text))
        else:  # cost-only studies: the trade-off on published Dice, no verdict
            fronts, claims = _fronts(_tradeoffs(summary, a.dataset))
            datasets.append(DatasetAnswer(a.dataset, NOT_MEASURED, None, None, None, f"none ({LABEL})", None, None,
                                          None, "no Dice measured here", None, fronts, claims, sentence=a.text))
    not_learned = sorted(d for d, v in summary.learned.items() if v.learned is False)
    return StudyAnswer(ANSWER_SCHEMA, datasets, pooled, not_learned)


def write_answer(path: str | Path, summary: StudySummary) -> Path:
    from segdeploy.fileio import atomic_write_json

    return atomic_write_json(path, study_answer(summary).to_json())


def answers(summary: StudySummary) -> list[Answer]:
    """The verdict per dataset, then pooled, in words."""
    return answer_sentences(summary)
