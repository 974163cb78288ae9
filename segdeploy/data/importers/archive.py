"""A downloaded ``.zip`` unpacked safely: every entry must stay inside the destination.

An entry with an absolute path, a drive letter, a ``..`` component or a symbolic link (which a later entry
could write through) refuses the whole archive before anything is written: a data set from the internet must
not be able to write outside the folder it is unpacked into.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from segdeploy.errors import SegdeployError


def unsafe_entries(zf: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(entry name, reason) for every entry that could write outside the destination."""
    bad = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            bad.append((info.filename, "symbolic link"))
        elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            bad.append((info.filename, "absolute path"))
        elif ".." in PurePosixPath(name).parts:
            bad.append((info.filename, "'..' leaves the destination"))
    return bad


def extract_zip(path: Path, dest: Path) -> Path:
    """Unpack ``path`` into ``dest`` (created) after checking every entry; returns ``dest``."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise SegdeployError(f"cannot open the archive ({e}).", path=path, fix="download it again.") from e
    with zf:
        bad = unsafe_entries(zf)
        if bad:
            listed = "; ".join(f"{n!r} ({why})" for n, why in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise SegdeployError(f"refused: {len(bad)} archive entries would write outside the destination: "
                                 f"{listed}{more}.", path=path,
                                 fix="unpack it yourself after inspecting it, and import the folder.")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if root != target and root not in target.parents:  # belt and braces after the name checks
                raise SegdeployError(f"refused: entry {info.filename!r} resolves outside the destination.",
                                     path=path, fix="unpack it yourself after inspecting it.")
        zf.extractall(dest)
    return dest
