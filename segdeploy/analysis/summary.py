"""Everything the report and ``study summarize`` show, computed once: ``summarize(rows) -> StudySummary``, and the
answer sentences built from it (``answers``, ``limitations``)."""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass, field

from segdeploy.analysis import stats
from segdeploy.analysis.aggregate import (ALL_DATASETS, GENERAL, SPECIALIZED, Comparison, LrChoice, ModelAccuracy,
                                       family_comparison, model_accuracy, rank_table, lr_choices)
from segdeploy.analysis.cost import CostEntry, ShiftEntry, deployment_cost, shift_table
from segdeploy.analysis.published import LABEL, PublishedDice, canonical_dataset, join_costs
from segdeploy.analysis.rows import StudyRow


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
    return StudySummary(
        rows=rows, choices=choices, accuracy=accs,
        comparisons=family_comparison(accs, n_resamples=n_resamples, seed=seed, permutation=permutation),
        ranks=rank_table(accs), costs=costs, shift=shift_table(rows, choices, accs), published=list(published),
        published_costs=joined)


def sig3(value: float | None) -> str:
    """Three significant figures, never in exponent notation (2440, 61.6, 0.427): latencies, memory, sizes."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{round(value, 2 - int(math.floor(math.log10(abs(value))))) if value else 0:.0f}"
    return f"{value:.3g}"


def plain_op_models(models) -> dict[str, str]:
    """model -> what it runs as plain PyTorch ops instead of its original's CUDA kernel (``ModelInfo.plain_ops``),
    for the models among ``models`` that have such an operator; names the registry does not know are skipped."""
    try:
        from segdeploy.models import list_models, plain_ops
    except ImportError:  # the report of a results file needs no torch; without it there is nothing to say here
        return {}
    known = set(list_models())
    notes = {m: plain_ops(m) for m in sorted(set(models)) if m in known}
    return {m: n for m, n in notes.items() if n}


def fmt_p(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _pm(value: float, std: float | None) -> str:
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def deployment_consequence(costs: Sequence[CostEntry], dataset: str, winner: str, loser: str) -> str | None:
    """"on B P (device) W is N× faster ... than L": the configuration both ran where the winner is fastest among
    those whose accuracy passes the 99% rule (fp32, or a lower precision that passes), else fastest overall."""
    by_config: dict[tuple, dict[str, CostEntry]] = {}
    for e in costs:
        if e.dataset == dataset and e.model in (winner, loser) and e.p50_ms:
            by_config.setdefault((e.device, e.backend, e.precision), {})[e.model] = e
    shared = [(k, v) for k, v in by_config.items() if len(v) == 2]
    if not shared:
        return None
    trusted = [(k, v) for k, v in shared if k[2] == "fp32" or v[winner].passes_99]
    (device, backend, precision), pair = min(trusted or shared, key=lambda kv: kv[1][winner].p50_ms)
    w, l_ = pair[winner], pair[loser]
    ratio = l_.p50_ms / w.p50_ms
    speed = f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"
    text = f"at {precision} on {backend} ({device}) {winner} is {speed} (p50 {sig3(w.p50_ms)} vs {sig3(l_.p50_ms)} ms)"
    if w.memory_mb and l_.memory_mb:
        share = 1 - w.memory_mb / l_.memory_mb
        amount = "as much" if abs(share) < 0.005 else f"{abs(share):.0%} {'less' if share >= 0 else 'more'}"
        text += f" and uses {amount} memory ({sig3(w.memory_mb)} vs {sig3(l_.memory_mb)} MB)"
    text += f" than {loser}"
    if precision != "fp32" and w.passes_99 is None:
        text += f" ({precision} accuracy not measured)"
    return text


@dataclass(frozen=True)
class Answer:
    dataset: str
    text: str
    comparison: Comparison | None = None


def _measured_answer(c: Comparison, costs: Sequence[CostEntry]) -> Answer:
    g, s = c.general, c.specialized
    if c.dataset == ALL_DATASETS:
        head = (f"Over all datasets: best general {c.general_model} mean Dice {c.general_dice:.3f} vs best "
                f"specialized {c.specialized_model} {c.specialized_dice:.3f}")
    else:
        head = (f"{c.dataset}: best general {c.general_model} Dice {_pm(g.dice, g.dice_std)} vs best specialized "
                f"{c.specialized_model} {_pm(s.dice, s.dice_std)}")
    text = f"{head}, Δ {c.delta:+.3f}"
    if c.ci is not None and c.ci.low is not None:
        text += f" [95% CI {c.ci.low:+.3f}, {c.ci.high:+.3f}]"
    if c.test is not None:
        text += f", {fmt_p(c.test.p_wilcoxon)} (Wilcoxon, {c.test.n} images)"
    elif c.note:
        text += f" ({c.note})"
    if c.dataset != ALL_DATASETS:
        winner, loser = ((c.general_model, c.specialized_model) if c.delta >= 0
                         else (c.specialized_model, c.general_model))
        consequence = deployment_consequence(costs, c.dataset, winner, loser)
        if consequence:
            text += f"; {consequence}"
    return Answer(c.dataset, text + ".", c)


def _published_answers(summary: StudySummary) -> list[Answer]:
    out = []
    datasets = sorted({p.dataset for _, p in summary.published_costs})
    for dataset in datasets:
        best: dict[str, PublishedDice] = {}
        for entry, p in summary.published_costs:
            if p.dataset == dataset and entry.family in (GENERAL, SPECIALIZED):
                if entry.family not in best or p.dice > best[entry.family].dice:
                    best[entry.family] = p
        if len(best) < 2:
            continue
        g, s = best[GENERAL], best[SPECIALIZED]
        text = (f"{dataset} ({LABEL}): best general {g.model} Dice {g.dice:.3f}{' (approx.)' if g.approx else ''} "
                f"vs best specialized {s.model} {s.dice:.3f}{' (approx.)' if s.approx else ''}, "
                f"Δ {g.dice - s.dice:+.3f} (published means: no CI, no test)")
        winner, loser = (g.model, s.model) if g.dice >= s.dice else (s.model, g.model)
        cost_datasets = {e.dataset for e, p in summary.published_costs if p.dataset == dataset}
        for cost_dataset in sorted(cost_datasets):
            consequence = deployment_consequence(summary.costs, cost_dataset, winner, loser)
            if consequence:
                text += f"; measured here {consequence}"
                break
        out.append(Answer(dataset, text + "."))
    return out


def answers(summary: StudySummary) -> list[Answer]:
    """One sentence per dataset (then over all datasets): the comparison with numbers, CI and p, and what it
    means for deployment; from the published table where nothing was measured."""
    out = [_measured_answer(c, summary.costs) for c in summary.comparisons]
    measured = {canonical_dataset(c.dataset) for c in summary.comparisons}
    out += [a for a in _published_answers(summary) if a.dataset not in measured]  # cost-only studies
    return out


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
    if any(c.note for c in summary.comparisons):
        notes.append("some comparisons lack per-image data for a CI or test")
    if not notes:
        return "What this cannot show: results beyond these datasets, this hardware and these settings."
    return "What this cannot show: " + "; ".join(notes) + "."
