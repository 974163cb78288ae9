"""What a dataset's images *are*, independent of the folder's name: digests to recognise them later.

- ``pixel_digest``: sha256 of an image's decoded pixels (PIL mode, size and raw bytes), recorded per id when a
  run is trained (``splits.json``), so a renamed or copied folder is recognised as the run's dataset, and the same
  image re-saved in another lossless format still matches;
- ``content_fingerprint``: sha256 of every image's and mask's *file bytes* (and of meta.json, split.json,
  groups.json, which decide classes and splits), for a study to notice that a dataset changed between its runs.
  Hashing bytes is cheap (no decoding), and a file whose size and modification time are those of the previous
  fingerprint is not read again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.fileio import sha256_file

PIXELS_METHOD = "sha256 of PIL mode, size and decoded pixel bytes"
CONTROL_FILES = ("meta.json", "split.json", "groups.json")  # files besides the images that change a dataset


def pixel_digest(path: str | Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        head = f"{im.mode}:{im.size[0]}x{im.size[1]}:".encode()
        return hashlib.sha256(head + im.tobytes()).hexdigest()


def pixel_digests(paths: Mapping[str, Path], *, workers: int = 4) -> dict[str, str]:
    """``{id: pixel_digest}`` (decoding is mostly in C and releases the GIL, so threads help)."""
    ids = list(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(ids, pool.map(lambda i: pixel_digest(paths[i]), ids)))


@dataclass
class Fingerprint:
    """A dataset's content: per id the sha256 of its image and mask bytes; per control file its sha256. ``cache``
    keeps each file's [size, mtime_ns, sha256] so that the next fingerprint reads only files that changed."""

    ids: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    cache: dict[str, list] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        text = "".join(f"{k}\t{v}\n" for k, v in sorted(self.ids.items()))
        text += "".join(f"{k}\t{v}\n" for k, v in sorted(self.files.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "n_images": len(self.ids), "ids": self.ids, "files": self.files,
                "cache": self.cache}

    @classmethod
    def from_json(cls, data: object) -> Fingerprint | None:
        if not (isinstance(data, dict) and isinstance(data.get("ids"), dict)):
            return None
        return cls(ids=dict(data["ids"]), files=dict(data.get("files") or {}), cache=dict(data.get("cache") or {}))

    def changes(self, new: Fingerprint, few: int = 3) -> str:
        """What differs from ``self`` to ``new``, in words: ids added, removed, modified, control files changed."""
        added = sorted(set(new.ids) - set(self.ids))
        removed = sorted(set(self.ids) - set(new.ids))
        modified = sorted(i for i in set(self.ids) & set(new.ids) if self.ids[i] != new.ids[i])
        files = sorted(f for f in set(self.files) | set(new.files) if self.files.get(f) != new.files.get(f))
        parts = [f"{len(ids)} {what} ({', '.join(ids[:few])}{', ...' if len(ids) > few else ''})"
                 for what, ids in (("added", added), ("removed", removed), ("modified", modified)) if ids]
        parts += [f"{name} {'added' if name not in self.files else 'removed' if name not in new.files else 'changed'}"
                  for name in files]
        return "; ".join(parts) or "nothing"


def content_fingerprint(ds, previous: Fingerprint | None = None) -> Fingerprint:
    """The fingerprint of dataset ``ds`` (a ``SegDataset``), reusing ``previous``'s digests of unchanged files."""
    root = Path(ds.root)
    old = previous.cache if previous else {}
    cache: dict[str, list] = {}

    def digest(path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        known = old.get(rel)
        if isinstance(known, list) and known[:2] == [st.st_size, st.st_mtime_ns]:
            cache[rel] = known
        else:
            cache[rel] = [st.st_size, st.st_mtime_ns, sha256_file(path)]
        return cache[rel][2]

    def entry(i: str) -> str:
        return hashlib.sha256(f"{digest(ds.image_path(i))}:{digest(ds.mask_path(i))}".encode()).hexdigest()

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = dict(zip(ds.ids, pool.map(entry, ds.ids)))
    files = {name: digest(root / name) for name in _present(root, CONTROL_FILES)}
    return Fingerprint(ids=ids, files=files, cache=cache)


def _present(root: Path, names: Iterable[str]) -> list[str]:
    return [n for n in names if (root / n).is_file()]
