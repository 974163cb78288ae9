"""Atomic file writes and JSON-lines results: a crash never leaves a half-written artifact."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from segdeploy.errors import SegdeployError, WriteFailed, warn


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths show up in metrics and metadata
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON; write them as null so every tool can read the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), indent=indent, default=_json_default, allow_nan=False)


def cache_dir() -> Path:
    """Where segdeploy keeps what it can regenerate (synthetic datasets, the probe): ``$SEGDEPLOY_CACHE`` or
    ``~/.cache/segdeploy``."""
    env = os.environ.get("SEGDEPLOY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "segdeploy"


def _umask() -> int:
    """The process umask. Linux reports it in /proc (no side effect); elsewhere it is read by setting and
    restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_failed(path: str | Path, error: OSError) -> Exception:
    """The one-line error for a write that failed (disk full, read-only file system, no permission)."""

    why = error.strerror or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or pick another output folder), then re-run the same command: finished work is kept."
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "write to a folder you may write to, then re-run the same command: finished work is kept."
    else:
        fix = "check the disk, then re-run the same command: finished work is kept."
    return WriteFailed(f"cannot write ({why}).", path=path, fix=fix)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over the target. The file gets the
    permissions of any new file (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failed(path, e) from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failed(path, e) from e
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj, indent=2) + "\n")


def atomic_target(path: str | Path) -> Path:
    """A temporary sibling path for writers that insist on a filename (onnx.save, torch.save).

    Call :func:`commit` with it once the writer has finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.partial{path.suffix}")


def commit(tmp: Path, path: str | Path) -> Path:
    # some writers (safetensors) create their file 0600; a run file gets what any new file gets
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e) from e
    return Path(path)


def atomic_save_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` through a temporary sibling; its I/O failures (reported as SafetensorError
    with the OS error number in the text) become :class:`WriteFailed`."""
    import re

    from safetensors.torch import save_file

    tmp = atomic_target(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        code = re.search(r"os error (\d+)", str(e))
        if code:
            raise write_failed(path, OSError(int(code.group(1)), os.strerror(int(code.group(1))))) from e
        raise
    return commit(tmp, path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("file not found.", path=path, fix="check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SegdeployError(f"not valid JSON ({e.msg} at line {e.lineno}).", path=path,
                             fix="repair or delete the file and re-run the step that wrote it.") from e


def _last_line_start(f, size: int) -> int:
    """Offset just after the last newline of the open binary file ``f`` (0 when it has none)."""
    pos = size
    while pos > 0:
        step = min(pos, 1 << 16)
        f.seek(pos - step)
        block = f.read(step)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - step + i + 1
        pos -= step
    return 0


def _repair_tail(f, path: Path) -> None:
    """A file that does not end with a newline has a torn last line (a write that was cut off): a complete row
    gets its newline, an incomplete one is removed with a warning, so the next row starts on a fresh line."""

    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    start = _last_line_start(f, size)
    f.seek(start)
    tail = f.read()
    try:
        json.loads(tail)
        complete = True
    except ValueError:
        complete = False
    if complete:
        f.write(b"\n")
        return
    f.seek(0)
    line_no = f.read(start).count(b"\n") + 1
    f.truncate(start)
    warn(f"line {line_no} was an incomplete row from an interrupted write ({len(tail)} bytes: "
         f"{tail[:60].decode('utf-8', 'replace')!r}...); removed it before appending.", path=path)


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line and fsync it. The line starts on a fresh line (a torn tail left by a crash is
    repaired first, see :func:`_repair_tail`), and a write that fails (disk full, read-only) is undone, so the
    row is either complete on disk or absent; the failure is raised as one-line :class:`WriteFailed`."""
    path = Path(path)
    data = (dumps(row) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            _repair_tail(f, path)
            start = f.seek(0, os.SEEK_END)
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):  # shrinking a file needs no free space
                    f.truncate(start)
                raise
    except OSError as e:
        raise write_failed(path, e) from e


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path, *, numbered: bool = False) -> Iterator:
    """The rows of a JSON-lines file (``(line number, row)`` pairs with ``numbered``, for errors that name the
    line). A torn last line (an interrupted write) is skipped with a warning that names it; an invalid line
    elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                warn(f"line {i} is an incomplete row from an interrupted write; skipped (the next append "
                     "removes it).", path=path)
                return
            raise SegdeployError(f"line {i} is not valid JSON ({e.msg}).", path=path,
                                 fix="delete that line; the other rows are kept.") from e
        yield (i, row) if numbered else row


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
