"""``summary.csv``: every number of the report in one long table, one quantity per line.

Columns: ``section`` (answer, accuracy, comparison, rank, cost, shift, published), ``dataset`` (the training
dataset, or "all datasets"), ``target`` (the dataset scored, for shift rows), ``device``, ``model``, ``family``,
``backend``, ``precision``, ``quantity``, ``value``, ``ci_low``, ``ci_high``, ``n`` (folds, images or rows, as
``quantity`` says), ``note``. Values are full precision; the report rounds them. A text cell that a spreadsheet
would run as a formula (it starts with =, +, -, @, a tab or a carriage return and is not a number) is written
with a leading single quote (OWASP's CSV-injection rule): names come from the user.
"""

from __future__ import annotations

import csv
import io
import re

from segdeploy.analysis.aggregate import ALL_DATASETS
from segdeploy.analysis.summary import Answer, StudySummary

COLUMNS = ("section", "dataset", "target", "device", "model", "family", "backend", "precision", "quantity", "value",
           "ci_low", "ci_high", "n", "note")


def _rec(section, quantity, value, **kw) -> dict:
    return {"section": section, "quantity": quantity, "value": value, **kw}


def summary_records(summary: StudySummary, answers: list[Answer]) -> list[dict]:
    out = [_rec("answer", "sentence", a.verdict, dataset=a.dataset, note=a.text) for a in answers]
    for a in summary.accuracy:
        base = dict(dataset=a.dataset, model=a.model, family=a.family)
        ci = a.ci or None
        out.append(_rec("accuracy", "dice_mean", a.dice, ci_low=ci and ci.low, ci_high=ci and ci.high,
                        n=len(a.folds), note=(ci.method if ci else a.note) or None, **base))
        out.append(_rec("accuracy", "dice_std", a.dice_std, n=len(a.folds), **base))
        for quantity in ("iou", "recall", "precision", "hd95", "val_dice", "lr", "n_images"):
            out.append(_rec("accuracy", quantity, getattr(a, quantity), **base))
        out += [_rec("accuracy", f"dice[{c}]", v, **base) for c, v in a.dice_per_class.items()]
    for c in summary.comparisons:
        g = c.general if c.dataset != ALL_DATASETS or not isinstance(c.general, list) else c.general[0]
        s = c.specialized if c.dataset != ALL_DATASETS or not isinstance(c.specialized, list) else c.specialized[0]
        out.append(_rec("comparison", "dice", c.general_dice, dataset=c.dataset, model=c.general_model,
                        family="general", n=len(g.folds) if c.dataset != ALL_DATASETS else None,
                        ci_low=None, note="mean over folds" if c.dataset != ALL_DATASETS else
                        "mean over datasets of the fold means"))
        out.append(_rec("comparison", "dice_std", getattr(g, "dice_std", None) if c.dataset != ALL_DATASETS
                        else None, dataset=c.dataset, model=c.general_model, family="general"))
        out.append(_rec("comparison", "dice", c.specialized_dice, dataset=c.dataset, model=c.specialized_model,
                        family="specialized", n=len(s.folds) if c.dataset != ALL_DATASETS else None))
        out.append(_rec("comparison", "dice_std", getattr(s, "dice_std", None) if c.dataset != ALL_DATASETS
                        else None, dataset=c.dataset, model=c.specialized_model, family="specialized"))
        pair = f"{c.general_model} - {c.specialized_model}"
        out.append(_rec("comparison", "delta", c.delta, dataset=c.dataset, model=pair,
                        ci_low=c.ci.low if c.ci else None, ci_high=c.ci.high if c.ci else None,
                        n=c.test.n if c.test else None,
                        note=(f"paired bootstrap ({c.ci.method}) over test images" if c.ci else c.note) or None))
        test = c.test
        out.append(_rec("comparison", "p_bootstrap", c.p, dataset=c.dataset, model=pair, n=test and test.n,
                        note="primary: the paired bootstrap's p, dual to the CI of delta"))
        out.append(_rec("comparison", "min_detectable_delta", c.min_detectable_delta, dataset=c.dataset, model=pair,
                        note="80% power, two-sided alpha 0.05"))
        out.append(_rec("comparison", "p_wilcoxon", test and test.p_wilcoxon, dataset=c.dataset, model=pair,
                        n=test and test.n, note="secondary: Wilcoxon signed-rank on per-image Dice, two-sided"))
        out.append(_rec("comparison", "p_permutation", test and test.p_permutation, dataset=c.dataset, model=pair,
                        n=test and test.n, note="sign-flip permutation test of the mean per-image difference"))
        out.append(_rec("comparison", "images_dropped", c.n_dropped, dataset=c.dataset, model=pair,
                        note="scored by only one of the two models"))
    for model, per in summary.ranks.items():
        out += [_rec("rank", "rank", r, dataset=d, model=model) for d, r in per.items()]
    for e in summary.costs:
        base = dict(dataset=e.dataset, device=e.device, model=e.model, family=e.family, backend=e.backend,
                    precision=e.precision, n=e.n_rows)
        for quantity in ("p50_ms", "p95_ms", "p99_ms", "throughput_ips", "memory_mb", "energy_j", "size_mb", "params_m",
                         "gmacs", "dice", "delta_dice"):
            out.append(_rec("cost", quantity, getattr(e, quantity), **base))
        out.append(_rec("cost", "passes_99", None if e.passes_99 is None else int(e.passes_99), **base))
        out.append(_rec("cost", "noisy", None if e.noisy is None else int(e.noisy), **base, note=e.noisy_reason))
    for e in summary.shift:
        base = dict(dataset=e.train_dataset, target=e.target, model=e.model, family=e.family, n=e.n)
        out += [_rec("shift", q, v, **base) for q, v in (("in_domain_dice", e.in_dice),
                                                         ("out_of_domain_dice", e.out_dice), ("drop", e.drop))]
    for e, p in summary.published_costs:
        if e.precision == "fp32":
            out.append(_rec("published", "dice", p.dice, dataset=p.dataset, model=p.model, family=e.family,
                            note=p.source + (" (approximate)" if p.approx else "")))
    return out


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _cell(value) -> str:
    """A CSV cell a spreadsheet shows as written: a formula-like text gets a leading "'"; a number stays one."""
    if value is None:
        return ""
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    seen = set()
    for r in records:
        line = tuple(r.get(c) for c in COLUMNS)
        if line in seen:  # a published figure joined to several backends is one fact
            continue
        seen.add(line)
        writer.writerow({c: _cell(r.get(c)) for c in COLUMNS})
    return buf.getvalue()
