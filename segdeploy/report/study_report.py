"""``segdeploy report``: a study's answer, figures and tables as ``report.html`` (self-contained, offline, no
JavaScript), ``report.md`` (text and tables) and ``summary.csv`` (every number; ``summary_csv``).

Order (docs: the reader wants the answer first, then the evidence, then the details): the answer per dataset and
what it cannot show; accuracy with its uncertainty; the accuracy-cost fronts; the accuracy guard of lower
precisions; per-class Dice; the cross-dataset shift; Grad-CAM; then tables (comparison, ranks, cost, lr choice),
the environment card and every configuration that failed or could not run.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segdeploy.numerics import fmt_num
from segdeploy.machine.cpuinfo import kernel_paths
from segdeploy.report import figures
from segdeploy.report.document import Answers, Document, Figure, Paragraph, Section, Table
from segdeploy.report.document import slug as _slug
from segdeploy.analysis.aggregate import ALL_DATASETS
from segdeploy.analysis.published import LABEL, canonical_dataset
from segdeploy.analysis.answer import answers
from segdeploy.analysis.summary import StudySummary, fmt_p, limitations, plain_op_models
from segdeploy.numerics import sig3

MAX_HTML_BYTES = 5_000_000


def _f(value, spec: str = ".3f") -> str:
    return fmt_num(value, spec)  # "-" for none or not finite; never "-0.0000"


def _sig(value) -> str:
    return sig3(value)


def _lr(value) -> str:
    return "-" if value is None else f"{value:g}"


def _published_by_model(summary: StudySummary) -> dict[tuple[str, str], float]:
    return {(canonical_dataset(e.dataset), e.model): p.dice for e, p in summary.published_costs}


def _answer_section(summary: StudySummary) -> Section:
    items = [(a.dataset, a.text) for a in answers(summary)]
    if not items:
        items = [("none", "No specialized-vs-general answer: the results need an ok row with a Dice for at least "
                          "one model of each family on a dataset (or, for a cost-only study, a published Dice).")]
    blocks = [Answers(items, limitations(summary))]
    if summary.comparisons:
        blocks.append(Paragraph(
            "Verdict first: general / specialized where the 95% CI of Δ excludes 0, no detectable difference "
            "where it does not, not learned where no model beats the best trivial predictor (all background, all "
            "foreground, or the training split's per-pixel prior mask, scored on the same test images). "
            "Δ = best general − best specialized (mean test Dice over folds at each model's chosen learning rate). "
            "95% CI and p: one paired percentile bootstrap of Δ micro Dice (folds, then test images resampled; p is "
            "the CI's dual, so the CI excludes 0 exactly when p < 0.05); Wilcoxon on per-image Dice is a secondary "
            "test of another quantity. Pooled: learned datasets only, each resampled within itself and weighted "
            "equally. Speed-ups: between the fastest configuration of each family within the best model's CI (or "
            "0.01 Dice) on the families' accuracy–latency fronts; rows with noisy timing are not quoted while a "
            "clean one qualifies. Smallest detectable Δ: (z₀.₉₇₅ + z₀.₈) · √(s²/n + s_fold²/F), s = sd of the "
            "per-image paired Dice differences.", "note"))
    return Section("answer", "The answer", blocks)


def _mark(summary: StudySummary, dataset: str, model: str) -> str:
    return " *" if summary.under_trained(dataset, model) else ""


def _beats(summary: StudySummary, dataset: str, model: str) -> str:
    judged = summary.learned.get(dataset)
    if judged is None or model not in judged.beats:
        return ""
    return "" if judged.beats[model] else "not above the trivial baseline"


def _verdict(summary: StudySummary, c) -> str:
    from segdeploy.analysis.answer import verdict

    judged = summary.learned.get(c.dataset)
    return verdict(c, True if c.dataset == ALL_DATASETS else (judged.learned if judged else None))


def _curves_figure(summary: StudySummary, dataset: str, accs) -> Figure | None:
    from segdeploy.report.curves import curves_figure

    panels = [{"model": a.model, "family": a.family,
               "curves": [(r.fold, r.curve) for r in a.refs if r.curve and r.curve.get("val_dice")]} for a in accs]
    panels = [p for p in panels if p["curves"]]
    if not panels:
        return None
    judged = summary.learned.get(dataset)
    baseline = judged.baseline[1] if judged and judged.baseline else None
    return Figure(f"fig-curves-{_slug(dataset)}", f"{dataset}: did training converge?",
                  "Validation Dice per epoch, one line per fold (solid, left axis), training loss (dashed, right "
                  "axis); dotted: the best trivial predictor's test Dice. A panel titled under-trained was still "
                  "rising at its last epochs.", figures.to_svg(curves_figure(panels, baseline)))


def _accuracy_by_dataset(summary: StudySummary) -> list[tuple[str, list]]:
    """(dataset, its models' accuracy, most accurate first), datasets in name order."""
    by_dataset = defaultdict(list)
    for a in summary.accuracy:
        by_dataset[a.dataset].append(a)
    return [(dataset, sorted(accs, key=lambda a: -(a.dice or 0))) for dataset, accs in sorted(by_dataset.items())]


def _trivial(summary: StudySummary, dataset: str) -> float | None:
    """The best trivial predictor's Dice on the dataset's test split (the plot's "not learned" band), if recorded."""
    v = summary.learned.get(dataset)
    return v.baseline[1] if v is not None and v.baseline is not None else None


def _accuracy_section(summary: StudySummary, draw: bool = True) -> Section:
    published = _published_by_model(summary)
    blocks = []
    grouped = _accuracy_by_dataset(summary)
    for dataset, accs in grouped:
        entries = [{"model": a.model, "family": a.family, "dice": a.dice, "fold_dice": a.fold_dice,
                    "ci": (a.ci.low, a.ci.high) if a.ci and a.ci.low is not None else None,
                    "published": published.get((canonical_dataset(dataset), a.model))} for a in accs]
        folds = max(len(a.folds) for a in accs)
        if draw:
            blocks.append(Figure(
                f"fig-dice-{_slug(dataset)}", f"{dataset}: which model is most accurate, and how sure are we?",
                f"Test Dice, mean over up to {folds} folds at the chosen learning rate (coloured), each fold (grey), "
                "95% bootstrap CI over test images (whiskers); reference row per fold: torch fp32.",
                figures.to_svg(figures.dice_figure(entries, trivial=_trivial(summary, dataset)))))
        ranks = summary.ranks
        blocks.append(Table(f"tab-accuracy-{_slug(dataset)}", f"{dataset}: accuracy (test split, chosen lr)",
                            ["model", "family", "lr", "folds", "Dice mean ± std", "95% CI", "mIoU", "mean recall",
                             "mean precision", "HD95 px", "rank", "val Dice", "note"],
                            [[a.model + _mark(summary, dataset, a.model), a.family, _lr(a.lr), str(len(a.folds)),
                              _f(a.dice) + (f" ± {_f(a.dice_std)}" if a.dice_std is not None else ""),
                              f"[{_f(a.ci.low)}, {_f(a.ci.high)}]" if a.ci and a.ci.low is not None else "-",
                              _f(a.iou), _f(a.recall), _f(a.precision), _f(a.hd95, ".1f"),
                              _f(ranks.get(a.model, {}).get(dataset), ".1f"), _f(a.val_dice),
                              "; ".join(filter(None, [a.note, _beats(summary, dataset, a.model)]))]
                             for a in accs]))
        judged = summary.learned.get(dataset)
        if judged is not None:
            state = {True: "learned", False: "NOT LEARNED", None: "learning not tested"}[judged.learned]
            blocks.append(Paragraph(f"{dataset}: {state} — {judged.why}."
                                    + (" * = under-trained: validation Dice still rising at the end." if
                                       judged.under_trained else ""), "note"))
        if draw and (curves := _curves_figure(summary, dataset, accs)) is not None:
            blocks.append(curves)
    if summary.comparisons:
        rows = []
        for c in summary.comparisons:
            test = c.test
            ds = c.datasets or [c.dataset]
            marks = {m: " *" if any(summary.under_trained(d, m) for d in ds) else ""
                     for m in (c.general_model, c.specialized_model)}
            rows.append([c.dataset, f"{c.general_model}{marks[c.general_model]} {_f(c.general_dice)}",
                         f"{c.specialized_model}{marks[c.specialized_model]} {_f(c.specialized_dice)}",
                         _f(c.delta, "+.3f"),
                         f"[{_f(c.ci.low, '+.3f')}, {_f(c.ci.high, '+.3f')}]" if c.ci and c.ci.low is not None
                         else "-", fmt_p(c.p), fmt_p(test.p_wilcoxon) if test else "-",
                         fmt_p(test.p_permutation) if test else "-", str(test.n) if test else "-", str(c.n_dropped),
                         _f(c.min_detectable_delta), _verdict(summary, c), c.note])
        blocks.append(Table("tab-comparison", "Best general vs best specialized (Δ = general − specialized)",
                            ["dataset", "best general", "best specialized", "Δ Dice", "95% CI (paired bootstrap)",
                             "p (bootstrap, primary)", "Wilcoxon (secondary)", "permutation (secondary)", "images",
                             "dropped", "min. detectable Δ", "verdict", "note"], rows))
    if summary.ranks and len(summary.learned_datasets) > 1:
        datasets = summary.learned_datasets  # ranks of a not-learned dataset are noise
        family = {a.model: a.family for a in summary.accuracy}
        ordered = sorted(summary.ranks.items(), key=lambda kv: kv[1][ALL_DATASETS])
        blocks.append(Table("tab-ranks", "Ranks by mean Dice (1 = best; mean over the learned datasets)",
                            ["model", "family", *datasets, "mean rank"],
                            [[m, family.get(m, "-"), *(_f(per.get(d), ".1f") for d in datasets),
                              _f(per[ALL_DATASETS], ".2f")] for m, per in ordered]))
    return Section("accuracy", "Accuracy and its uncertainty", blocks or [Paragraph("No measured Dice.")])


def _measured_how(summary: StudySummary, device: str) -> str:
    rows = [r for r in summary.rows if r.ok and r.device_label == device]
    backends = ", ".join(sorted({r.backend for r in rows}))
    iters = [r.latency_n for r in rows if r.latency_n]
    batches = sorted({r.batch for r in rows if r.batch})
    return (f"Measured on {device}; backends {backends}; latency = p50 of {min(iters) if iters else '?'}+ timed "
            f"iterations at batch 1, host to host; throughput at batch {', '.join(map(str, batches)) or '?'}; "
            "memory = peak above the process baseline.")


def _pareto_section(summary: StudySummary) -> Section:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in summary.costs:
        if e.dice is not None:
            groups[(e.dataset, e.device)].append({**vars(e), "published": False})
    for e, p in summary.published_costs:
        if e.precision == "fp32":
            key = (e.dataset, e.device) if summary.accuracy else (f"{p.dataset} ({LABEL})", e.device)
            groups[key].append({**vars(e), "dice": p.dice, "published": True})
    blocks = []
    for (dataset, device), points in sorted(groups.items()):
        how = _measured_how(summary, device)
        if any(p["published"] for p in points):
            how += (" Hollow markers: Dice published by Borst & Kounev 2026 (arXiv 2603.13044), not measured here; "
                    "drawn at fp32 only, the precision it was published for (no Dice of a lower precision is "
                    "assumed).")
        fig = figures.pareto_figure(points)
        if fig is not None:
            blocks.append(Figure(f"fig-pareto-{_slug(dataset, device)}",
                                 f"{dataset} on {device}: which configurations are on the accuracy–cost front?",
                                 how, figures.to_svg(fig)))
    by_device: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in summary.costs:
        by_device[(e.dataset, e.device)].append(vars(e))
    for (dataset, device), entries in sorted(by_device.items()):
        fig = figures.precision_figure(entries)
        if fig is not None and len({(e["backend"], e["precision"]) for e in entries}) > 1:
            blocks.append(Figure(f"fig-precision-{_slug(dataset, device)}",
                                 f"{dataset} on {device}: how much faster is each backend and precision?",
                                 _measured_how(summary, device) + " Every configuration measured, Dice or not.",
                                 figures.to_svg(fig)))
    return Section("pareto", "Accuracy against deployment cost", blocks or [Paragraph("No configuration has both a "
                                                                                      "Dice and a cost.")])


def _guard_section(summary: StudySummary) -> Section:
    groups = defaultdict(list)
    for e in summary.costs:
        if e.precision != "fp32" and e.relative_delta is not None:
            groups[(e.dataset, e.device)].append(e)
    blocks = []
    for (dataset, device), entries in sorted(groups.items()):
        bars = [{"label": f"{e.model} · {e.backend} {e.precision}", "family": e.family, "relative": e.relative_delta,
                 "passes": bool(e.passes_99)} for e in sorted(entries, key=lambda e: (e.model, e.backend,
                                                                                       e.precision))]
        n_fail = sum(not b["passes"] for b in bars)
        blocks.append(Figure(f"fig-guard-{_slug(dataset, device)}",
                             f"{dataset} on {device}: does a lower precision keep 99% of the fp32 Dice?",
                             f"ΔDice = Dice − the same run's torch fp32 Dice, mean over folds, in % of the fp32 Dice; "
                             f"dashed line: the 99% rule. {n_fail} of {len(bars)} configurations fail it.",
                             figures.to_svg(figures.guard_figure(bars))))
    return Section("guard", "Accuracy guard: lower precisions against fp32",
                   blocks or [Paragraph("No lower-precision configuration with an fp32 reference.")])


def _per_class_section(summary: StudySummary, draw: bool = True) -> Section:
    blocks = []
    for dataset, accs in _accuracy_by_dataset(summary):
        classes = list(dict.fromkeys(c for a in accs for c in a.dice_per_class))
        values = np.array([[np.nan if a.dice_per_class.get(c) is None else a.dice_per_class[c] for c in classes]
                           for a in accs], dtype=float)
        if len(classes) > 1 and draw:
            blocks.append(Figure(f"fig-classes-{_slug(dataset)}", f"{dataset}: which classes does each model miss?",
                                 "Test Dice per foreground class, mean over folds (micro over images).",
                                 figures.to_svg(figures.per_class_figure([(a.model, a.family) for a in accs],
                                                                         classes, values))))
        blocks.append(Table(f"tab-classes-{_slug(dataset)}", f"{dataset}: Dice per class",
                            ["model", "family", *classes],
                            [[a.model + _mark(summary, dataset, a.model), a.family, *(_f(v) for v in row)]
                             for a, row in zip(accs, values)]))
    return Section("classes", "Per-class Dice", blocks or [Paragraph("No measured Dice.")])


def _shift_section(summary: StudySummary) -> Section:
    if not summary.shift:
        return Section("shift", "Cross-dataset shift", [Paragraph("No cross-dataset target in these results.")])
    rows = [[e.model, e.family, e.train_dataset, e.target, _f(e.in_dice), _f(e.out_dice), _f(e.drop, "+.3f"),
             str(e.n)] for e in summary.shift]
    return Section("shift", "Cross-dataset shift", [Table(
        "tab-shift", "Trained on one dataset, scored on another: in-domain vs out-of-domain Dice (drop = in − out; "
        "n = folds, or models for a family line)", ["model", "family", "trained on", "scored on", "in-domain",
                                                     "out-of-domain", "drop", "n"], rows)])


def _timing_notes(entries) -> list[Paragraph]:
    """Why a cell of the cost table is blank or a row is marked noisy."""
    from segdeploy.bench.latency import NOISY_CV, NOISY_SPREAD, PERCENTILE_MIN_N

    notes = []
    if any(e.p95_ms is None and e.p50_ms is not None for e in entries):
        notes.append(f"p95 blank: p95 needs ≥ {PERCENTILE_MIN_N[95]} timed iterations (p90 10, p99 100); "
                     "fewer were run.")
    if any(e.memory_mb is None and e.memory_note for e in entries):
        notes.append("memory blank: measured in a shared process (isolate none), where a runtime reuses what an "
                     "earlier configuration freed; only a process of its own gives a configuration's memory.")
    noisy = [e for e in entries if e.noisy]
    if noisy:
        notes.append(f"noisy (coefficient of variation above {NOISY_CV:.0%}, p90/p50 above {NOISY_SPREAD}, or host "
                     "load above the cores; read its timings as rough): "
                     + "; ".join(f"{e.model} {e.backend} {e.precision}: {e.noisy_reason}" for e in noisy) + ".")
    if any(e.noisy is None and e.p50_ms is not None for e in entries):
        notes.append("timing '-': rows written before noise was judged (results schema before bench/3).")
    return [Paragraph(text, "note") for text in notes]


def _cost_section(summary: StudySummary) -> Section:
    groups = defaultdict(list)
    for e in summary.costs:
        groups[(e.dataset, e.device)].append(e)
    blocks = []
    for (dataset, device), entries in sorted(groups.items()):
        energy = any(e.energy_j is not None for e in entries)
        scored = any(e.dice is not None for e in entries)  # a cost-only study has no Dice columns to show
        # iterations, threads, batch and host load beside the timings, as benchmark_app's summary prints them
        header = ["model", "family", "backend", "precision", "p50 ms", "p95 ms", "img/s", "memory MB",
                  *(["J/img"] if energy else []), "size MB", "params M", "GMACs",
                  *(["Dice", "ΔDice", "99% rule"] if scored else []), "iters", "threads", "batch", "load", "timing"]
        rows = []
        for e in entries:
            rule = "-" if e.passes_99 is None else ("pass" if e.passes_99 else "FAIL")
            rows.append([e.model + _mark(summary, dataset, e.model), e.family, e.backend, e.precision,
                         _sig(e.p50_ms), _sig(e.p95_ms),
                         _sig(e.throughput_ips), _sig(e.memory_mb), *([_sig(e.energy_j)] if energy else []),
                         _sig(e.size_mb), _sig(e.params_m), _sig(e.gmacs),
                         *([_f(e.dice), _f(e.delta_dice, "+.4f"), rule] if scored else []),
                         _f(e.latency_n, "d"), _f(e.threads, "d"), _f(e.batch, "d"), _f(e.host_load_1m, ".1f"),
                         {True: "noisy", False: "ok", None: "-"}[e.noisy]])
        caption = f"{dataset} on {device}: deployment cost (median over folds" + ("; Dice mean over folds)" if scored
                                                                               else "; no Dice measured)")
        blocks.append(Table(f"tab-cost-{_slug(dataset, device)}", caption, header, rows))
        blocks += _timing_notes(entries)
    plain = plain_op_models(e.model for e in summary.costs)
    if plain:
        blocks.append(Paragraph("Operators written here in plain exportable PyTorch ops (the originals use their "
                                "own CUDA kernels, which do not export to ONNX); the cost above is that of these "
                                "versions: " + "; ".join(f"{m}: {n}" for m, n in plain.items()) + ".", "note"))
    return Section("cost", "Deployment cost per configuration", blocks or [Paragraph("No ok configuration.")])


def _lr_section(summary: StudySummary) -> Section:
    rows = []
    for (model, dataset), c in sorted(summary.choices.items()):
        tried = "; ".join(f"{_lr(lr)}: {_f(m)} ({n} folds)" for lr, (m, n) in
                          sorted(c.val_by_lr.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
        rows.append([model, dataset, _lr(c.lr), tried, c.note])
    return Section("lr", "Learning-rate choice (validation Dice, never test)", [Table(
        "tab-lr", "Chosen per model and training dataset by the mean validation Dice over folds",
        ["model", "dataset", "chosen lr", "validation Dice per lr", "rule"], rows)])


def _published_section(summary: StudySummary) -> Section | None:
    seen = {}
    for e, p in summary.published_costs:
        seen[(p.model, p.dataset)] = (e.family, p)
    if not seen:
        return None
    rows = [[m, fam, d, _f(p.dice) + (" (approx.)" if p.approx else ""), p.source]
            for (m, d), (fam, p) in sorted(seen.items())]
    return Section("published", "Published accuracy used (not measured here)", [Table(
        "tab-published", "Dice from elsewhere, shown beside costs measured here", ["model", "family", "dataset",
                                                                                   "Dice", "source"], rows)])


def _env_section(summary: StudySummary) -> Section:
    envs = {}
    for r in summary.rows:
        if r.env and r.device_label not in envs and r.ok:
            envs[r.device_label] = r.env
    card = []
    for label, env in envs.items():
        ort = env.get("onnxruntime") or {}
        gpus = "; ".join(f"{g.get('name')} ({g.get('memory_gb')} GB)" for g in env.get("gpus") or []) or "none"
        isa = env.get("cpu_isa") or {}
        kernels = kernel_paths(isa) if isa else "-"
        card.append([label, str(env.get("cpu")), kernels, str(env.get("cpu_cores")), str(env.get("ram_gb")), gpus,
                     str(env.get("nvidia_driver") or "-"), str(env.get("python")),
                     str((env.get("torch") or {}).get("version")),
                     f"{ort.get('version')} ({ort.get('package')})" if ort else "-", str(env.get("tensorrt") or "-"),
                     str(env.get("segdeploy")), str(env.get("os"))])
    where = defaultdict(lambda: defaultdict(int))
    for r in summary.rows:
        where[(r.backend, r.precision, r.device_label if r.ok else r.device)][r.status] += 1
    where_rows = [[b, p, d, str(c.get("ok", 0)), str(c.get("unavailable", 0)), str(c.get("failed", 0))]
                  for (b, p, d), c in sorted(where.items())]
    return Section("environment", "Environment: hardware, versions, what ran where", [
        Table("tab-env", "Machines the rows were measured on (from each row's env record)",
              ["device", "CPU", "CPU int8/bf16/fp16 path", "cores", "RAM GB", "GPUs", "driver", "python", "torch", "onnxruntime", "TensorRT",
               "segdeploy", "OS"], card),
        Table("tab-where", "What ran where (rows per status)", ["backend", "precision", "device", "ok",
                                                                "unavailable", "failed"], where_rows)])


def _joined(values) -> str:
    return ", ".join(dict.fromkeys(values)) or "-"


def _failures_section(summary: StudySummary) -> Section:
    """Every configuration that did not measure; those that failed or were unavailable for the same reason on the
    same backend, precision and device are one line naming their models (a cost-only study has one "torch int8 is
    not benchmarked" per model)."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in summary.failures:
        groups[(r.backend, r.precision, r.device, r.status, r.reason or "-")].append(r)
    all_models = {r.model for r in summary.rows}
    rows = []
    for (backend, precision, device, status, reason), members in groups.items():
        models = {r.model for r in members}
        model = (f"all {len(models)} models" if len(members) > 1 and models == all_models and len(models) > 3
                 else _joined(r.model for r in members))
        rows.append([model, _joined(r.target for r in members),
                     _joined(str(r.fold) if r.in_study and r.fold is not None else "-" for r in members),
                     _joined(_lr(r.lr) for r in members), backend, precision, device, status, reason])
    n = len(summary.failures)
    block = (Table("tab-failures", f"{n} configuration{'s' * (n != 1)} did not produce a measurement (one line "
                                   "per backend, precision, device and reason)",
                   ["model", "dataset", "fold", "lr", "backend", "precision", "device", "status", "reason"], rows)
             if rows else Paragraph("Every configuration ran."))
    notes = [Paragraph(f"{c.model} on {c.dataset}: {c.note}", "note") for c in summary.choices.values()
             if c.lr is None and len(c.val_by_lr) > 1]
    return Section("failures", "Failed and unavailable configurations", [block, *notes])


def build_document(summary: StudySummary, sources: Sequence[Path], cam_section: Section | None = None, *,
                   draw: bool = True) -> Document:
    """The report; ``draw=False`` leaves the figures out (``study summarize`` prints the rest)."""
    import segdeploy

    models = sorted({r.model for r in summary.rows})
    datasets = sorted({r.train_dataset for r in summary.rows})
    subtitle = (f"{len(summary.rows)} result rows from {', '.join(str(s) for s in sources)}; {len(models)} models; "
                f"datasets {', '.join(datasets)}; written "
                f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by segdeploy {segdeploy.__version__}.")
    measured = not summary.cost_only  # a cost-only study has no accuracy, guard, class, shift or lr to show
    sections = [_answer_section(summary)] + [_accuracy_section(summary, draw)] * measured
    if draw:
        sections += [_pareto_section(summary)] + [_guard_section(summary)] * measured
    sections += [_per_class_section(summary, draw), _shift_section(summary)] * measured
    if cam_section is not None:
        sections.append(cam_section)
    with_lr = measured and any(c.lr is not None or len(c.val_by_lr) > 1 for c in summary.choices.values())
    sections += [_cost_section(summary)] + [_lr_section(summary)] * with_lr
    if (published := _published_section(summary)) is not None:
        sections.append(published)
    sections += [_env_section(summary), _failures_section(summary)]
    return Document("Specialized or general? Accuracy and deployment cost", subtitle, sections)
