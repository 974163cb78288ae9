"""User-facing errors: every one names the file at fault and the fix.

The CLI catches :class:`SegdeployError` and prints it as one line (no traceback), so a message
must stand on its own: what is wrong, where, and what to do about it. :func:`describe_error` is the one-line
form of any other exception, for a row or manifest entry that records a failure and goes on.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class SegdeployError(Exception):
    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


class BackendUnavailable(SegdeployError):
    """A backend/precision/device combination that cannot run here; bench turns it into a row."""


def describe_error(exc: BaseException, limit: int = 400) -> str:
    """One line for a manifest/table: the exception type plus the most specific message in its chain.

    The dynamo exporter wraps the real cause ("No ONNX function found for aten.linalg_eig") in generic
    ConversionErrors whose first line says only "Failed to convert"; the exception summary it prints names it.
    """
    text = _ANSI.sub("", str(exc))
    summary = re.search(r"## Exception summary\s*\n\s*(.+)", text)
    if summary:
        line = summary.group(1)
    else:
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class WriteFailed(SegdeployError):
    """A file could not be written (disk full, read-only, no permission). The command stops: what was being
    written is either complete on disk or absent, so re-running the same command continues."""


class SegdeployWarning(UserWarning):
    """Something a user should know that does not stop the command (the CLI prints it as one yellow line)."""


def warn(message: str, *, path: str | Path | None = None) -> None:
    text = f"{path}: {message}" if path is not None else message
    warnings.warn(SegdeployWarning(text), stacklevel=2)
