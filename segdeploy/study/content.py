"""A study's datasets by content: each is fingerprinted when the study is planned, and a changed one is refused on
the next run.

Why: a study runs for hours or days and resumes where it stopped. If images are added or deleted in between, the
folds trained later split other images (a later fold's test set can hold an earlier fold's training images) and the
fold means mix test sets, while every row looks fine. So ``DIR/datasets.json`` keeps each dataset's fingerprint
(:mod:`segdeploy.data.fingerprint`: ids and file digests, re-read only where size or mtime changed) and
``plan.json`` its sha256. A dataset that differs on the next run is refused, naming what changed, unless
``--force``: then the cells trained on it are redone (folders removed, rows dropped), and the cells scored on it as a
cross-dataset target keep their models but are benchmarked again.
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.data.fingerprint import Fingerprint, content_fingerprint
from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json, read_json

DATASETS = "datasets.json"


def study_datasets(config) -> list[str]:
    """Every dataset a study reads: its training datasets, then its cross-dataset targets."""
    return list(dict.fromkeys([*config.datasets, *(c.target for c in config.cross)]))


def survey(study_dir: Path, config, *, planned: dict | None, force: bool) -> tuple[dict[str, Fingerprint], list[str]]:
    """Today's fingerprints and the datasets that changed since ``planned`` (the previous plan's ``datasets``; None
    for a new study or a plan written before datasets were fingerprinted). Raises on a change unless ``force``."""
    from segdeploy.data import open_dataset

    path = study_dir / DATASETS
    before: dict = read_json(path) if path.is_file() and planned else {}
    now: dict[str, Fingerprint] = {}
    changed: list[str] = []
    for spec in study_datasets(config):
        previous = Fingerprint.from_json(before.get(spec))
        now[spec] = content_fingerprint(open_dataset(spec), previous)
        recorded = (planned or {}).get(spec, {}).get("sha256")
        if recorded and recorded != now[spec].sha256:
            changed.append(spec)
            if not force:
                what = previous.changes(now[spec]) if previous and previous.sha256 == recorded else "its files differ"
                if spec in config.datasets:
                    harm, redo = ("the cells done so far were trained and tested on other splits than the rest "
                                  "would be"), "trained"
                else:
                    harm, redo = "the cross-dataset rows so far scored other images", "benchmarked"
                raise SegdeployError(f"dataset {spec} changed since this study was planned ({what}): {harm}.",
                                     path=config.path, fix=f"restore the folder as it was, or pass --force to redo "
                                                           f"the cells {redo} on it (their rows are dropped).")
    return now, changed


def record(study_dir: Path, fingerprints: dict[str, Fingerprint]) -> dict[str, dict]:
    """Write ``DIR/datasets.json``; return plan.json's ``datasets`` (sha256 and image count per dataset)."""
    atomic_write_json(study_dir / DATASETS, {spec: fp.to_json() for spec, fp in fingerprints.items()})
    return {spec: {"sha256": fp.sha256, "n_images": len(fp.ids)} for spec, fp in fingerprints.items()}
