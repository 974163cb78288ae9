"""``segdeploy data check`` / ``info``: read every file of a dataset folder and list every problem.

Unlike :func:`segdeploy.data.open_dataset` (cheap structural checks only), :func:`check_dataset` decodes each
image and mask, so truncated files, size mismatches and undeclared labels are found before training starts.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from segdeploy.data.folder import (GRAY_MODES, GROUPS_FILE, IMAGE_EXTS, META_FILE, SPLIT_FILE, SegDataset, list_files,
                                   parse_classes, read_image_array, read_mask_array)
from segdeploy.data.splits import compile_group_regex, group_of, split_file_problems
from segdeploy.errors import SegdeployError
from segdeploy.fileio import read_json

LOSSY_EXTS = (".jpg", ".jpeg")


@dataclass
class Problem:
    file: str  # the file (or folder) at fault
    message: str
    fix: str
    severity: str = "error"  # error | warning

    def as_dict(self) -> dict:
        return asdict(self)


def _map(fn: Callable, items: Iterable) -> list:
    # decoding is mostly in C with the GIL released, so threads use every core without pickling arrays
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def _check_meta(root: Path) -> tuple[list[Problem], int | None, str | None]:
    """Problems of meta.json, the number of declared classes and the group regex (None when unknown/invalid)."""
    path = root / META_FILE
    if not path.exists():
        return [Problem(str(path), "no meta.json: classes are inferred from the largest label found.",
                        'add meta.json with "classes": ["background", ...] (index = mask value).',
                        "warning")], None, None
    try:
        meta = read_json(path)
        classes = parse_classes(meta, path)
    except SegdeployError as e:
        return [Problem(str(path), e.message, e.fix or "repair meta.json.")], None, None
    regex = meta.get("group_regex")
    if regex is not None:
        try:
            compile_group_regex(regex, path=path)
        except SegdeployError as e:
            return [Problem(str(path), e.message, e.fix or "correct or remove group_regex.")], len(classes), None
    return [], len(classes), regex


def _check_image(path: Path) -> tuple[list[Problem], tuple[int, int] | None]:
    """Problems of one image and its (h, w) when readable."""
    try:
        with Image.open(path) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for damaged files
        return [Problem(str(path), f"cannot read image ({type(e).__name__}: {e}).",
                        "re-export the image from its source, or delete it and its mask.")], None
    if mode.startswith("I") or mode == "F":
        return [Problem(str(path), f"image is {mode} (more than 8 bits); it is scaled to 8 bits on loading.",
                        "save as 8-bit grayscale/RGB to control the intensity mapping.", "warning")], (h, w)
    return [], (h, w)


def _check_mask(path: Path, num_classes: int | None) -> tuple[list[Problem], np.ndarray | None]:
    problems = []
    if path.suffix.lower() in LOSSY_EXTS:
        problems.append(Problem(str(path), "mask is a JPEG: lossy compression alters label values at edges.",
                                "save masks as PNG.", "warning"))
    try:
        with Image.open(path) as im:
            im.load()
            mode, bands = im.mode, im.getbands()
        mask = read_mask_array(path)
    except SegdeployError as e:
        return problems + [Problem(str(path), e.message, e.fix or "replace the mask.")], None
    except Exception as e:
        return problems + [Problem(str(path), f"cannot read mask ({type(e).__name__}: {e}).",
                                   "re-export the mask from its source, or delete it and its image.")], None
    if len(bands) > 1:
        problems.append(Problem(str(path), f"mask is stored as {mode}; only its first channel is used.",
                                "save masks as single-channel 8-bit PNG.", "warning"))
    if num_classes is not None:
        bad = np.unique(mask[mask >= num_classes]).tolist()
        if bad:
            problems.append(Problem(str(path), f"label values {bad} are outside the {num_classes} declared classes "
                                               f"(0..{num_classes - 1}).",
                                    "remap these values to class indices, or add the classes to meta.json."))
    return problems, mask


def _check_pair(image: Path, mask: Path, num_classes: int | None) -> list[Problem]:
    problems, size = _check_image(image)
    mask_problems, mask_arr = _check_mask(mask, num_classes)
    problems += mask_problems
    if size is not None and mask_arr is not None and mask_arr.shape != size:
        problems.append(Problem(str(mask), f"mask is {mask_arr.shape[1]}x{mask_arr.shape[0]} but its image "
                                           f"{image.name} is {size[1]}x{size[0]} (WxH).",
                                "resize the mask with nearest-neighbour to the image size (or fix the pairing)."))
    return problems


def _check_splits(root: Path, ids: list[str]) -> list[Problem]:
    path = root / SPLIT_FILE
    if not path.exists():
        return []
    try:
        mapping = read_json(path)
    except SegdeployError as e:
        return [Problem(str(path), e.message, "repair split.json or delete it (a seeded k-fold split is used then).")]
    fix = 'map every id to "train", "val" or "test", and nothing else.'
    problems = [Problem(str(path), line + ".", fix) for line in split_file_problems(mapping, ids)]
    if not problems:
        present = set(mapping.values())
        for name in ("train", "val"):
            if name not in present:
                problems.append(Problem(str(path), f"no id is in the {name!r} split.", fix, "warning"))
    return problems


def _check_groups(root: Path, ids: list[str]) -> list[Problem]:
    """groups.json must map ids to names; a group that split.json puts on two sides is a leak."""
    path = root / GROUPS_FILE
    if not path.exists():
        return []
    try:
        groups = read_json(path)
    except SegdeployError as e:
        return [Problem(str(path), e.message, "repair groups.json or delete it.")]
    if not (isinstance(groups, dict) and all(isinstance(v, str) for v in groups.values())):
        return [Problem(str(path), "groups.json must map id -> group name (a string).",
                        "repair it, or re-create it with `segdeploy data dedupe --write-groups`.")]
    problems = []
    unknown = sorted(set(groups) - set(ids))
    if unknown:
        problems.append(Problem(str(path), f"{len(unknown)} ids in groups.json have no image/mask pair (e.g. "
                                           f"{', '.join(unknown[:3])}).", "remove them from groups.json.", "warning"))
    split_path = root / SPLIT_FILE
    mapping = read_json(split_path) if split_path.exists() else None
    if isinstance(mapping, dict):
        sides: dict[str, set] = {}
        for i, g in groups.items():
            if i in mapping:
                sides.setdefault(g, set()).add(mapping[i])
        leaks = sorted(g for g, s in sides.items() if len(s) > 1)
        if leaks:
            problems.append(Problem(str(split_path), f"{len(leaks)} groups of groups.json (e.g. near-duplicate "
                                                     f"sets: {', '.join(leaks[:3])}) span two splits.",
                                    "move each group's ids into one split (or delete split.json for a group-aware "
                                    "k-fold split).", "warning"))
    return problems


def check_dataset(path: str | Path) -> list[Problem]:
    """Every problem of a dataset folder, each naming its file and the fix."""
    root = Path(path)
    if not root.exists():
        return [Problem(str(root), "dataset folder not found.", "check the path (a folder with images/ and masks/).")]
    if not root.is_dir():
        return [Problem(str(root), "not a folder.", "give the dataset folder that holds images/ and masks/.")]
    if not any(root.iterdir()):
        return [Problem(str(root), "folder is empty.", "put images/<id>.png and masks/<id>.png (and meta.json) here.")]
    problems, num_classes, regex = _check_meta(root)
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            problems.append(Problem(str(root / sub), f"no {sub}/ folder.",
                                    f"create {sub}/ with one file per id ({sub}/<id>.png)."))
    if problems and any(not (root / s).is_dir() for s in ("images", "masks")):
        return problems
    images, masks = list_files(root / "images"), list_files(root / "masks")
    for sub in ("images", "masks"):
        for p in sorted((root / sub).iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_EXTS:
                problems.append(Problem(str(p), "not an image file; it is ignored.",
                                        f"remove it, or convert it to one of {', '.join(IMAGE_EXTS)}.", "warning"))
    if not images:
        problems.append(Problem(str(root / "images"), "images/ holds no image files.",
                                f"add images/<id> files ({', '.join(IMAGE_EXTS)})."))
    for files in [*images.values(), *masks.values()]:
        if len(files) > 1:
            problems.append(Problem(str(files[0]), f"{len(files)} files share the id {files[0].stem!r} "
                                                   f"({', '.join(f.name for f in files)}).", "keep one file per id."))
    for stem in sorted(set(images) - set(masks)):
        problems.append(Problem(str(images[stem][0]), "image has no mask.",
                                f"add masks/{stem}.png, or remove the image."))
    for stem in sorted(set(masks) - set(images)):
        problems.append(Problem(str(masks[stem][0]), "mask has no image.",
                                f"add images/{stem}.png (or .jpg), or remove the mask."))
    ids = sorted(set(images) & set(masks))
    for pair_problems in _map(lambda i: _check_pair(images[i][0], masks[i][0], num_classes), ids):
        problems += pair_problems
    problems += _check_splits(root, ids)
    problems += _check_groups(root, ids)
    if regex is not None:
        try:
            group_of(ids, regex)
        except SegdeployError as e:
            problems.append(Problem(str(root / META_FILE), e.message, e.fix or "correct group_regex."))
    return problems


def dataset_info(path: str | Path, *, name: str | None = None) -> dict:
    """Counts, image sizes, channels, intensities, class frequencies, groups and split counts of a structurally
    valid folder (decodes every image and mask)."""

    ds = SegDataset(path, name=name)

    def scan(i: str) -> tuple[tuple[int, int], str, np.ndarray, np.ndarray]:
        with Image.open(ds.image_path(i)) as im:
            mode = im.mode
        image = read_image_array(ds.image_path(i), ds.in_chans)
        hist = np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(image.shape[2])])
        return image.shape[:2], mode, np.bincount(ds.load_mask(i).ravel(), minlength=256), hist

    rows = _map(scan, ds.ids)
    sizes = np.array([r[0] for r in rows])
    modes: dict[str, int] = {}
    for _, mode, _, _ in rows:
        modes[mode] = modes.get(mode, 0) + 1
    counts = np.stack([r[2] for r in rows])
    pixels = counts.sum(axis=0)
    k = ds.num_classes
    info = {
        "name": ds.name, "root": str(ds.root), "title": ds.meta.get("name"),
        "classes": ds.classes, "classes_source": ds.classes_note,
        "counts": {"pairs": len(ds.ids), "empty_masks": int((counts[:, 1:].sum(axis=1) == 0).sum())},
        "image_size": {"min_hw": sizes.min(axis=0).tolist(), "max_hw": sizes.max(axis=0).tolist(),
                       "median_hw": np.median(sizes, axis=0).tolist(), **_size_distribution(sizes)},
        "channels": {"in_chans": ds.in_chans, "modes": dict(sorted(modes.items())),
                     "gray": sum(n for m, n in modes.items() if m in GRAY_MODES)},
        "intensity": _intensity(np.sum([r[3] for r in rows], axis=0), ds.in_chans),
        "class_pixel_fraction": {c: float(pixels[j] / pixels.sum()) for j, c in enumerate(ds.classes)},
        "images_per_class": {c: int((counts[:, j] > 0).sum()) for j, c in enumerate(ds.classes)},
        "empty_mask_ids": [i for i, r in zip(ds.ids, rows) if r[2][1:].sum() == 0][:20],
        "group_regex": ds.group_regex,
        "groups": _group_count(ds),
    }
    undeclared = [int(v) for v in np.nonzero(pixels[k:])[0] + k]
    if undeclared:
        info["undeclared_labels"] = undeclared
    try:
        info["splits"] = ds.split_info()
    except SegdeployError as e:
        info["splits"] = {"error": str(e)}
    return info


def _size_distribution(sizes: np.ndarray) -> dict:
    """The most common sizes and quartiles of the longer side: enough to choose --img-size / --resize-longer."""
    hw, n = np.unique(sizes, axis=0, return_counts=True)
    order = np.argsort(-n, kind="stable")[:5]
    longer = sizes.max(axis=1)
    return {"distinct_sizes": int(len(hw)), "common_hw": [[*hw[j].tolist(), int(n[j])] for j in order],
            "longer_side_quartiles": np.percentile(longer, [0, 25, 50, 75, 100]).tolist()}


def _intensity(hist: np.ndarray, channels: int) -> dict:
    """Per channel (as the model sees it: gray, or R, G, B): min, 1st/99th percentile, max, mean and std."""
    names = ["gray"] if channels == 1 else ["R", "G", "B"]
    values = np.arange(256, dtype=np.float64)
    out = {}
    for name, h in zip(names, hist):
        cdf = np.cumsum(h) / h.sum()
        nz = np.nonzero(h)[0]
        mean = float((h * values).sum() / h.sum())
        out[name] = {"min": int(nz.min()), "p1": int(np.searchsorted(cdf, 0.01)),
                     "p99": int(np.searchsorted(cdf, 0.99)), "max": int(nz.max()), "mean": round(mean, 2),
                     "std": round(float(np.sqrt((h * (values - mean) ** 2).sum() / h.sum())), 2)}
    return out


def _group_count(ds: SegDataset) -> dict:
    try:
        groups = group_of(ds.ids, ds.group_regex, ds.groups)
    except SegdeployError as e:
        return {"error": str(e)}
    return {"count": len(set(groups.values())), "by": (["group_regex"] if ds.group_regex else []) +
            (["groups.json"] if ds.groups else []) or ["id"]}


def summarize(problems: list[Problem]) -> dict[str, int]:
    return {s: sum(p.severity == s for p in problems) for s in ("error", "warning")}

