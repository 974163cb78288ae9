"""Small parsers shared by the command-line options."""

from __future__ import annotations

from collections.abc import Iterable


def comma_list(value: str | Iterable[str]) -> list[str]:
    """``"fp32, fp16,,fp32"`` -> ``["fp32", "fp16"]``: the items of a comma-separated option (or of a list of
    them, as the Python API takes), blanks dropped, each item once, in the order first given."""
    items = value.split(",") if isinstance(value, str) else [part for v in value for part in str(v).split(",")]
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))
