"""A downloaded ``.zip`` unpacked safely: every entry must stay inside the destination.

An entry with an absolute path, a drive letter, a ``..`` component or a symbolic link (which a later entry
could write through) refuses the whole archive before anything is written: a data set from the internet must
not be able to write outside the folder it is unpacked into. So does a zip bomb: a member (or the whole archive)
declaring more than ``max_ratio`` times its compressed size, or more in total than ``max_bytes`` or the free
space. The declared sizes bound what is written: :mod:`zipfile` stops a member at its declared size.
"""

from __future__ import annotations

import shutil
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


RATIO_FLOOR = 1 << 20  # members (and archives) declaring less are not ratio-checked: small text compresses well


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def size_problem(zf: zipfile.ZipFile, *, max_ratio: float, max_bytes: float, free: int) -> tuple[str, str] | None:
    """(what, fix) when the declared sizes look like a zip bomb or do not fit, else None; reads headers only."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if not infos:
        return None
    fix = "if you trust the archive, raise --max-ratio / --max-unpacked-gb (or unpack and inspect it yourself)."
    total, packed = sum(i.file_size for i in infos), sum(i.compress_size for i in infos)
    worst = max(infos, key=lambda i: i.file_size / max(i.compress_size, 1))
    ratio = worst.file_size / max(worst.compress_size, 1)
    if worst.file_size > RATIO_FLOOR and ratio > max_ratio:
        return (f"refused: member {worst.filename!r} declares {_gb(worst.file_size)} unpacked from "
                f"{worst.compress_size} bytes ({ratio:.0f}x, over --max-ratio {max_ratio:g}): a zip bomb?", fix)
    if total > RATIO_FLOOR and total > max_ratio * max(packed, 1):
        return (f"refused: the archive declares {_gb(total)} unpacked from {_gb(packed)} "
                f"({total / max(packed, 1):.0f}x, over --max-ratio {max_ratio:g}; member {worst.filename!r} "
                f"{ratio:.0f}x): a zip bomb?", fix)
    largest = max(infos, key=lambda i: i.file_size)
    if total > max_bytes:
        return (f"refused: the archive declares {_gb(total)} unpacked, over --max-unpacked-gb {max_bytes / 1e9:g} "
                f"(largest member {largest.filename!r}, {_gb(largest.file_size)}).", fix)
    if total > free:
        return (f"the archive declares {_gb(total)} unpacked (largest member {largest.filename!r}) but only "
                f"{_gb(free)} are free where it would be unpacked.", "free space, or import into another disk.")
    return None


def extract_zip(path: Path, dest: Path, *, max_ratio: float = 100.0, max_bytes: float = 200e9) -> Path:
    """Unpack ``path`` into ``dest`` (created) after checking every entry and the declared sizes; returns
    ``dest``."""
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
        problem = size_problem(zf, max_ratio=max_ratio, max_bytes=max_bytes, free=shutil.disk_usage(dest).free)
        if problem:
            raise SegdeployError(problem[0], path=path, fix=problem[1])
        root = dest.resolve()
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if root != target and root not in target.parents:  # belt and braces after the name checks
                raise SegdeployError(f"refused: entry {info.filename!r} resolves outside the destination.",
                                     path=path, fix="unpack it yourself after inspecting it.")
        try:
            zf.extractall(dest)
        except (OSError, zipfile.BadZipFile, EOFError) as e:  # a full disk, a member that fails its CRC
            raise SegdeployError(f"cannot unpack the archive ({type(e).__name__}: {e}).", path=path,
                                 fix="free space and import again, or download the archive again.") from e
    return dest
