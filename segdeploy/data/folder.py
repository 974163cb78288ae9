"""Dataset folders and the dataset registry.

The one layout every dataset uses::

    ROOT/
      images/<id>.png|jpg|jpeg|bmp|tif|tiff   grayscale or RGB, 8-bit
      masks/<id>.png                           8-bit, pixel value = class index, 0 = background
      meta.json                                {"classes": [...], "name": ..., "group_regex": ...} (optional)
      split.json                               {id: "train" | "val" | "test"} (optional)
      groups.json                              {id: group} (optional; e.g. near-duplicates found on import)

``open_dataset(spec)`` takes such a folder or a registered name (``synthetic``, ``synthetic:48``). Opening
does only cheap structural checks (folders exist, every image has a mask); ``segdeploy data check`` reads
every file.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from segdeploy.data.class_map import ClassMap
from segdeploy.data.splits import SPLIT_NAMES, compile_group_regex, make_splits, splits_from_mapping
from segdeploy.errors import SegdeployError
from segdeploy.fileio import read_json

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
META_FILE = "meta.json"
SPLIT_FILE = "split.json"
GROUPS_FILE = "groups.json"

_REGISTRY: dict[str, Callable[..., Path]] = {}
# modules that register built-in datasets; imported on first lookup so importing this module stays cheap
_BUILTIN_MODULES = ("segdeploy.data.synthetic",)
_builtins_loaded = False


def register_dataset(name: str) -> Callable:
    """Register a factory that returns (creating it if needed) a dataset folder.

    The spec ``name`` calls ``factory()``; ``name:ARG`` calls ``factory(ARG)`` (e.g. ``synthetic:48``).
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"dataset names are lower-case identifiers, got {name!r}")

    def deco(fn: Callable[..., Path]) -> Callable[..., Path]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)
        _builtins_loaded = True


def resolve_spec(spec: str | Path) -> tuple[Path, str]:
    """(folder, display name) for a spec, without validating the folder.

    A registered name wins over a same-named folder in the working directory; write ``./synthetic`` to mean
    the folder.
    """
    text = str(spec)
    _load_builtins()
    name, _, arg = text.partition(":")
    if isinstance(spec, str) and name in _REGISTRY and os.sep not in text and "/" not in text:
        factory = _REGISTRY[name]
        root = factory(arg) if arg else factory()
        return Path(root), text
    root = Path(text).expanduser()
    return root, root.resolve().name


def list_files(folder: Path) -> dict[str, list[Path]]:
    """stem -> files with a supported image extension (more than one file per stem is a problem)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS:
            out.setdefault(p.stem, []).append(p)
    return out


def parse_classes(meta: object, path: Path) -> list[str]:
    """The class list of a meta.json, or SegdeployError saying what is wrong with it."""
    fix = 'write "classes": ["background", "<class 1>", ...] (index = mask pixel value) into meta.json.'
    if not isinstance(meta, dict):
        raise SegdeployError("meta.json must be a JSON object.", path=path, fix=fix)
    classes = meta.get("classes")
    if classes is None:
        raise SegdeployError('meta.json has no "classes".', path=path, fix=fix)
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)):
        raise SegdeployError(f'"classes" must be a list of at least two names, got {classes!r}.', path=path, fix=fix)
    if len(set(classes)) != len(classes):
        raise SegdeployError(f'"classes" has duplicate names: {classes!r}.', path=path, fix=fix)
    return list(classes)


def read_mask_array(path: Path) -> np.ndarray:
    """A mask file as HxW uint8 class indices. RGB masks are accepted only when all channels are equal."""
    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im)
    if arr.ndim == 3:
        # RGB(A): every colour channel must agree; LA: the alpha channel is not a colour, ignore it
        colour = range(1, 3) if arr.shape[2] >= 3 else range(0)
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in colour):
            raise SegdeployError("mask has colour channels that differ; masks must hold one class index per pixel.",
                                 path=path, fix="convert the colours to class indices and save as 8-bit grayscale PNG.")
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise SegdeployError(f"mask values {int(arr.min())}..{int(arr.max())} do not fit 8 bits.", path=path,
                                 fix="store class indices 0..K-1 in an 8-bit PNG.")
        arr = arr.astype(np.uint8)
    return arr


def read_image_array(path: Path, channels: int) -> np.ndarray:
    """An image file as HxWxC uint8 with C = ``channels`` (1: grayscale, 3: RGB)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # high bit depth: scale the full range of the file's type to 8 bits rather than clip
            arr = np.asarray(im).astype(np.float64)
            top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            gray = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
            arr = gray[..., None] if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
        else:
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass
class Sample:
    id: str
    image: np.ndarray  # HxWxC uint8, C == dataset.in_chans
    mask: np.ndarray  # HxW uint8 class indices


class SegDataset:
    """A validated dataset folder: ids, classes, per-id loading and train/val/test splits."""

    def __init__(self, root: str | Path, name: str | None = None, *, class_map=None):
        self.root = Path(root)
        self.class_map = None  # a ResolvedClassMap once a class map is applied
        problems = structure_problems(self.root)
        if problems:
            raise SegdeployError(" ".join(problems), path=self.root,
                                 fix=f"run `segdeploy data check {self.root}` for the full list of problems.")
        self.meta: dict = self._read_meta()
        self.name = name or self.root.resolve().name
        self._images = {stem: files[0] for stem, files in list_files(self.root / "images").items()}
        self._masks = {stem: files[0] for stem, files in list_files(self.root / "masks").items()}
        self.ids: list[str] = sorted(self._images)
        self.group_regex: str | None = self.meta.get("group_regex")
        if (self.root / META_FILE).exists():  # a meta.json without valid classes is an error, not a fallback
            self.classes: list[str] = parse_classes(self.meta, self.root / META_FILE)
            self.classes_inferred = False
        else:
            top = max(int(self.load_mask(i).max()) for i in self.ids)
            self.classes = ["background"] + [f"class_{c}" for c in range(1, max(top, 1) + 1)]
            self.classes_inferred = True
        self.groups: dict[str, str] | None = self._read_groups()
        self._split_cache: dict[tuple, dict[str, list[str]]] = {}
        self.source_classes: list[str] = self.classes
        if class_map is not None:
            self._apply_class_map(class_map)

    def with_class_map(self, class_map) -> SegDataset:
        """This dataset seen through a class map (``segdeploy.data.class_map``): classes and masks remapped."""
        import copy

        view = copy.copy(self)
        view._apply_class_map(class_map)
        return view

    def _apply_class_map(self, class_map) -> None:
        if self.class_map is not None:
            raise SegdeployError("a class map is already applied to this dataset.", path=self.root,
                                 fix="give one --class-map, written against the dataset's own labels.")
        cmap = ClassMap.parse(class_map)
        self.class_map = cmap.resolve(self.source_classes, path=self.root)
        self.class_map_text = cmap.text
        self.classes = self.class_map.classes

    def __repr__(self) -> str:
        return (f"SegDataset({self.name!r}, root={str(self.root)!r}, {len(self.ids)} ids, classes={self.classes}, "
                f"in_chans={self.in_chans})")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def classes_note(self) -> str:
        if self.class_map is not None:
            return f"classes mapped from {', '.join(self.source_classes)} ({self.class_map.describe()})"
        if self.classes_inferred:
            return (f"classes inferred from the masks (no meta.json classes): background + class_1..class_"
                    f"{self.num_classes - 1}")
        return "classes from meta.json"

    @cached_property
    def in_chans(self) -> int:
        """1 when every image is grayscale, else 3 (grayscale images are then replicated to RGB).

        Reads only the file headers.
        """
        for i in self.ids:
            with Image.open(self._images[i]) as im:
                if im.mode not in GRAY_MODES:
                    return 3
        return 1

    def _read_meta(self) -> dict:
        path = self.root / META_FILE
        if not path.exists():
            return {}
        meta = read_json(path)
        if not isinstance(meta, dict):
            raise SegdeployError("meta.json must be a JSON object.", path=path,
                                 fix=f"run `segdeploy data check {self.root}`.")
        regex = meta.get("group_regex")
        if regex is not None:
            compile_group_regex(regex, path=path)
        return meta

    def _read_groups(self) -> dict[str, str] | None:
        path = self.root / GROUPS_FILE
        if not path.exists():
            return None
        groups = read_json(path)
        if not (isinstance(groups, dict) and all(isinstance(v, str) for v in groups.values())):
            raise SegdeployError("groups.json must map id -> group name (a string).", path=path,
                                 fix="repair it, or delete it and re-run `segdeploy data dedupe --write-groups`.")
        return groups

    def image_path(self, id: str) -> Path:
        return self._images[id]

    def mask_path(self, id: str) -> Path:
        return self._masks[id]

    def load_mask(self, id: str) -> np.ndarray:
        path = self._masks[id]
        try:
            mask = read_mask_array(path)
            return mask if self.class_map is None else self.class_map.apply(mask)
        except (OSError, ValueError, SyntaxError) as e:
            raise SegdeployError(f"cannot read mask ({e}).", path=path,
                                 fix=f"run `segdeploy data check {self.root}` and replace the file.") from e

    def load(self, id: str) -> Sample:
        if id not in self._images:
            raise SegdeployError(f"no sample with id {id!r}.", path=self.root, fix="use one of dataset.ids.")
        path = self._images[id]
        try:
            image = read_image_array(path, self.in_chans)
        except (OSError, ValueError, SyntaxError) as e:
            raise SegdeployError(f"cannot read image ({e}).", path=path,
                                 fix=f"run `segdeploy data check {self.root}` and replace the file.") from e
        mask = self.load_mask(id)
        top = int(mask.max()) if mask.size else 0
        if top >= self.num_classes:  # would index past the logits: wrong scores or a crash in every consumer
            raise SegdeployError(f"mask holds class index {top}, but the dataset has {self.num_classes} classes "
                                 f"({', '.join(self.classes)}).", path=self._masks[id],
                                 fix=f"correct the mask, or list every class in meta.json \"classes\" "
                                     f"(segdeploy data check {self.root}).")
        if mask.shape != image.shape[:2]:
            raise SegdeployError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                 f"{image.shape[1]}x{image.shape[0]} (WxH).", path=self._masks[id],
                                 fix=f"run `segdeploy data check {self.root}` and fix the pair.")
        return Sample(id=id, image=image, mask=mask)

    # -- splits ----------------------------------------------------------------------------------------------

    def _split_file(self) -> dict[str, str] | None:
        path = self.root / SPLIT_FILE
        return read_json(path) if path.exists() else None

    def _splits(self, seed: int, k: int, fold: int, group_regex: str | None,
                use_split_file: bool) -> tuple[dict[str, list[str]], dict]:
        regex = group_regex if group_regex is not None else self.group_regex
        mapping = self._split_file() if use_split_file else None
        if mapping is not None:
            key = ("file",)
            info = {"method": "split.json", "seed": None, "k": None, "fold": None, "group_regex": regex}
        else:
            key = ("kfold", seed, k, fold, regex)
            info = {"method": "grouped-kfold", "seed": seed, "k": k, "fold": fold, "group_regex": regex,
                    "test_fraction": 0.2}
            if self.groups is not None:
                info["groups_file"] = GROUPS_FILE
        if key not in self._split_cache:
            if mapping is not None:
                self._split_cache[key] = splits_from_mapping(mapping, self.ids, path=self.root / SPLIT_FILE)
            else:
                try:
                    self._split_cache[key] = make_splits(self.ids, seed=seed, k=k, fold=fold, group_regex=regex,
                                                         groups=self.groups)
                except SegdeployError as e:  # a regex from meta.json: name the file it came from
                    if e.path is None and group_regex is None and regex is not None:
                        e.path = str(self.root / META_FILE)
                    raise
        return self._split_cache[key], info

    def split(self, name: str, *, seed: int = 42, k: int = 5, fold: int = 0, group_regex: str | None = None,
              use_split_file: bool = True) -> list[str]:
        """Sorted ids of split ``name`` (train/val/test).

        ``split.json`` decides when present and ``use_split_file``; otherwise a seeded, group-aware k-fold split
        (see :func:`segdeploy.data.splits.make_splits`). ``group_regex=None`` uses meta.json's ``group_regex``.
        """
        if name not in SPLIT_NAMES:
            raise SegdeployError(f"unknown split {name!r}.", fix=f"use one of {', '.join(SPLIT_NAMES)}.")
        splits, _ = self._splits(seed, k, fold, group_regex, use_split_file)
        return list(splits[name])

    def split_info(self, *, seed: int = 42, k: int = 5, fold: int = 0, group_regex: str | None = None,
                   use_split_file: bool = True) -> dict:
        """How the splits were made, for recording in a checkpoint (same arguments as :meth:`split`)."""
        splits, info = self._splits(seed, k, fold, group_regex, use_split_file)
        return {**info, "counts": {s: len(splits[s]) for s in SPLIT_NAMES}}


def structure_problems(root: Path) -> list[str]:
    """Cheap structural problems of a dataset folder (no file is decoded)."""
    if not root.is_dir():
        return ["dataset folder not found." if not root.exists() else "not a folder."]
    missing = [d for d in ("images", "masks") if not (root / d).is_dir()]
    if missing:
        return [f"no {' or '.join(m + '/' for m in missing)} folder (expected images/<id>.png and masks/<id>.png)."]
    images, masks = list_files(root / "images"), list_files(root / "masks")
    problems = []
    if not images:
        problems.append("images/ holds no image files.")
    dupes = sorted(s for d in (images, masks) for s, files in d.items() if len(files) > 1)
    if dupes:
        problems.append(f"{len(dupes)} ids have more than one file ({_few(dupes)}).")
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        problems.append(f"{len(no_mask)} images have no mask ({_few(no_mask)}).")
    no_image = sorted(set(masks) - set(images))
    if no_image:
        problems.append(f"{len(no_image)} masks have no image ({_few(no_image)}).")
    return problems


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n else "")


def open_dataset(spec: str | Path, *, class_map=None) -> SegDataset:
    """A dataset from a folder path or a registered name (``synthetic``, ``synthetic:N``), seen through
    ``class_map`` when given (inline ``"polyp=1,2"``, a JSON file, or a run's recorded map)."""
    root, name = resolve_spec(spec)
    if not root.exists() and isinstance(spec, str) and "/" not in spec and os.sep not in spec:
        raise SegdeployError(f"dataset {spec!r} is neither a folder nor a registered dataset.", path=root,
                             fix=f"give a folder with images/ and masks/, or one of: {', '.join(list_datasets())}.")
    return SegDataset(root, name=name, class_map=class_map)

