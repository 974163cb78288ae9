"""Deployment cost per model x backend x precision, and the cross-dataset shift table.

* **cost**: ok in-domain rows of the chosen lr (``aggregate.lr_choices``), grouped by scored dataset x device x
  model x backend x precision. Timings, memory, energy and sizes are the median over the group's rows (the folds
  are one architecture with different weights); Dice and ΔDice are means over folds.
* **ΔDice vs fp32**: the row's ``dice_vs_torch_fp32``, written by bench under the one reference rule
  (``segdeploy.rowkeys.References``: the same run's torch fp32 row on the same split, images and device kind); a
  row without one has no ΔDice and no 99% verdict (shown as such, never compared against another fp32 row). The
  **99% rule** (MLPerf Inference's medical target, also
  ``segdeploy check``'s): a lower precision passes when its mean Dice >= 0.99 x the mean fp32 reference Dice.
* **shift**: per model and cross-dataset target, the in-domain test Dice (``ModelAccuracy``) against the mean
  over folds of the target's Dice (accuracy row of each cell on that target), and the drop (in - out); per family
  the mean over its models.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segdeploy.rowkeys import FP32_SHARE
from segdeploy.analysis.aggregate import ModelAccuracy, accuracy_row, chosen
from segdeploy.analysis.rows import StudyRow


def _median(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


@dataclass
class CostEntry:
    dataset: str
    device: str  # device label: where and on what hardware
    model: str
    family: str
    backend: str
    precision: str
    n_rows: int
    p50_ms: float | None
    p99_ms: float | None
    latency_n: int | None
    batch: int | None
    throughput_ips: float | None
    memory_mb: float | None
    energy_j: float | None
    size_mb: float | None
    params_m: float | None
    gmacs: float | None
    dice: float | None
    delta_dice: float | None  # vs the fp32 reference; None for fp32 itself or without a reference
    fp32_dice: float | None
    passes_99: bool | None  # None: fp32, or nothing to compare with
    # what the timings rest on (benchmark_app's summary): the fewest timed iterations, threads, the highest host
    # load; noisy if any fold's row was (segdeploy.bench.latency.noise), None if none was judged
    p95_ms: float | None = None
    threads: int | None = None
    host_load_1m: float | None = None
    noisy: bool | None = None
    noisy_reason: str | None = None
    memory_note: str | None = None

    @property
    def relative_delta(self) -> float | None:
        """ΔDice as a share of the fp32 Dice (the 99% rule fails below -0.01)."""
        if self.delta_dice is None or not self.fp32_dice:
            return None
        return self.delta_dice / self.fp32_dice


def _reference_delta(row: StudyRow, cell_rows: Sequence[StudyRow]) -> float | None:
    if row.dice is None:
        return None
    if (row.backend, row.precision) == ("torch", "fp32"):
        return 0.0
    return row.dice_vs_torch_fp32


def _timing_basis(rs: Sequence[StudyRow]) -> dict:
    counts = [r.latency_n for r in rs if r.latency_n is not None]
    loads = [r.host_load_1m for r in rs if r.host_load_1m is not None]
    judged = [r for r in rs if r.noisy is not None]
    noisy = [r for r in judged if r.noisy]
    return dict(p95_ms=_median(r.latency_p95_ms for r in rs), threads=rs[0].threads,
                host_load_1m=max(loads) if loads else None,
                noisy=bool(noisy) if judged else None,
                noisy_reason="; ".join(dict.fromkeys(r.noisy_reason for r in noisy if r.noisy_reason)) or None,
                memory_note=next((r.memory_note for r in rs if r.memory_note), None),
                latency_n=min(counts) if counts else None)


def deployment_cost(rows: Sequence[StudyRow], choices: dict) -> list[CostEntry]:
    cells: dict[tuple, list[StudyRow]] = defaultdict(list)
    kept = [r for r in chosen(rows, choices) if r.ok and r.in_domain]
    for r in kept:
        cells[(r.cell, r.target)].append(r)
    groups: dict[tuple, list[tuple[StudyRow, float | None]]] = defaultdict(list)
    for r in kept:
        delta = _reference_delta(r, cells[(r.cell, r.target)])
        groups[(r.target, r.device_label, r.model, r.backend, r.precision)].append((r, delta))
    out = []
    for (dataset, device, model, backend, precision), members in groups.items():
        rs = [r for r, _ in members]
        dice = _mean(r.dice for r in rs)
        deltas = [d for r, d in members if d is not None and r.dice is not None]
        delta = float(np.mean(deltas)) if deltas and precision != "fp32" else None
        fp32 = _mean(r.dice - d for r, d in members if d is not None and r.dice is not None)
        passes = None
        if delta is not None and fp32 is not None:
            passes = bool(dice >= FP32_SHARE * fp32 - 1e-12)
        out.append(CostEntry(
            dataset=dataset, device=device, model=model, family=rs[0].family, backend=backend, precision=precision,
            n_rows=len(rs), p50_ms=_median(r.latency_p50_ms for r in rs), p99_ms=_median(r.latency_p99_ms for r in rs),
            batch=rs[0].batch, throughput_ips=_median(r.throughput_ips for r in rs),
            memory_mb=_median(r.memory_mb for r in rs), energy_j=_median(r.energy_j for r in rs),
            size_mb=_median(r.file_size_mb for r in rs), params_m=_median(r.params_m for r in rs),
            gmacs=_median(r.gmacs for r in rs), dice=dice, delta_dice=delta, fp32_dice=fp32, passes_99=passes,
            **_timing_basis(rs)))
    out.sort(key=lambda e: (e.dataset, e.device, e.model, e.backend, e.precision))
    return out


@dataclass
class ShiftEntry:
    model: str  # a model, or "family: <name>" for a family's mean
    family: str
    train_dataset: str
    target: str
    in_dice: float | None
    out_dice: float | None
    n: int  # folds averaged for a model; models averaged for a family

    @property
    def drop(self) -> float | None:
        return None if self.in_dice is None or self.out_dice is None else self.in_dice - self.out_dice


def shift_table(rows: Sequence[StudyRow], choices: dict, accs: Sequence[ModelAccuracy]) -> list[ShiftEntry]:
    in_domain = {(a.dataset, a.model): a for a in accs}
    cells: dict[tuple, list[StudyRow]] = defaultdict(list)
    for r in chosen(rows, choices):
        if not r.in_domain:
            cells[(r.model, r.train_dataset, r.target, r.fold)].append(r)
    outs: dict[tuple, list[float]] = defaultdict(list)
    family = {}
    for (model, train, target, _), cell_rows in cells.items():
        ref = accuracy_row(cell_rows)
        if ref is not None:
            outs[(model, train, target)].append(ref.dice)
            family[model] = ref.family
    entries = []
    for (model, train, target), values in sorted(outs.items()):
        acc = in_domain.get((train, model))
        entries.append(ShiftEntry(model, family[model], train, target, acc.dice if acc else None,
                                  float(np.mean(values)), len(values)))
    per_family: dict[tuple, list[ShiftEntry]] = defaultdict(list)
    for e in entries:
        per_family[(e.family, e.train_dataset, e.target)].append(e)
    for (fam, train, target), members in sorted(per_family.items()):
        complete = [m for m in members if m.drop is not None]
        entries.append(ShiftEntry(f"family: {fam}", fam, train, target, _mean(m.in_dice for m in complete),
                                  _mean(m.out_dice for m in complete), len(complete)))
    return entries
