"""Small parsers and formatters shared by the commands."""

from __future__ import annotations

from segdeploy.errors import SegdeployError

OUTPUT_FORMATS = ("table", "json")


def check_format(fmt: str, formats: tuple[str, ...] = OUTPUT_FORMATS) -> None:
    """A ``--format`` value the command knows, or a user error naming the ones it does."""
    if fmt not in formats:
        raise SegdeployError(f"unknown format {fmt!r}.", fix=f"use --format {' or '.join(formats)}.")


def fmt_num(value, spec: str) -> str:
    """A table cell: ``value`` formatted with ``spec``, or "-" when there is none."""
    return "-" if value is None else format(value, spec)
