"""Small parsers and formatters shared by the commands."""

from __future__ import annotations

import math
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


def fmt_num(value, spec: str, missing: str = "-") -> str:
    """A table cell: ``value`` formatted with ``spec``, or ``missing`` when there is none (or it is not finite).
    A value that rounds to zero prints as zero without a sign: never "-0.0000" (a tiny negative ΔDice) nor
    "+0.0000"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    text = format(value, spec)
    mantissa = text.lower().split("e")[0]
    if text[:1] in "+-" and not any(c in "123456789" for c in mantissa):
        text = text[1:]
    return text


def checked_number(value, *, positive: bool = False) -> float:
    """THE check of a duration, warm-up, timeout or learning rate, from the command line or a study file: a finite
    number, >= 0 (> 0 with ``positive``); otherwise ValueError saying what is wrong. NaN passes every ``<``
    comparison, so a loop ``while elapsed < duration`` with NaN or inf never ends: both are refused here, where the
    value is parsed, not discovered as a hang."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"must be {'> 0' if positive else '>= 0'}, got {value:g}")
    return float(value)


def number_option(option: str, *, positive: bool = False):
    """A typer callback applying :func:`checked_number` to ``option`` (None, an unset option, passes)."""
    def callback(value):
        if value is None:
            return None
        try:
            return checked_number(value, positive=positive)
        except ValueError as e:
            from segdeploy.errors import SegdeployError

            raise SegdeployError(f"{option} {value:g}: {e}.", fix=f"give {option} a finite number "
                                                      f"{'above' if positive else 'of at least'} 0.") from None
    return callback
