"""The ids of a run's train/val/test splits, recorded at training time (``RUN_DIR/splits.json``).

Why: a seeded split is a permutation over the ids present *today*, so adding or deleting one image moves other
images between train and test, and a run would then be scored on images it was trained on (deleting one PH2
image after training put 16 of a run's 40 test images into what had been its training split). So training
writes the id lists once, before the first checkpoint, and ``model.json``'s ``split.ids_sha256`` seals each list;
``bench``, ``export`` (parity on test ids, INT8 calibration on train ids) and ``cam`` read them back through
``Run.split_ids``.

Which dataset is the run's: the one ``model.json`` names, *or any folder that holds the run's images*. A renamed
or copied folder gets another name, and matching by name alone gave it a fresh seeded split whose "test" images
were partly the run's training images. So training also records each id's pixel digest
(``segdeploy.data.fingerprint.pixel_digest``, in ``splits.json``'s ``pixels``, sealed by
``split.ids_sha256["pixels"]``), and a dataset of another name in which one of the run's recorded ids has the
recorded pixels is the run's dataset (a warning says so). Runs trained before pixel digests were recorded are
matched by name only, with a warning where the folder shares ids with the run's splits.

The rules, on the dataset the run was trained on:

- The recorded ids are used, in their recorded order, minus those the folder no longer has. Images added since
  training are in none of the run's splits and are never scored as its test images (a warning counts them).
- A recorded **test** id that is missing refuses the command (``SegdeployError`` naming the count and a few ids),
  unless ``allow_missing`` (``--allow-missing``): then the remaining test ids are scored with a warning, and the
  row's ``n_images`` says how many. Missing train/val ids (calibration, ``--int8-auto``) only warn: a smaller
  calibration set is not a leak.
- A ``splits.json`` that does not match the hashes in ``model.json`` (edited, or from another run), or that is
  missing while ``model.json`` names hashes, is refused.
- Runs trained before ids were recorded (no ``split.ids_sha256``) keep the old behaviour: the split is recomputed
  from the recorded seed over today's ids, with a warning that it may have moved.

On any other dataset (cross-dataset evaluation) the dataset's own split is used, as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from segdeploy.errors import SegdeployError, warn
from segdeploy.fileio import atomic_write_json, read_json

SPLITS_FILE = "splits.json"
SPLITS_SCHEMA = "segdeploy.splits/1"
SPLIT_NAMES = ("train", "val", "test")


def ids_sha256(ids: list[str]) -> str:
    """sha256 of an id list in its order, as compact JSON (ids are file stems: any character but ``/``)."""
    return hashlib.sha256(json.dumps(list(ids), ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _few(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f", ... ({len(ids) - n} more)" if len(ids) > n else "")


def pixels_sha256(pixels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(pixels, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_splits(run_dir: str | Path, splits: dict[str, list[str]], *, dataset) -> dict[str, str]:
    """Write ``RUN_DIR/splits.json`` (atomically): the ids of each split of ``dataset`` (a ``SegDataset``) and each
    id's pixel digest; return the seals for ``model.json``'s ``split.ids_sha256`` (``{split: sha256}`` and
    ``pixels``). A ``dataset`` given by name only (no images to read) records no pixel digests."""
    from segdeploy.data.fingerprint import PIXELS_METHOD, pixel_digests

    lists = {name: list(splits[name]) for name in SPLIT_NAMES}
    seals = {name: ids_sha256(ids) for name, ids in lists.items()}
    record: dict = {"schema": SPLITS_SCHEMA, "dataset": getattr(dataset, "name", dataset), **lists}
    if not isinstance(dataset, str):
        pixels = pixel_digests({i: dataset.image_path(i) for name in SPLIT_NAMES for i in lists[name]})
        record["pixels"] = {"method": PIXELS_METHOD, "sha256": pixels}
        seals["pixels"] = pixels_sha256(pixels)
    atomic_write_json(Path(run_dir) / SPLITS_FILE, record)
    return seals


def record_splits(run_dir: str | Path, splits: dict[str, list[str]], *, dataset, resume: bool) -> dict[str, str]:
    """Training's side: a new run writes its ids (``dataset``: the ``SegDataset``); a resumed one must still have
    the ids it started with (otherwise the folder changed mid-run and validation would now score other images)."""
    path = Path(run_dir) / SPLITS_FILE
    if resume and path.is_file():
        recorded = _read(path)
        moved = [name for name in SPLIT_NAMES if recorded[name] != list(splits[name])]
        if moved:
            raise SegdeployError(f"the dataset folder changed since this run started: its {', '.join(moved)} "
                                 f"split(s) are no longer the ids recorded in {SPLITS_FILE}.", path=path,
                                 fix="restore the dataset folder as it was, or train a new run into another --out.")
        seals = {name: ids_sha256(recorded[name]) for name in SPLIT_NAMES}
        pixels = _read_pixels(path)
        return seals if pixels is None else {**seals, "pixels": pixels_sha256(pixels)}
    return write_splits(run_dir, splits, dataset=dataset)


def _read(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if not (isinstance(data, dict) and all(isinstance(data.get(n), list) for n in SPLIT_NAMES)):
        raise SegdeployError(f"not a split record (needs lists {', '.join(SPLIT_NAMES)}).", path=path,
                             fix="restore the splits.json that training wrote (copy the whole run folder).")
    return {name: [str(i) for i in data[name]] for name in SPLIT_NAMES}


def _read_pixels(path: Path) -> dict[str, str] | None:
    pixels = (read_json(path).get("pixels") or {}).get("sha256")
    return {str(k): str(v) for k, v in pixels.items()} if isinstance(pixels, dict) else None


def read_pixels(run) -> dict[str, str] | None:
    """The run's recorded ``{id: pixel digest}``, checked against ``model.json``; None for a run trained before
    they were recorded."""
    sealed = (run.meta.split.ids_sha256 or {}).get("pixels")
    if not sealed or read_splits(run) is None:
        return None
    path = Path(run.dir) / SPLITS_FILE
    pixels = _read_pixels(path)
    if pixels is None or pixels_sha256(pixels) != sealed:
        raise SegdeployError("the images' pixel digests do not match the sha256 recorded in model.json (edited, or "
                             "from another run).", path=path,
                             fix="restore the run's splits.json (copy the whole run folder), or retrain.")
    return pixels


def read_splits(run) -> dict[str, list[str]] | None:
    """The run's recorded ``{split: ids}``, checked against ``model.json``; None for a run without a record."""
    sealed = run.meta.split.ids_sha256
    path = Path(run.dir) / SPLITS_FILE
    if not sealed:
        return None
    fix = ("restore the run's splits.json (copy the whole run folder), or retrain; removing split.ids_sha256 from "
           "model.json falls back to a recomputed split whose test images may have been training images.")
    if not path.is_file():
        raise SegdeployError(f"model.json records the ids of the run's splits, but {SPLITS_FILE} is missing.",
                             path=path, fix=fix)
    recorded = _read(path)
    changed = [n for n in SPLIT_NAMES if sealed.get(n) != ids_sha256(recorded[n])]
    if changed:
        raise SegdeployError(f"the {', '.join(changed)} ids do not match the sha256 recorded in model.json "
                             "(edited, or from another run).", path=path, fix=fix)
    return recorded


def trained_on(run, dataset) -> bool:
    """Whether ``dataset`` is the run's training dataset: by the name ``model.json`` records, or by content (one of
    the run's recorded ids with its recorded pixels, whatever the folder is called now)."""
    if dataset.name in run.meta.dataset.names():
        return True
    recorded = read_splits(run)
    if recorded is None:
        warn(f"run {run.name} records neither its split ids nor its images' digests (trained before they were "
             f"recorded): dataset {dataset.name} is taken to be another dataset because its name differs from "
             f"{run.meta.dataset.name or run.meta.dataset.spec}; if it is a copy of the training folder, its split "
             "may hold training images. Retrain to record them.", path=run.dir)
        return False
    have = set(dataset.ids)
    shared = [i for name in SPLIT_NAMES for i in recorded[name] if i in have]  # train ids first
    pixels = read_pixels(run)
    if pixels is None:
        if shared:
            warn(f"dataset {dataset.name} has {len(shared)} of the ids recorded for run {run.name}'s splits "
                 f"({_few(shared)}), but the run records no pixel digests (trained before they were recorded), so "
                 "it is matched by name only and scored on its own split, which may hold the run's training "
                 "images. Retrain to record them.", path=run.dir)
        return False
    match = _first_same_image(dataset, [i for i in shared if i in pixels], pixels)
    if match is None:
        return False
    warn(f"dataset {dataset.name} holds run {run.name}'s images (e.g. {match}, pixel for pixel) under another name "
         f"than {run.meta.dataset.name or run.meta.dataset.spec}: it is scored as the run's training dataset, on "
         "its recorded splits.", path=dataset.root)
    return True


def _first_same_image(dataset, ids: list[str], pixels: dict[str, str], chunk: int = 32) -> str | None:
    """The first of ``ids`` whose image in ``dataset`` has the recorded pixels (decoding a chunk at a time: a copy
    of the training folder matches at once; another dataset that reuses the ids is read through once)."""
    from concurrent.futures import ThreadPoolExecutor

    from segdeploy.data.fingerprint import pixel_digest

    def digest(i: str) -> str | None:
        try:
            return pixel_digest(dataset.image_path(i))
        except (OSError, ValueError, SyntaxError):  # unreadable: not the run's image (scoring it reports why)
            return None

    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        with ThreadPoolExecutor(max_workers=4) as pool:
            digests = dict(zip(part, pool.map(digest, part)))
        same = next((i for i in part if digests[i] == pixels[i]), None)
        if same is not None:
            return same
    return None


def split_ids(run, dataset, split: str, *, allow_missing: bool = False) -> list[str]:
    """Ids of ``split`` ("train", "val", "test" or "all") of ``dataset`` for ``run`` (the rules above)."""
    if split == "all":
        return list(dataset.ids)
    if split not in SPLIT_NAMES:
        raise SegdeployError(f"unknown split {split!r}.", fix=f"use one of {', '.join(SPLIT_NAMES)} or all.")
    if not trained_on(run, dataset):
        ids = dataset.split(split)
    else:
        recorded = read_splits(run)
        ids = _recomputed(run, dataset, split) if recorded is None else _present(run, dataset, recorded, split,
                                                                                  allow_missing)
    if not ids:
        raise SegdeployError(f"split {split!r} of dataset {dataset.name} is empty.", path=dataset.root,
                             fix="choose another split, or check the dataset's split.json (segdeploy data info).")
    return ids


def _present(run, dataset, recorded: dict[str, list[str]], split: str, allow_missing: bool) -> list[str]:
    have = set(dataset.ids)
    wanted = recorded[split]
    missing = [i for i in wanted if i not in have]
    if missing:
        what = (f"{len(missing)} of the run's {len(wanted)} recorded {split} images are no longer in dataset "
                f"{dataset.name} ({_few(missing)})")
        if split == "test" and not allow_missing:
            raise SegdeployError(what + ": scoring the rest would report this run on another test set than its "
                                 "other rows.", path=dataset.root,
                                 fix=f"restore those images and masks, or pass --allow-missing to score the "
                                     f"remaining {len(wanted) - len(missing)} (the rows' n_images says how many).")
        warn(what + f"; using the remaining {len(wanted) - len(missing)}.", path=run.dir)
    if split == "test":
        known = {i for ids in recorded.values() for i in ids}
        new = sorted(have - known)
        if new:
            warn(f"{len(new)} images of dataset {dataset.name} were added after run {run.name} was trained "
                 f"({_few(new)}); they are in none of its recorded splits and are not scored.", path=run.dir)
    return [i for i in wanted if i in have]


def _recomputed(run, dataset, split: str) -> list[str]:
    ref = run.meta.dataset
    count = (f"; the folder had {ref.n_images} images at training and has {len(dataset.ids)} now, so the split "
             f"HAS moved" if ref.n_images is not None and ref.n_images != len(dataset.ids) else "")
    how = ("read from the dataset's split.json as it is today" if run.meta.split.method == "split.json" else
           f"recomputed from seed {run.meta.split.seed} over today's images")
    warn(f"run {run.name} records no split ids (trained before {SPLITS_FILE} existed): its {split} split is "
         f"{how} and may have moved if the folder changed since training{count}. Retrain to record the split.",
         path=run.dir)
    return dataset.split(split, **run.meta.split.split_args())
