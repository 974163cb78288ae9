"""Small parsers and formatters shared by the commands."""

from __future__ import annotations

from segdeploy.errors import SegdeployError
from segdeploy.numerics import checked_number, fmt_num  # noqa: F401 -- fmt_num: the commands' formatter

OUTPUT_FORMATS = ("table", "json")


def check_format(fmt: str, formats: tuple[str, ...] = OUTPUT_FORMATS) -> None:
    """A ``--format`` value the command knows, or a user error naming the ones it does."""
    if fmt not in formats:
        raise SegdeployError(f"unknown format {fmt!r}.", fix=f"use --format {' or '.join(formats)}.")


def number_option(option: str, *, positive: bool = False):
    """A typer callback applying :func:`checked_number` to ``option`` (None, an unset option, passes)."""
    def callback(value):
        if value is None:
            return None
        try:
            return checked_number(value, positive=positive)
        except ValueError as e:
            raise SegdeployError(f"{option} {value:g}: {e}.", fix=f"give {option} a finite number "
                                                      f"{'above' if positive else 'of at least'} 0.") from None
    return callback
