"""``nnunet``: an nnU-Net v2 raw data set, or the Medical Segmentation Decathlon's (nnU-Net v1) layout.

nnU-Net v2: ``dataset.json`` with ``labels`` (name -> value), ``channel_names`` and ``file_ending``;
``imagesTr/<case>_<CCCC><file_ending>`` (one file per input channel), ``labelsTr/<case><file_ending>``, and
optionally ``imagesTs``/``labelsTs``. MSD: ``dataset.json`` with ``labels`` (value -> name), ``modality`` and a
``training`` list of ``{"image", "label"}`` paths; several modalities are the 4th axis of one file.

3D volumes become 2D slices along ``--axis`` (ids ``<case>_slice_NNN``, the case is the group, so no patient spans
two splits); 2D files (``.png``, ``.tif``...) are one pair per case. Labelled ``imagesTs`` cases become the test
split (``split.json``), the training cases train/val by a seeded 80/20 split of cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segdeploy.data.importers import register_importer
from segdeploy.data.importers.base import SLICE_GROUP_REGEX, ImportOptions, Item, Pair, Plan, Skipped, safe_id
from segdeploy.data.importers.readers import (IMAGE_FILE_EXTS, VOLUME_EXTS, as_image, ext_of, label_array,
                                              label_on_image_grid, read_2d, read_volume, volume_pairs)
from segdeploy.errors import SegdeployError
from segdeploy.fileio import read_json


def find_root(src: Path, marker: str = "dataset.json") -> Path:
    if (src / marker).is_file():
        return src
    found = [p.parent for p in src.rglob(marker) if not any(x.startswith(".") for x in p.relative_to(src).parts)
             and len(p.relative_to(src).parts) <= 4]
    if len(found) != 1:
        raise SegdeployError(f"{'no' if not found else len(found)} {marker} found" +
                             (f" ({', '.join(str(f) for f in found[:3])})" if found else "") + ".", path=src,
                             fix="give the data set's own folder (the one holding dataset.json and imagesTr/).")
    return found[0]


@register_importer("nnunet")
def scan(src: Path, opts: ImportOptions) -> Plan:
    root = find_root(src)
    spec = read_json(root / "dataset.json")
    if not isinstance(spec, dict):
        raise SegdeployError("dataset.json must be a JSON object.", path=root / "dataset.json",
                             fix="use the data set's original dataset.json.")
    msd = isinstance(spec.get("training"), list) and "file_ending" not in spec
    classes = _classes(spec, root, msd)
    channel_names = spec.get("modality" if msd else "channel_names") or {"0": "image"}
    n_channels = len(channel_names)
    cases, skipped = (_msd_cases(spec, root) if msd else _v2_cases(spec, root, n_channels))
    two_d = bool(cases) and ext_of(cases[0][1][0]) in IMAGE_FILE_EXTS
    channels = opts.channels or ((0, 1, 2) if two_d and n_channels == 3 else (0,))
    if any(not 0 <= c < n_channels for c in channels):
        raise SegdeployError(f"--channels {channels}: the data set has {n_channels} ({channel_names}).",
                             path=root / "dataset.json", fix=f"choose from 0..{n_channels - 1}.")
    items, split, notes, first = [], {}, [], {}
    for case, images, label, subset in cases:
        sid = safe_id(case)
        if sid in first:
            skipped.append(Skipped(str(images[0]), f"its id {sid!r} is already taken by {first[sid]}."))
            continue
        first[sid] = images[0]
        items.append(Item(sources=(*images, label), group=sid,
                          load=_loader(sid, images, label, channels, msd, two_d, opts, notes)))
        split[sid] = subset
    notes += [f"input channel(s) {', '.join(str(channel_names.get(str(c), c)) for c in channels)} of "
             f"{n_channels} ({', '.join(map(str, channel_names.values()))})"]
    plan_split = None
    if "test" in split.values():
        plan_split = _train_val_test(split, two_d)
        notes.append("imagesTs/labelsTs cases are the test split (split.json)")
    return Plan(name=str(spec.get("name") or root.name), classes=classes, items=items, skipped=skipped,
                group_regex=None if two_d else SLICE_GROUP_REGEX, split=plan_split, notes=notes,
                meta={"source_format": "msd" if msd else "nnunet-v2",
                      "modality": ", ".join(map(str, channel_names.values())),
                      "description": spec.get("description")})


def _classes(spec: dict, root: Path, msd: bool) -> list[str]:
    labels = spec.get("labels")
    path = root / "dataset.json"
    example = '{"0": "background", "1": "liver"}' if msd else '{"background": 0, "liver": 1}'
    if labels is None:
        raise SegdeployError('dataset.json has no "labels".', path=path, fix=f'add "labels": {example}.')
    if not isinstance(labels, dict) or not labels:
        raise SegdeployError(f'dataset.json "labels" is {"an empty object" if labels == {} else type(labels).__name__} '
                             f'({json.dumps(labels)[:60]}); expected an object mapping '
                             f'{"label value -> class name" if msd else "class name -> label value"}.', path=path,
                             fix=f'write "labels": {example}.')
    by_value: dict[int, str] = {}
    for k, v in labels.items():
        name, value = (v, k) if msd else (k, v)
        if isinstance(value, list):
            raise SegdeployError(f"label {name!r} is a region (list of labels): region-based training has no "
                                 "class-index equivalent.", path=path,
                                 fix="import a copy of dataset.json whose labels are plain values.")
        if str(name).lower() == "ignore":
            raise SegdeployError("the data set uses an 'ignore' label (sparse annotation), which segdeploy's "
                                 "metrics cannot honour.", path=path, fix="use a densely annotated data set.")
        by_value[int(value)] = str(name)
    if sorted(by_value) != list(range(len(by_value))):
        raise SegdeployError(f"label values {sorted(by_value)} are not 0..{len(by_value) - 1}.", path=path,
                             fix="nnU-Net requires consecutive labels from 0; correct dataset.json.")
    return [by_value[i] for i in range(len(by_value))]


def _v2_cases(spec: dict, root: Path, n_channels: int):
    ending = spec.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise SegdeployError('dataset.json has no "file_ending" (e.g. ".nii.gz").', path=root / "dataset.json",
                             fix="add it, as nnU-Net v2 requires.")
    cases, skipped = [], []
    for images_dir, labels_dir, subset in (("imagesTr", "labelsTr", "train"), ("imagesTs", "labelsTs", "test")):
        if not (root / images_dir).is_dir():
            continue
        by_case: dict[str, dict[int, Path]] = {}
        for f in sorted((root / images_dir).iterdir()):
            if f.name.startswith(".") or not f.name.endswith(ending):
                continue
            base = f.name[: -len(ending)]
            case, _, chan = base.rpartition("_")
            if not (case and chan.isdigit() and len(chan) == 4):
                skipped.append(Skipped(str(f), f"not named <case>_<XXXX>{ending}."))
                continue
            by_case.setdefault(case, {})[int(chan)] = f
        for case, files in sorted(by_case.items()):
            label = root / labels_dir / f"{case}{ending}"
            if not label.is_file():
                if subset == "train":
                    skipped.append(Skipped(str(files[min(files)]), f"no label {labels_dir}/{label.name}."))
                continue  # imagesTs without labels is the usual unlabelled test set
            if sorted(files) != list(range(n_channels)):
                skipped.append(Skipped(str(files[min(files)]), f"channel files {sorted(files)}, dataset.json "
                                                               f"names {n_channels}."))
                continue
            cases.append((case, [files[c] for c in range(n_channels)], label, subset))
    if not (root / "imagesTr").is_dir():
        raise SegdeployError("no imagesTr/ folder.", path=root, fix="give the nnU-Net raw data set folder.")
    return cases, skipped


def _msd_cases(spec: dict, root: Path):
    cases, skipped = [], []
    for entry in spec["training"]:
        image, label = (root / entry.get("image", ""), root / entry.get("label", ""))
        if not image.is_file() or not label.is_file():
            skipped.append(Skipped(str(image), "image or label named in dataset.json is missing."))
            continue
        name = image.name
        case = name[: -len(ext_of(image))] if ext_of(image) in VOLUME_EXTS + IMAGE_FILE_EXTS else name
        cases.append((case, [image], label, "train"))
    return cases, skipped


def _loader(sid: str, images: list[Path], label: Path, channels: tuple[int, ...], msd: bool, two_d: bool,
            opts: ImportOptions, notes: list[str]):
    intensity = dict(window=opts.window, percentiles=opts.percentiles)

    def load():
        if two_d:
            arrays = [read_2d(images[c]) for c in channels]
            if len(channels) == 1:
                image = as_image(arrays[0], **intensity)
            else:
                image = np.stack([as_image(a, **intensity) for a in arrays], axis=-1)
            mask = label_array(read_2d(label, keep_palette_indices=True), label)
            yield Pair(sid, image, mask)
            return
        if msd:
            vol = read_volume(images[0])
            vol = vol[..., list(channels)] if vol.ndim == 4 else vol[..., None]
        else:
            vol = np.stack([read_volume(images[c]) for c in channels], axis=-1)
            vol = vol[:, :, :, 0, :] if vol.ndim == 5 else vol
        lab, note = label_on_image_grid(images[0], label, read_volume(label))
        if note:
            notes.append(note)
        for pid, img, msk in volume_pairs(sid, vol, lab, axis=opts.axis, path=label, **intensity):
            yield Pair(pid, img, msk)

    return load


def _train_val_test(subset: dict[str, str], two_d: bool) -> dict[str, str] | None:
    """Per-case subsets -> per-case train/val/test; the build maps slice ids through the case."""
    from segdeploy.data.splits import make_splits

    train_cases = sorted(c for c, s in subset.items() if s == "train")
    if len(train_cases) < 5:
        return None
    tv = make_splits(train_cases, seed=42, k=5, fold=0, group_regex=None, test_fraction=0.0)
    out = {c: "test" for c, s in subset.items() if s == "test"}
    out.update({c: s for s in ("train", "val") for c in tv[s]})
    return out
