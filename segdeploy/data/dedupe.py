"""Duplicate images in a dataset, found so that no copy of an image can sit on both sides of a split.

Two kinds, as the reference study removed them:

- exact: identical decoded pixels (SHA-256 of shape + pixel bytes), which also catches the same image saved
  twice in different files or formats;
- near: perceptual hashes (``imagehash.phash``, 64 bits) at Hamming distance <= ``threshold``; re-encoded,
  resized or slightly edited copies land there.

Near-constant images (intensity standard deviation below ``BLANK_STD`` gray levels, e.g. the empty slices at the
ends of a volume) are left out of both: their hashes carry no information, and joining every blank slice of
every patient into one set would merge unrelated patients into one group.

Duplicate *sets* are the connected components of the exact and near pairs. ``--dedupe group`` puts each set in
one group (``groups.json``, which the splits honour); ``drop`` keeps the first id of each set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segdeploy.data.folder import SegDataset, read_image_array
from segdeploy.data.splits import group_of
from segdeploy.errors import SegdeployError

SCHEMA = "segdeploy.dedupe/1"
DEFAULT_THRESHOLD = 4  # bits of 64; see README ("Bring your own data") for the figures it gives on real sets
BLANK_STD = 2.0
REPORT_FILE = "dedupe.json"


@dataclass
class ImageHash:
    id: str
    pixels: str  # sha256 of shape + pixel bytes
    phash: int  # 64-bit perceptual hash
    blank: bool


@dataclass
class DuplicateSet:
    ids: list[str]  # sorted; ids[0] is the one `drop` keeps
    distinct: int  # how many different pixel contents the set holds (1: all exact copies)
    max_distance: int  # largest Hamming distance of a near pair inside the set (0 when exact)
    groups: list[str] = field(default_factory=list)  # the dataset's groups (e.g. patients) the set spans
    splits: list[str] = field(default_factory=list)  # the splits the set spans (when known)


@dataclass
class DedupeReport:
    images: int
    threshold: int
    blank: int  # near-constant images left out
    sets: list[DuplicateSet]
    schema: str = SCHEMA
    hash: str = "imagehash.phash 8x8 (64 bits) + sha256 of pixels"

    @property
    def exact_duplicates(self) -> int:
        """Images that are a pixel-identical copy of an earlier one."""
        return sum(len(s.ids) - s.distinct for s in self.sets)

    @property
    def near_duplicates(self) -> int:
        """Further images that only look alike: what `drop` removes beyond the exact copies."""
        return sum(s.distinct - 1 for s in self.sets)

    def to_json(self) -> dict:
        d = asdict(self)
        d["summary"] = {"images": self.images, "sets": len(self.sets), "exact_duplicates": self.exact_duplicates,
                        "near_duplicates": self.near_duplicates, "blank_skipped": self.blank,
                        "sets_across_groups": sum(len(s.groups) > 1 for s in self.sets),
                        "sets_across_splits": sum(len(s.splits) > 1 for s in self.sets)}
        return d

    def groups_json(self) -> dict[str, str]:
        """id -> set name for every id in a set: the file the splits read (groups.json)."""
        return {i: f"dup:{s.ids[0]}" for s in self.sets for i in s.ids}

    def dropped(self) -> list[str]:
        return sorted(i for s in self.sets for i in s.ids[1:])


def hash_image(id: str, image: np.ndarray) -> ImageHash:
    import imagehash
    from PIL import Image

    arr = np.ascontiguousarray(image)
    digest = hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()
    gray = arr if arr.ndim == 2 else arr[..., :3].mean(axis=2)
    blank = float(np.std(gray)) < BLANK_STD
    bits = imagehash.phash(Image.fromarray(arr.squeeze() if arr.ndim == 3 and arr.shape[2] == 1 else arr)).hash
    return ImageHash(id, digest, int("".join("1" if b else "0" for b in bits.ravel()), 2), blank)


def find_duplicates(hashes: Sequence[ImageHash], *, threshold: int = DEFAULT_THRESHOLD,
                    groups: Mapping[str, str] | None = None, splits: Mapping[str, str] | None = None
                    ) -> DedupeReport:
    """Duplicate sets among ``hashes``; ``groups``/``splits`` (id -> name) say which groups and splits each
    set spans, the measure of leakage."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not 0 <= threshold <= 64:
        raise SegdeployError(f"threshold {threshold} is outside 0..64 bits.", fix="use e.g. 4 (the default).")
    live = [h for h in hashes if not h.blank]
    n = len(live)
    rows, cols, dist = [], [], []
    by_pixels: dict[str, int] = {}
    for j, h in enumerate(live):  # exact pairs: each image to the first with the same pixels
        first = by_pixels.setdefault(h.pixels, j)
        if first != j:
            rows.append(first), cols.append(j), dist.append(0)
    codes = np.array([h.phash for h in live], dtype=np.uint64)
    rows_per_block = max(1, min(1024, (1 << 23) // max(n, 1)))  # near pairs, blocks of <= 8M distances (8 MB)
    for start in range(0, n, rows_per_block):
        block = np.bitwise_count(codes[start:start + rows_per_block, None] ^ codes[None, :])
        a, b = np.nonzero(block <= threshold)
        keep = b > a + start
        rows += (a[keep] + start).tolist()
        cols += b[keep].tolist()
        dist += block[a[keep], b[keep]].tolist()
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for j, c in enumerate(comp):
        members.setdefault(int(c), []).append(j)
    max_d: dict[int, int] = {}
    for a, d in zip(rows, dist):
        c = int(comp[a])
        max_d[c] = max(max_d.get(c, 0), int(d))
    sets = []
    for c, js in members.items():
        if len(js) < 2:
            continue
        ids = sorted(live[j].id for j in js)
        sets.append(DuplicateSet(
            ids=ids, distinct=len({live[j].pixels for j in js}), max_distance=max_d.get(c, 0),
            groups=sorted({groups[i] for i in ids}) if groups is not None else [],
            splits=sorted({splits[i] for i in ids if i in splits}) if splits is not None else []))
    sets.sort(key=lambda s: s.ids[0])
    return DedupeReport(images=len(hashes), threshold=threshold, blank=len(hashes) - n, sets=sets)


def hash_images(ids: Sequence[str], load: Callable[[str], np.ndarray], *, workers: int = 4) -> list[ImageHash]:
    """Hash every image (decoding is mostly in C and releases the GIL, so threads help)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda i: hash_image(i, load(i)), ids))


def dedupe_dataset(path: str | Path, *, threshold: int = DEFAULT_THRESHOLD, group_regex: str | None = None
                   ) -> DedupeReport:
    """Duplicates in a dataset folder, with the groups (``group_regex`` or meta.json's, groups.json) and the
    splits (split.json, else the default k-fold split) each set spans."""

    ds = SegDataset(path)
    hashes = hash_images(ds.ids, lambda i: read_image_array(ds.image_path(i), ds.in_chans))
    regex = group_regex or ds.group_regex
    groups = group_of(ds.ids, regex, ds.groups)
    try:
        splits = {i: s for s in ("train", "val", "test") for i in ds.split(s, group_regex=regex)}
    except SegdeployError:
        splits = None
    return find_duplicates(hashes, threshold=threshold, groups=groups, splits=splits)
