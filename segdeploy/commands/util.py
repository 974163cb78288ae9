"""Small parsers and formatters shared by the commands."""

from __future__ import annotations

from collections.abc import Iterable


def comma_list(value: str | Iterable[str]) -> list[str]:
    """``"fp32, fp16,,fp32"`` -> ``["fp32", "fp16"]``: the items of a comma-separated option (or of a list of
    them, as the Python API takes), blanks dropped, each item once, in the order first given."""
    items = value.split(",") if isinstance(value, str) else [part for v in value for part in str(v).split(",")]
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))


OUTPUT_FORMATS = ("table", "json")


def check_format(fmt: str, formats: tuple[str, ...] = OUTPUT_FORMATS) -> None:
    """A ``--format`` value the command knows, or a user error naming the ones it does."""
    if fmt not in formats:
        from segdeploy.errors import SegdeployError

        raise SegdeployError(f"unknown format {fmt!r}.", fix=f"use --format {' or '.join(formats)}.")


def fmt_num(value, spec: str) -> str:
    """A table cell: ``value`` formatted with ``spec``, or "-" when there is none."""
    return "-" if value is None else format(value, spec)
