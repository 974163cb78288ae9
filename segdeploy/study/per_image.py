"""Per-image confusion matrices of a bench row, saved beside the cell as ``.npz`` (``ids``: str array,
``confusion``: (N, K, K) int64, rows = ground truth), so paired statistics can be recomputed without re-running.

They are recomputed from the class-index predictions bench saves at each image's original resolution (exactly
what it scored) and the dataset's masks; the prediction PNGs are deleted once the file is written.
TODO(issue8): the single evaluation path returns these confusions directly; then take them from there and drop
the PNG round trip.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from segdeploy.fileio import atomic_write_bytes

FOLDER = "per_image"


def _read_prediction(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def confusions(pred_dir: Path, dataset, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (N, K, K) confusions) of every prediction PNG in ``pred_dir`` against ``dataset``'s masks."""
    from segdeploy.bench.metrics import confusion_matrix  # TODO(issue8): segdeploy.evaluation.metrics

    ids = sorted(p.stem for p in pred_dir.glob("*.png"))
    matrices = [confusion_matrix(_read_prediction(pred_dir / f"{i}.png"), dataset.load_mask(i), num_classes)
                for i in ids]
    shape = (0, num_classes, num_classes)
    return np.array(ids, dtype=str), (np.stack(matrices) if matrices else np.zeros(shape, np.int64))


def attach(rows: list[dict], cell_folder: Path, pred_root: Path, target: str, dataset, num_classes: int) -> None:
    """Set each ok row's ``per_image`` to its .npz (path relative to the study folder), writing the file from the
    saved predictions when it is not there yet; rows without one get None."""
    out = cell_folder / FOLDER
    for row in rows:
        row["per_image"] = None
        if row.get("status") != "ok" or row.get("dice") is None:
            continue
        name = f"{target}--{row['backend']}-{row['precision']}.npz"
        pred_dir = pred_root / cell_folder.name / f"{row['backend']}-{row['precision']}"
        if not (out / name).is_file():
            if not pred_dir.is_dir():
                continue  # neither the file nor the predictions: a row from before per-image files existed
            ids, confusion = confusions(pred_dir, dataset, num_classes)
            if len(ids) != row.get("n_images"):
                continue  # predictions from another pass; never attach a file that does not match the row
            buf = io.BytesIO()
            np.savez_compressed(buf, ids=ids, confusion=confusion.astype(np.int64))
            atomic_write_bytes(out / name, buf.getvalue())
        shutil.rmtree(pred_dir, ignore_errors=True)
        row["per_image"] = f"{cell_folder.parent.name}/{cell_folder.name}/{FOLDER}/{name}"
    _remove_empty(pred_root, stop=cell_folder)


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder``'s empty sub-folders, then ``folder`` and its parents up to ``stop`` while empty."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
