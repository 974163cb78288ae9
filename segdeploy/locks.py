"""One writer per results file or run folder: an OS file lock (``filelock``) and a note of who holds it.

The lock is the kernel's (``flock``): it is released when its process ends, however it ends (kill -9 included),
so there are no stale locks to clear by hand. A lock taken with ``reentrant=True`` (the results lock of run_bench)
lets a caller in the same thread that already holds it pass through instead of refusing itself; a study driver's
lock stays exclusive even within one process. The holder note beside it (pid, host, command, since) is only read
to say who is in the way; a note left by a killed process is overwritten by the next holder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_write_json, write_failed

# lock files this thread holds -> nesting depth (per thread: another thread of the process must still wait)
_local = threading.local()


def _holder_note(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".holder.json")


def _describe(note: Path) -> str:
    try:
        h = json.loads(note.read_text())
        return f"segdeploy {h['command']} (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another segdeploy process (it has not written its pid yet)"


@contextmanager
def hold(lock_file: str | Path, command: str, what: str | Path, *, reentrant: bool = False) -> Iterator[None]:
    """Hold ``lock_file`` while the block runs; when another process holds it, raise a one-line error naming
    ``what`` (the file or folder being written) and the holder. ``reentrant``: where this thread holds it already
    (taken by an outer ``hold``), pass through."""
    from filelock import FileLock, Timeout


    lock_file = Path(lock_file).absolute()
    held = _local.__dict__.setdefault("held", {})
    if reentrant and held.get(lock_file):
        held[lock_file] += 1
        try:
            yield
        finally:
            held[lock_file] -= 1
        return
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(lock_file.parent, e) from e
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SegdeployError(f"in use by {_describe(_holder_note(lock_file))}.", path=what,
                             fix=f"wait until it has finished (or stop it); two {command} processes on one "
                                 "file would interleave or duplicate its rows.") from None
    note = _holder_note(lock_file)
    try:
        atomic_write_json(note, {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        held[lock_file] = 1
        yield
    finally:
        held.pop(lock_file, None)
        note.unlink(missing_ok=True)
        lock.release()
