"""Which learning rate a model x dataset is reported at: the best mean validation Dice over its folds (Borst &
Kounev 2026); ties go to the smaller lr. The study driver (selection.json) and the analysis (its tables) both
choose here, so the rule cannot drift between them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

RULE = ("per model x dataset, the lr with the best mean validation Dice over its folds (Borst & Kounev 2026); "
        "ties go to the smaller lr")


def mean_by_lr(val_by_lr: Mapping[float, Mapping[int, float | None]]) -> dict[float, tuple[float | None, int]]:
    """lr -> (mean validation Dice over the folds that have one, or None; how many folds have one)."""
    out = {}
    for lr, folds in val_by_lr.items():
        present = [v for v in folds.values() if v is not None]
        out[lr] = (float(np.mean(present)) if present else None, len(present))
    return out


def select_lr(means: Mapping[float, float | None]) -> float | None:
    """The lr of the best mean validation Dice (ties: the smaller lr); None when no lr has one."""
    scored = {lr: m for lr, m in means.items() if m is not None}
    if not scored:
        return None
    best = max(scored.values())
    return min(lr for lr, m in scored.items() if m == best)
