"""User-facing errors: every one names the file at fault and the fix.

The CLI catches :class:`SegdeployError` and prints it as one line (no traceback), so a message
must stand on its own: what is wrong, where, and what to do about it.
"""

from __future__ import annotations

import warnings
from pathlib import Path


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


class WriteFailed(SegdeployError):
    """A file could not be written (disk full, read-only, no permission). The command stops: what was being
    written is either complete on disk or absent, so re-running the same command continues."""


class SegdeployWarning(UserWarning):
    """Something a user should know that does not stop the command (the CLI prints it as one yellow line)."""


def warn(message: str, *, path: str | Path | None = None) -> None:
    text = f"{path}: {message}" if path is not None else message
    warnings.warn(SegdeployWarning(text), stacklevel=2)
