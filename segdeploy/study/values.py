"""The study file's value checks, shared by the study keys (:mod:`segdeploy.study.config`) and the ``[[imported]]``
tables (:mod:`segdeploy.study.imported`). Each check returns the value or raises ValueError saying what is wrong;
``_checked`` turns that into one line naming the key and an example."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from segdeploy.errors import SegdeployError
from segdeploy.numerics import checked_number


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be a whole number, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be {'>= ' + str(lo) if hi is None else f'in {lo}..{hi}'}, got {v}")
        return v
    return check


def _number(positive: bool = True) -> Callable[[Any], float]:
    # the command line's check: finite, >= 0 (> 0 if positive)
    return lambda v: checked_number(v, positive=positive)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _names(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError(f"must be a non-empty list of names, got {v!r}")
    items = [s.strip() for s in v]
    dupes = sorted({s for s in items if items.count(s) > 1})
    if dupes:
        raise ValueError(f"lists {', '.join(dupes)} twice")
    return tuple(items)


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a non-empty string, got {v!r}")
    return v.strip()


def _unknown(key: str, known, where: str, path) -> SegdeployError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return SegdeployError(f"unknown key `{where}{key}`.", path=path,
                          fix=f"{hint}known keys{' in ' + where.rstrip('.') if where else ''}: {', '.join(known)}.")


def _checked(table: dict, spec: dict, where: str, path) -> dict:
    out = {}
    for key, value in table.items():
        if key not in spec:
            raise _unknown(key, spec, where, path)
        check, example = spec[key]
        try:
            out[key] = check(value)
        except ValueError as e:
            raise SegdeployError(f"`{where}{key}` {e}.", path=path, fix=f"write e.g. {example}.") from None
    return out
