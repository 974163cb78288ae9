"""Grad-CAM montages for the report, read from what ``segdeploy cam`` wrote (``cam.json`` and its overlays) under
the study folders. Overlays show the user's images: they are embedded in ``report.html`` at report time only and
never written anywhere else (``report.md`` names the montage, it does not carry it)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.analysis.aggregate import fold_order
from segdeploy.analysis.rows import StudyRow

MAX_TILES = 4
TILE_PX = 320


@dataclass
class CamSet:
    dataset: str
    model: str
    family: str
    fold: str | None  # None for a plain bench run (no study fields)
    folder: Path
    summary: dict


def _safe_name(text: str) -> str:  # as segdeploy.xai.gradcam names its files
    return re.sub(r"[^\w.-]+", "_", str(text))


def find_cams(folders: Iterable[Path], rows: Sequence[StudyRow], chosen_cells: set) -> tuple[list[CamSet], list[str]]:
    """One ``CamSet`` per (dataset, model): the lowest fold of the reported lr whose run has a ``cam.json``.
    Returns the sets and notes about ``cam.json`` files that match no reported run."""
    by_run = {}
    for r in rows:
        if r.run and r.in_domain:
            by_run.setdefault(str(Path(r.run).resolve()), r)
    found: dict[tuple, CamSet] = {}
    notes = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("cam.json")):
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                notes.append(f"{path}: unreadable ({e})")
                continue
            row = by_run.get(str(Path(str(summary.get("run", ""))).resolve()))
            if row is None:
                notes.append(f"{path}: its run {summary.get('run')} is not in the results")
                continue
            if row.cell not in chosen_cells:
                continue
            key = (row.train_dataset, row.model)
            current = found.get(key)
            fold = row.fold if row.in_study else None
            if current is None or fold_order(fold) < fold_order(current.fold):
                found[key] = CamSet(row.train_dataset, row.model, row.family, fold, path.parent, summary)
    return [found[k] for k in sorted(found)], notes


def _thumbnail(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((TILE_PX, TILE_PX))
        return np.asarray(im)


def montage_tiles(cam: CamSet) -> list[tuple[np.ndarray, str]]:
    """Up to ``MAX_TILES`` worst images, each shown for its largest ground-truth class that has a map (a class the
    model predicts nowhere in the image has an all-zero map: nothing to show)."""
    worst = sorted((im for im in cam.summary.get("images", []) if im.get("selected_as") == "worst"),
                   key=lambda im: (im.get("dice", 1.0), im.get("id")))[:MAX_TILES]
    tiles = []
    for im in worst:
        classes = im.get("classes") or {}
        if not classes:
            continue
        def shown(c):
            share = classes[c].get("cam_energy_in_gt")
            return (share is not None and bool(np.isfinite(share)), classes[c].get("gt_area_fraction") or 0.0)
        name = max(classes, key=shown)
        path = cam.folder / f"{_safe_name(im['id'])}__{_safe_name(name)}.png"
        if not path.is_file():
            continue
        share = classes[name].get("cam_energy_in_gt")
        share_text = "-" if share is None or not np.isfinite(share) else f"{share:.0%}"
        tiles.append((_thumbnail(path), f"{im['id']} ({name})\nDice {im.get('dice', float('nan')):.2f} · "
                                        f"CAM in GT {share_text}"))
    return tiles


def cam_share_rows(cams: Sequence[CamSet]) -> tuple[list[str], list[list[str]]]:
    """One row per (dataset, model): the CAM energy inside the ground truth per class with the class's area share
    (every class any set names gets a column; "-" where a set has none)."""
    classes = list(dict.fromkeys(c for cam in cams for c in (cam.summary.get("class_means") or {})))
    header = ["dataset", "model", "family", "fold", "images"] + classes
    rows = []
    for cam in cams:
        means = cam.summary.get("class_means") or {}
        n = max((m.get("n_images") or 0 for m in means.values()), default=0)
        cells = []
        for c in classes:
            share, area = (means.get(c) or {}).get("cam_energy_in_gt"), (means.get(c) or {}).get("gt_area_fraction")
            cells.append("-" if share is None else f"{share:.0%}" + (f" ({area:.0%})" if area is not None else ""))
        rows.append([cam.dataset, cam.model, cam.family, "-" if cam.fold is None else str(cam.fold), str(n), *cells])
    return header, rows


def class_share_text(cam: CamSet) -> str:
    parts = []
    for name, means in (cam.summary.get("class_means") or {}).items():
        share, area = means.get("cam_energy_in_gt"), means.get("gt_area_fraction")
        if share is not None:
            parts.append(f"{name} {share:.0%} (GT area {area:.0%}, the share a uniform map would get)"
                         if area is not None else f"{name} {share:.0%}")
    return "; ".join(parts) or "no class present in the drawn images"
