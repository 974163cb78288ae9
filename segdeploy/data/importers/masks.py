"""``masks``: image files and mask files paired by name (Kvasir-SEG, CVC-ClinicDB, ISIC 2018 task 1, PH2, BUSI,
DRIVE, BKAI NeoPolyp, ...).

A file is a mask when it sits under ``--masks`` or, without it, when its name ends with a mask suffix
(``_segmentation``, ``_mask``, ``_mask_1``, ``_manual1``, ``_lesion``, ``_gt``, ...) or a folder above it is named
like masks (``masks``, ``Ground Truth``, ``train_gt``, ``labels``, ...). Image and masks pair by the file name
without that suffix (or group 1 of ``--pair-regex``); several masks of one image are merged (BUSI's ``_mask_1``).
Masks are decoded as described in :func:`segdeploy.data.importers.readers.decode_mask`, in one encoding for the
whole data set (:func:`decide_encoding`): judged one file at a time, a 3-class index mask with a 255 "ignore"
border read as binary, its classes lost.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.data.importers import register_importer
from segdeploy.data.importers.base import ImportOptions, Item, Pair, Plan, Skipped, safe_id
from segdeploy.data.importers.readers import (IMAGE_FILE_EXTS, LOSSY_EXTS, SMALL_INDEX, Palette, as_image,
                                              decode_mask, ext_of, read_2d, stem_of)
from segdeploy.errors import SegdeployError

MASK_SUFFIX = re.compile(r"[_ -](segmentation|mask(_\d+)?|manual\d*|lesion|gt|label|labels|annotation)$", re.I)
MASK_FOLDER = re.compile(r"(^|[^a-z])(masks?|gt|ground[ _-]?truth|labels?|annotations?|segmentations?|manual)"
                         r"([^a-z]|$)", re.I)


def _hidden(path: Path, src: Path) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path.relative_to(src).parts)


def _sub(src: Path, sub: str | None, flag: str) -> Path | None:
    """``sub`` inside ``src``, or inside the folder ``src`` wraps (an archive's single top-level folder)."""
    if sub is None:
        return None
    root = src
    while True:
        if (root / sub).is_dir():
            return root / sub
        entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir():
            raise SegdeployError(f"{flag} {sub}: no such folder inside the source.", path=src,
                                 fix=f"give {flag} relative to the source folder (or the zip's top level).")
        root = entries[0]


@register_importer("masks")
def scan(src: Path, opts: ImportOptions) -> Plan:
    palette = Palette.parse(opts.palette) if opts.palette else None
    images_root, masks_root = _sub(src, opts.images, "--images"), _sub(src, opts.masks, "--masks")
    pattern = re.compile(opts.pair_regex) if opts.pair_regex else None
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    skipped: list[Skipped] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        if _hidden(path, src) or ext_of(path) not in IMAGE_FILE_EXTS:
            continue
        is_mask = _is_mask(path, src, images_root, masks_root)
        if is_mask is None:
            continue
        stem = stem_of(path)
        if pattern is not None:
            m = pattern.search(stem)
            if m is None:
                skipped.append(Skipped(str(path), f"--pair-regex {opts.pair_regex!r} does not match the name."))
                continue
            key = m.group(1) if pattern.groups else m.group(0)
        else:
            key = MASK_SUFFIX.sub("", stem) if is_mask else stem
        (masks if is_mask else images).setdefault(key, []).append(path)

    items, ids = [], {}
    for key in sorted(images):
        files = images[key]
        if len(files) > 1:
            skipped += [Skipped(str(f), f"{len(files)} images share the name {key!r}; point --images at one "
                                        "folder or use --pair-regex.") for f in files]
            continue
        if key not in masks:
            skipped.append(Skipped(str(files[0]), f"no mask named {key!r} (+ a mask suffix) was found."))
            continue
        sid = safe_id(key)
        if sid in ids:
            skipped.append(Skipped(str(files[0]), f"its id {sid!r} is already taken by {ids[sid]}."))
            continue
        ids[sid] = files[0]
        items.append(Item(sources=(files[0], *masks[key]), group=sid,
                          load=_loader(sid, files[0], masks[key], opts, palette)))
    for key in sorted(set(masks) - set(images)):
        skipped += [Skipped(str(f), f"mask without an image named {key!r}.") for f in masks[key]]
    notes: list[str] = []
    encoding = "palette" if palette else opts.mask_encoding
    if opts.ignore_value is not None and encoding not in ("auto", "index"):
        raise SegdeployError(f"--ignore-value applies to class-index masks, not to --mask-encoding {encoding}.",
                             fix="leave out --ignore-value, or use --mask-encoding index.")
    if encoding in ("auto", "index"):
        mask_files = [p for it in items for p in it.sources[1:]]
        encoding = decide_encoding(_survey(mask_files), encoding, opts.ignore_value, root=src, notes=notes)
        for it in items:
            it.load = _loader(it.group, it.sources[0], list(it.sources[1:]), opts, palette, encoding)
    classes = opts.classes or (palette.names if palette else None)
    return Plan(name=src.name, classes=classes, items=items, skipped=skipped, notes=notes,
                meta={"source_format": "masks", "mask_encoding": encoding})


@dataclass
class MaskValues:
    """What one mask file holds, for deciding the data set's encoding."""
    path: Path
    values: np.ndarray | None  # its distinct values; None for a JPEG or float mask (no exact values)


def _survey(paths: list[Path]) -> list[MaskValues]:
    def one(path: Path) -> MaskValues | None:
        try:
            arr = read_2d(path, keep_palette_indices=True)
        except Exception:  # noqa: BLE001 -- the item's loader lists an unreadable file with its reason
            return None
        if arr.ndim == 3 and not (np.array_equal(arr[..., 0], arr[..., 1]) and
                                  np.array_equal(arr[..., 1], arr[..., 2])):
            return None  # a colour mask: its loader asks for --palette
        gray = arr[..., 0] if arr.ndim == 3 else arr
        exact = np.issubdtype(gray.dtype, np.integer) and ext_of(path) not in LOSSY_EXTS
        if not exact:
            return MaskValues(path, None)
        if gray.dtype in (np.uint8, np.uint16):  # a histogram is linear; np.unique sorts every pixel
            return MaskValues(path, np.flatnonzero(np.bincount(gray.ravel())))
        return MaskValues(path, np.unique(gray))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return [m for m in pool.map(one, paths) if m is not None]


def decide_encoding(masks: list[MaskValues], requested: str, ignore: int | None, *, root: Path,
                    notes: list[str]) -> str:
    """``index`` or ``binary`` for every mask of the data set (``requested``: auto or index).

    A mask holding values 2..63 is class indices; one holding only values from 64 up (0/255), many values
    (anti-aliased edges), or a JPEG mask, is binary; 0/1 and empty masks agree with either. A mask holding class
    indices and one value from 64 up (a 255 border) is refused, naming --ignore-value; index masks beside binary
    ones are refused as disagreeing, naming the files."""
    small, binary, ignore_like, ignored = [], [], {}, 0
    for m in masks:
        vals = m.values
        if vals is None:
            binary.append(m.path)
            continue
        if ignore is not None and ignore in vals:
            ignored += 1
            vals = vals[vals != ignore]
        lows, highs = vals[(vals > 0) & (vals < SMALL_INDEX)], vals[vals >= SMALL_INDEX]
        if len(lows) and len(highs) == 1:
            ignore_like.setdefault(int(highs[0]), []).append(m.path)
        elif len(highs):
            binary.append(m.path)
        elif len(lows) and lows.max() >= 2:
            small.append(m.path)
    if ignored:
        notes.append(f"mask value {ignore} (--ignore-value) in {ignored} masks imported as background")
    if ignore_like:
        v, paths = max(ignore_like.items(), key=lambda kv: len(kv[1]))
        raise SegdeployError(
            f"{len(paths)} masks hold class indices and the value {v} ({_few(paths, root)}): {v} reads as an "
            f"'ignore' label, not as a class.", path=root,
            fix=f"pass --ignore-value {v} to import it as background (or --mask-encoding binary if the masks "
                f"are foreground/background).")
    if requested == "index" or not binary:
        return "index"
    if not small:
        return "binary"
    raise SegdeployError(
        f"the masks disagree on their encoding: {len(small)} hold class indices 0..63 ({_few(small, root)}), "
        f"{len(binary)} hold values up to 255 or are JPEG ({_few(binary, root)}).", path=root,
        fix="give --mask-encoding index or binary for all of them (--ignore-value V for an ignore label), or "
            "correct the files.")


def _few(paths: list[Path], root: Path, n: int = 3) -> str:
    names = [p.relative_to(root).as_posix() if root in p.parents else str(p) for p in paths]
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _is_mask(path: Path, src: Path, images_root: Path | None, masks_root: Path | None) -> bool | None:
    """True/False, or None for a file outside --images/--masks when they are given."""
    if masks_root is not None and masks_root in path.parents:
        return True
    if images_root is not None:
        return False if images_root in path.parents else (None if masks_root is not None else _looks_mask(path, src))
    if masks_root is not None:
        return False
    return _looks_mask(path, src)


def _looks_mask(path: Path, src: Path) -> bool:
    return bool(MASK_SUFFIX.search(stem_of(path))) or any(MASK_FOLDER.search(p)
                                                          for p in path.relative_to(src).parts[:-1])


def _loader(sid: str, image_path: Path, mask_paths: list[Path], opts: ImportOptions, palette: Palette | None,
            encoding: str | None = None):
    def load():
        raw = read_2d(image_path)
        image = as_image(raw, window=opts.window, percentiles=opts.percentiles)
        merged = None
        for mp in mask_paths:
            enc = encoding or opts.mask_encoding
            keep_indices = palette is None and enc in ("auto", "index")
            m = decode_mask(read_2d(mp, keep_palette_indices=keep_indices), encoding=enc,
                            lossy=ext_of(mp) in LOSSY_EXTS, palette=palette, tolerance=opts.tolerance, path=mp,
                            ignore=opts.ignore_value)
            if m.shape != image.shape[:2]:
                raise SegdeployError(f"mask is {m.shape[1]}x{m.shape[0]} but its image {image_path.name} is "
                                     f"{image.shape[1]}x{image.shape[0]} (WxH).", path=mp,
                                     fix="pair it with the right image (--pair-regex) or fix the file.")
            merged = m if merged is None else np.where(m > 0, m, merged)
        # a JPEG whose pixels are taken unchanged is copied, not re-encoded (a second lossy generation)
        lossless_copy = (ext_of(image_path) in LOSSY_EXTS and raw.dtype == np.uint8 and raw.ndim in (2, 3)
                         and opts.window is None and opts.percentiles is None)
        yield Pair(sid, image, merged, copy_from=image_path if lossless_copy else None)

    return load
