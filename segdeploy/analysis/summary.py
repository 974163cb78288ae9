"""Everything the report and ``study summarize`` show, computed once: ``summarize(rows) -> StudySummary`` (accuracy,
verdicts of learning, comparisons, ranks over learned datasets, costs and the families' fronts); the answer
sentences are built from it in ``segdeploy.analysis.answer`` (``answers``), ``limitations`` here."""

from __future__ import annotations


from collections.abc import Sequence
from dataclasses import dataclass, field

from segdeploy.analysis import stats
from segdeploy.analysis.aggregate import (Comparison, LrChoice, ModelAccuracy, family_comparison, lr_choices,
                                          model_accuracy, rank_table)
from segdeploy.analysis.cost import CostEntry, ShiftEntry, deployment_cost, shift_table
from segdeploy.analysis.fronts import Config, Point, Tradeoff, plain_ops_of, tradeoff
from segdeploy.analysis.published import LABEL, PublishedDice, canonical_dataset, join_costs
from segdeploy.analysis.rows import StudyRow
from segdeploy.analysis.verdict import Learned, judge


@dataclass
class StudySummary:
    rows: list[StudyRow]
    choices: dict[tuple[str, str], LrChoice]
    accuracy: list[ModelAccuracy]
    comparisons: list[Comparison]
    ranks: dict[str, dict[str, float]]
    costs: list[CostEntry]
    shift: list[ShiftEntry]
    published: list[PublishedDice] = field(default_factory=list)
    published_costs: list[tuple[CostEntry, PublishedDice]] = field(default_factory=list)
    learned: dict[str, Learned] = field(default_factory=dict)  # dataset -> whether its models learned
    tradeoffs: list[Tradeoff] = field(default_factory=list)  # per dataset x device: the families' fronts

    @property
    def learned_datasets(self) -> list[str]:
        """Datasets whose models learned (or where it could not be tested): those pooled and ranked."""
        return sorted(d for d, v in self.learned.items() if v.learned is not False)

    def under_trained(self, dataset: str, model: str) -> list:
        """The folds of ``model`` on ``dataset`` whose validation Dice was still rising at the end."""
        v = self.learned.get(dataset)
        return v.under_trained.get(model, []) if v else []

    @property
    def failures(self) -> list[StudyRow]:
        return [r for r in self.rows if not r.ok]

    @property
    def cost_only(self) -> bool:
        """No row measured a Dice (``train = false`` studies)."""
        return not any(r.ok and r.dice is not None for r in self.rows)


def summarize(rows: Sequence[StudyRow], published: Sequence[PublishedDice] = (), *,
              n_resamples: int = stats.N_RESAMPLES, seed: int = 0, permutation: bool = True) -> StudySummary:
    rows = list(rows)
    choices = lr_choices(rows)
    accs = model_accuracy(rows, choices, n_resamples=n_resamples, seed=seed)
    costs = deployment_cost(rows, choices)
    joined = join_costs(costs, published)
    measured = {canonical_dataset(a.dataset) for a in accs}
    if measured:  # a measured study shows published Dice only beside the same dataset's measured one
        joined = [(e, p) for e, p in joined if p.dataset in measured and canonical_dataset(e.dataset) == p.dataset]
    by_dataset: dict[str, list[ModelAccuracy]] = {}
    for a in accs:
        by_dataset.setdefault(a.dataset, []).append(a)
    learned = {d: judge(d, group, {a.model: a.refs for a in group}) for d, group in sorted(by_dataset.items())}
    pooled = sorted(d for d, v in learned.items() if v.learned is not False)
    return StudySummary(
        rows=rows, choices=choices, accuracy=accs,
        comparisons=family_comparison(accs, n_resamples=n_resamples, seed=seed, permutation=permutation,
                                      pooled=pooled),
        ranks=rank_table(accs, pooled), costs=costs, shift=shift_table(rows, choices, accs),
        published=list(published), published_costs=joined, learned=learned,
        tradeoffs=study_tradeoffs(costs, accs, joined))


def study_tradeoffs(costs: Sequence[CostEntry], accs: Sequence[ModelAccuracy],
                    published_costs: Sequence[tuple[CostEntry, PublishedDice]]) -> list[Tradeoff]:
    """Per dataset x device, the families' accuracy–latency trade-off (``segdeploy.analysis.fronts``): on measured
    Dice, or, where no Dice was measured, on published Dice (fp32 configurations only, the precision it was
    published for)."""
    groups: dict[tuple[str, str], list[Point]] = {}
    for e in costs:
        if e.dice is not None and e.p50_ms:
            groups.setdefault((e.dataset, e.device), []).append(
                Point(Config(e.model, e.backend, e.precision, e.device), e.family, e.dice, e.p50_ms, e.noisy))
    if not groups:
        for e, p in published_costs:
            if e.precision == "fp32" and e.p50_ms:
                groups.setdefault((p.dataset, e.device), []).append(
                    Point(Config(e.model, e.backend, e.precision, e.device), e.family, p.dice, e.p50_ms, e.noisy,
                          p.source, p.approx))
    best_low = {}
    for a in accs:
        if a.dice is not None and (a.dataset not in best_low or a.dice > best_low[a.dataset][0]):
            best_low[a.dataset] = (a.dice, a.ci.low if a.ci is not None else None)
    out = []
    for (dataset, device), points in sorted(groups.items()):
        t = tradeoff(dataset, device, points, best_low.get(dataset, (None, None))[1])
        if t is not None:
            out.append(t)
    return out


def plain_op_models(models) -> dict[str, str]:
    """model -> what it runs as plain PyTorch ops instead of its original's CUDA kernel (``ModelInfo.plain_ops``),
    for the models among ``models`` that have such an operator; names the registry does not know are skipped."""
    notes = {m: plain_ops_of(m) for m in sorted(set(models))}
    return {m: n for m, n in notes.items() if n}


def fmt_p(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass(frozen=True)
class Answer:
    dataset: str
    text: str
    comparison: Comparison | None = None
    verdict: str | None = None  # general | specialized | no detectable difference | not learned


def limitations(summary: StudySummary) -> str:
    """One line on what these results cannot show."""
    notes = []
    models = {r.model for r in summary.rows}
    if any(m.endswith("-tiny") for m in models):
        notes.append("tiny configurations (-tiny), not the full-size models")
    devices = {r.device for r in summary.rows if r.ok}
    if devices and not any(d.startswith("cuda") for d in devices):
        notes.append("CPU only, no GPU measured")
    folds = {len(a.folds) for a in summary.accuracy}
    if folds and max(folds) < 2:
        notes.append("one fold per model: no spread over training runs")
    lrs: dict[tuple, set] = {}
    for r in summary.rows:
        if r.in_study and r.lr is not None:
            lrs.setdefault((r.model, r.train_dataset), set()).add(r.lr)
    if lrs and all(len(v) == 1 for v in lrs.values()):
        notes.append("one learning rate per model (none chosen on validation)")
    images = [a.n_images for a in summary.accuracy if a.n_images]
    if images and min(images) < 100:
        notes.append(f"as few as {min(images)} test images per dataset")
    if summary.cost_only:
        notes.append("no Dice measured here (cost-only study)")
    plain = plain_op_models(r.model for r in summary.rows if r.ok and r.latency_p50_ms is not None)
    if plain:
        notes.append(f"the cost of {', '.join(plain)} is that of plain-PyTorch versions of their CUDA operators")
    if summary.published_costs:
        notes.append(f"Dice from the reference study is {LABEL} and belongs to its fp32 PyTorch models")
    if not summary.comparisons and not summary.published_costs:
        notes.append("no specialized-vs-general comparison (a family is missing)")
    untested = sorted(d for d, v in summary.learned.items() if v.learned is None)
    if untested:
        notes.append(f"no trivial baseline recorded for {', '.join(untested)} (rows from an older bench): whether "
                     "its models learned anything is not tested")
    if any(v.under_trained for v in summary.learned.values()):
        notes.append("some models were still improving when training stopped (marked under-trained)")
    if any(c.note for c in summary.comparisons):
        notes.append("some comparisons lack per-image data for a CI or test")
    if not notes:
        return "What this cannot show: results beyond these datasets, this hardware and these settings."
    return "What this cannot show: " + "; ".join(notes) + "."
