"""Numbers that cannot be trusted are refused, not scored: NaN/inf logits or weights stop with the reason.

A NaN logit arg-maxes to class 0, so a diverged model or an fp16 engine that overflows would otherwise be
benchmarked as a model that predicts background everywhere (Dice 0.0, status ok).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.errors import SegdeployError


class NonFinite(SegdeployError):
    """Values that should be finite are NaN or infinite."""


def _count(array: np.ndarray) -> tuple[int, int]:
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


def require_finite(array: Any, what: str, path: str | Path | None = None, *, fix: str | None = None) -> Any:
    """``array`` unchanged when every value is finite; else :class:`NonFinite` saying how many are NaN/inf.

    ``what`` names the values ("onnxruntime fp16 logits"), ``path`` the file they come from."""
    values = np.asarray(array)
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        nan, inf = _count(values)
        raise NonFinite(f"{what} hold {nan} NaN and {inf} infinite values (of {values.size}).", path=path,
                        fix=fix or "the model or engine overflows or has diverged: check the precision (fp16 "
                                   "overflows where fp32 does not), or retrain with a lower --lr.")
    return array


def nonfinite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors (torch or numpy) that hold a NaN or infinite value."""
    bad = []
    for name, t in tensors.items():
        if hasattr(t, "is_floating_point"):
            import torch

            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(name)
        elif np.asarray(t).dtype.kind in "fc" and not np.isfinite(np.asarray(t)).all():
            bad.append(name)
    return bad


def require_finite_weights(tensors: Mapping[str, Any], path: str | Path, *, fix: str | None = None) -> None:
    bad = nonfinite_tensors(tensors)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFinite(f"the weights hold NaN or infinite values ({len(bad)} of {len(tensors)} tensors: {shown}): "
                        "the training diverged.", path=path,
                        fix=fix or "retrain with a lower --lr (segdeploy train ... --restart).")


def require_finite_logits(logits: np.ndarray, engine) -> np.ndarray:
    """Logits of ``engine`` (a segdeploy Engine), checked; the error names the backend, precision and file."""
    info = getattr(engine, "info", None) or {}
    source = next((info[k] for k in ("onnx", "engine", "weights", "file") if info.get(k)), None)
    return require_finite(logits, f"{engine.backend} {engine.precision} logits", source)


def checked_number(value, *, positive: bool = False) -> float:
    """THE check of a duration, warm-up, timeout or learning rate, from the command line or a study file: a finite
    number, >= 0 (> 0 with ``positive``); otherwise ValueError saying what is wrong. NaN passes every ``<``
    comparison, so a loop ``while elapsed < duration`` with NaN or inf never ends: both are refused here, where the
    value is parsed, not discovered as a hang."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"must be {'> 0' if positive else '>= 0'}, got {value:g}")
    return float(value)


def fmt_num(value, spec: str, missing: str = "-") -> str:
    """A table cell: ``value`` formatted with ``spec``, or ``missing`` when there is none (or it is not finite).
    A value that rounds to zero prints as zero without a sign: never "-0.0000" (a tiny negative ΔDice) nor
    "+0.0000"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    text = format(value, spec)
    mantissa = text.lower().split("e")[0]
    if text[:1] in "+-" and not any(c in "123456789" for c in mantissa):
        text = text[1:]
    return text


def sig3(value: float | None) -> str:
    """Three significant figures, never in exponent notation (2440, 61.6, 0.427): latencies, memory, sizes."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{round(value, 2 - int(math.floor(math.log10(abs(value))))) if value else 0:.0f}"
    return f"{value:.3g}"
