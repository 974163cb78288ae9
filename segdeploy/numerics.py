"""Numbers that cannot be trusted are refused, not scored: NaN/inf logits or weights stop with the reason.

A NaN logit arg-maxes to class 0, so a diverged model or an fp16 engine that overflows would otherwise be
benchmarked as a model that predicts background everywhere (Dice 0.0, status ok).
"""

from __future__ import annotations

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
