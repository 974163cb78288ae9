"""REX learning-rate schedule (Chen et al., "REX: Revisiting Budgeted Training with an Improved Schedule",
MLSys 2022), as used by the reference study: lr(t) = lr0 * (1 - t/T) / (0.5 + 0.5 * (1 - t/T))."""

from __future__ import annotations


def rex_factor(step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate after ``step`` of ``total_steps`` optimizer steps."""
    if total_steps <= 0:
        return 1.0
    z = max(0.0, 1.0 - min(step, total_steps) / total_steps)
    return z / (0.5 + 0.5 * z)
