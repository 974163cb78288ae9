"""Per-image confusion counts beside a results file, so every statistic over images (bootstrap CIs, paired tests
between models) can be recomputed later without running anything again.

One ``.npz`` per results row (``numpy.load(..., allow_pickle=False)`` reads it; no pickle anywhere):

* ``ids``: (N,) unicode, the image ids in evaluation order;
* ``confusion``: (N, K, K) int64, one confusion matrix per image, rows = ground truth, columns = prediction.

The row names its sidecar in ``per_image``, a path relative to the results file's folder:
``<results stem>.per_image/<digest>.npz``, where the digest covers the row's configuration and timestamp, so a
re-measured configuration gets a new file and the older row keeps pointing at its own counts. The sidecar is
written (atomically) before its row is appended: a row never names a file that is not there.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_bytes


def sidecar_name(results: str | Path, identity: Sequence) -> str:
    """The ``per_image`` value for a row of ``results`` identified by ``identity`` (key fields + timestamp)."""
    results = Path(results)
    digest = hashlib.sha256(json.dumps(list(identity), default=str).encode()).hexdigest()[:20]
    return f"{results.stem}.per_image/{digest}.npz"


def save_per_image(path: str | Path, ids: Sequence[str], confusion: np.ndarray) -> Path:
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 3 or confusion.shape[1] != confusion.shape[2] or len(ids) != len(confusion):
        raise ValueError(f"{len(ids)} ids for confusion of shape {confusion.shape}; want (N, K, K)")
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.asarray(list(ids), dtype=str), confusion=confusion)
    return atomic_write_bytes(path, buf.getvalue())


def load_per_image(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,) str, confusion (N, K, K) int64), checked; a one-line error naming the file otherwise."""
    path = Path(path)
    fix = "re-run that configuration (segdeploy bench --force), or drop the row's per_image field."
    if not path.is_file():
        raise SegdeployError("per-image sidecar named by a results row is missing.", path=path, fix=fix)
    try:
        with np.load(path, allow_pickle=False) as npz:
            ids, confusion = npz["ids"].astype(str), npz["confusion"].astype(np.int64)
    except (OSError, ValueError, KeyError) as e:
        raise SegdeployError(f"unreadable per-image sidecar ({type(e).__name__}: {e}).", path=path, fix=fix) from e
    if confusion.ndim != 3 or confusion.shape[1] != confusion.shape[2] or len(ids) != len(confusion):
        raise SegdeployError(f"ids {ids.shape} and confusion {confusion.shape} do not match (want (N,) and "
                             "(N, K, K)).", path=path, fix=fix)
    if len(set(ids.tolist())) != len(ids):
        raise SegdeployError("image ids repeat.", path=path, fix=fix)
    return ids, confusion
