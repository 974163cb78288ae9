"""``masks``: image files and mask files paired by name (Kvasir-SEG, CVC-ClinicDB, ISIC 2018 task 1, PH2, BUSI,
DRIVE, BKAI NeoPolyp, ...).

A file is a mask when it sits under ``--masks`` or, without it, when its name ends with a mask suffix
(``_segmentation``, ``_mask``, ``_mask_1``, ``_manual1``, ``_lesion``, ``_gt``, ...) or a folder above it is named
like masks (``masks``, ``Ground Truth``, ``train_gt``, ``labels``, ...). Image and masks pair by the file name
without that suffix (or group 1 of ``--pair-regex``); several masks of one image are merged (BUSI's ``_mask_1``).
Masks are decoded as described in :func:`segdeploy.data.importers.readers.decode_mask`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from segdeploy.data.importers import register_importer
from segdeploy.data.importers.base import ImportOptions, Item, Pair, Plan, Skipped, safe_id
from segdeploy.data.importers.readers import (IMAGE_FILE_EXTS, LOSSY_EXTS, Palette, as_image, decode_mask, ext_of,
                                              read_2d, stem_of)
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
    classes = opts.classes or (palette.names if palette else None)
    return Plan(name=src.name, classes=classes, items=items, skipped=skipped,
                meta={"source_format": "masks", "mask_encoding": opts.mask_encoding if not palette else "palette"})


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


def _loader(sid: str, image_path: Path, mask_paths: list[Path], opts: ImportOptions, palette: Palette | None):
    def load():
        raw = read_2d(image_path)
        image = as_image(raw, window=opts.window, percentiles=opts.percentiles)
        merged = None
        for mp in mask_paths:
            keep_indices = palette is None and opts.mask_encoding in ("auto", "index")
            m = decode_mask(read_2d(mp, keep_palette_indices=keep_indices), encoding=opts.mask_encoding,
                            lossy=ext_of(mp) in LOSSY_EXTS, palette=palette, tolerance=opts.tolerance, path=mp)
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
