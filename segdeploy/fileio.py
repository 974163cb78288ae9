"""Atomic file writes and JSON-lines results: a crash never leaves a half-written artifact."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


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


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    os.replace(tmp, path)
    return Path(path)


def read_json(path: str | Path) -> Any:
    from segdeploy.errors import SegdeployError

    path = Path(path)
    if not path.is_file():
        raise SegdeployError("file not found.", path=path, fix="check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SegdeployError(f"not valid JSON ({e.msg} at line {e.lineno}).", path=path,
                             fix="repair or delete the file and re-run the step that wrote it.") from e


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line; a line is written with one write() and fsync'd, so a crash loses at
    most the line being written, and :func:`read_jsonl` skips such a torn last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = dumps(row) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    from segdeploy.errors import SegdeployError

    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # torn final line from an interrupted run: ignore it
                return
            raise SegdeployError(f"line {i} is not valid JSON ({e.msg}).", path=path,
                                 fix="delete that line; the other rows are kept.") from e


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
