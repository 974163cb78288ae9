"""What an importer returns: a plan of items to read, each giving 2D image/mask pairs, and what it skipped.

An importer only finds and decodes its format; :mod:`segdeploy.data.importers.build` writes the folder (atomic,
resized, de-duplicated, checked). Reading is lazy and per item, so an unreadable file costs one entry in the
skipped list, not the import.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEDUPE_MODES = ("group", "drop", "off")
MASK_ENCODINGS = ("auto", "index", "binary", "palette")


@dataclass
class ImportOptions:
    resize_longer: int | None = None  # shrink so the longer side is at most this (never enlarge)
    dedupe: str = "group"
    threshold: int | None = None  # Hamming bits for near-duplicates (None: segdeploy.data.dedupe's default)
    force: bool = False
    max_ratio: float = 100.0  # a zip member that declares more than this x its compressed size is refused
    max_unpacked_gb: float = 200.0  # an archive that declares more in total is refused before unpacking
    # masks format
    images: str | None = None  # sub-folder of SRC holding the images (default: found)
    masks: str | None = None  # sub-folder of SRC holding the masks (default: found)
    pair_regex: str | None = None  # group 1 of this regex on a file stem is the pairing key
    mask_encoding: str = "auto"
    palette: str | None = None  # "255,0,0=neoplastic;0,255,0=non_neoplastic"
    tolerance: float = 100.0  # RGB distance within which a colour counts as its palette entry
    classes: list[str] | None = None  # class names (index = label) where the format has none
    ignore_value: int | None = None  # a mask value that marks "ignore" (e.g. a 255 border), imported as background
    # volumes (nnunet, acdc, camus)
    axis: int = 2  # voxel axis to slice along (0, 1, 2 of the file's array; 2 = axial for most scans)
    window: tuple[float, float] | None = None  # fixed intensity window, e.g. CT (-160, 240)
    percentiles: tuple[float, float] | None = None  # per-volume clipping; default (0.5, 99.5) unless 8-bit
    skip_empty: bool = False  # leave out slices whose mask is all background
    channels: tuple[int, ...] | None = None  # nnunet: which input channels (1 -> gray, 3 -> RGB)


@dataclass
class Pair:
    """One 2D image/mask pair as it will be written."""
    id: str
    image: np.ndarray  # HxW or HxWx3 uint8
    mask: np.ndarray  # HxW uint8 class indices
    copy_from: Path | None = None  # a JPEG source that may be copied byte for byte when not resized


@dataclass
class Item:
    """A unit of reading (one image file + its masks, one volume + its labels); ``load`` yields its pairs."""
    sources: tuple[Path, ...]
    group: str
    load: Callable[[], Iterable[Pair]]


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class Plan:
    name: str
    classes: list[str] | None  # None: background + class_k up to the largest label found
    items: list[Item]
    skipped: list[Skipped] = field(default_factory=list)
    group_regex: str | None = None  # patient/case of an id, for meta.json
    meta: dict = field(default_factory=dict)  # more meta.json fields (modality, source format, ...)
    split: dict[str, str] | None = None  # item group (case) -> split where the format defines one (imagesTs)
    notes: list[str] = field(default_factory=list)


def safe_id(text: str) -> str:
    """A file-system and CLI friendly id: NFC-normalised (one code point per accented letter, however the
    source file system stored it); characters other than letters and digits of any script, '.', '_' and '-'
    become '_' (a whole run of them one '_'; ASCII only made 'ä1' and 'ö1' one id and 'ünï' 'n'); no leading
    '.' (a hidden file)."""
    kept = "".join(c if c.isalnum() or c in "._-" or unicodedata.category(c).startswith("M") else "/"
                   for c in unicodedata.normalize("NFC", text))  # M: combining marks without a composed form
    out = re.sub(r"/+", "_", kept).strip("_").lstrip(".")
    return out or "x"


def slice_id(case: str, k: int) -> str:
    return f"{case}_slice_{k:03d}"


SLICE_GROUP_REGEX = r"^(.*)_slice_\d+$"
