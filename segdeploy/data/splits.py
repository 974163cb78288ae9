"""Train/val/test splits: seeded, group-aware k-fold, or read from ``split.json``.

Splits must be reproducible anywhere: groups are sorted before a seeded NumPy shuffle, so neither the
file-system order nor Python's hash randomisation changes them, and a group (e.g. a patient) never spans
two splits, so slices of one patient cannot leak from train into val/test.

``group_regex`` comes from files anyone can write (meta.json, a study file), so it is matched by RE2
(google-re2), whose time is linear in the id's length: ``^(a+)+$`` on 36 a's and a '!' backtracks for ever in
Python's ``re``. RE2 has no backreferences or lookarounds, and its ``\\w``/``\\d`` are ASCII (``\\pL`` is any letter).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.errors import SegdeployError

SPLIT_NAMES = ("train", "val", "test")


def group_of(ids: list[str], group_regex: str | None, groups: dict[str, str] | None = None) -> dict[str, str]:
    """id -> group: regex group 1 of ``group_regex`` (searched in the id), the whole match if the pattern has
    no group, or the id itself without a regex. An id the regex does not match is an error: silently making it
    its own group would hide a typo in the pattern and leak groups across splits.

    ``groups`` (a dataset's groups.json, e.g. near-duplicate sets) joins groups further: ids that share a regex
    group or a ``groups`` entry end up in one group, named after its smallest regex group, so without
    ``groups`` (or with groups inside regex groups) the result is the regex grouping unchanged."""
    by_regex = _regex_groups(ids, group_regex)
    return by_regex if not groups else _join(by_regex, groups)


def _join(by_regex: dict[str, str], groups: dict[str, str]) -> dict[str, str]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = list(by_regex)
    nodes = {i: n for n, i in enumerate(ids)}  # ids first, then one node per group name of either kind
    edges = []
    for i in ids:
        for label in (("r", by_regex[i]), ("f", groups.get(i))):
            if label[1] is not None:
                edges.append((nodes[i], nodes.setdefault(label, len(nodes))))
    a, b = np.array(edges, dtype=np.int64).T if edges else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(nodes), len(nodes)))
    _, component = connected_components(graph, directed=False)
    name: dict[int, str] = {}
    for i in ids:
        c = component[nodes[i]]
        name[c] = min(name.get(c, by_regex[i]), by_regex[i])
    return {i: name[component[nodes[i]]] for i in ids}


def compile_group_regex(group_regex: object, *, path: Path | str | None = None):
    """``group_regex`` compiled by RE2 (linear-time matching), or SegdeployError naming the pattern and ``path``
    (the file it came from) when RE2 cannot compile it."""
    try:
        import re2
    except ImportError as e:  # a declared dependency; a platform without its wheel gets one line, not a hang
        raise SegdeployError("group_regex needs google-re2 (a regex engine without catastrophic backtracking).",
                             path=path, fix="pip install google-re2") from e
    fix = "correct the pattern (e.g. '^(patient\\d+)'); RE2 has no backreferences or lookarounds."
    if not isinstance(group_regex, str):
        raise SegdeployError(f"group_regex {group_regex!r} is not a string.", path=path, fix=fix)
    options = re2.Options()
    options.log_errors = False  # RE2 would also print the error to stderr: it is in the one line below
    try:
        return re2.compile(group_regex, options)
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise SegdeployError(f"group_regex '{group_regex}' is not a valid regular expression for RE2 ({why}).",
                             path=path, fix=fix) from e


def _regex_groups(ids: list[str], group_regex: str | None) -> dict[str, str]:
    if group_regex is None:
        return {i: i for i in ids}
    pattern = compile_group_regex(group_regex)
    groups, unmatched = {}, []
    for i in ids:
        m = pattern.search(i)
        if m is None:
            unmatched.append(i)
        else:
            groups[i] = m.group(1) if pattern.groups else m.group(0)
    if unmatched:
        raise SegdeployError(f"group_regex '{group_regex}' does not match {len(unmatched)} ids "
                             f"(e.g. {', '.join(unmatched[:3])}).",
                             fix="use a pattern that matches every id, or none to split by id.")
    return groups


def make_splits(ids: list[str], *, seed: int, k: int, fold: int, group_regex: str | None,
                test_fraction: float = 0.2, groups: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Split ids into {"train", "val", "test"} (each sorted).

    The sorted groups are shuffled with ``numpy.random.default_rng(seed)``; the first
    ``round(test_fraction * n_groups)`` (at least one when ``test_fraction > 0``) are test, independent of ``k``
    and ``fold`` so every fold shares one held-out test set; the others are cut into ``k`` contiguous folds of
    near-equal group count and fold ``fold`` is val, the rest train. ``groups`` joins ids further (see
    :func:`group_of`).
    """
    if k < 2:
        raise SegdeployError(f"k={k}: k-fold needs k >= 2.", fix="use k >= 2 (the default is 5).")
    if not 0 <= fold < k:
        raise SegdeployError(f"fold={fold} is outside 0..{k - 1}.", fix=f"choose a fold in 0..{k - 1}.")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    groups_by_id = group_of(list(ids), group_regex, groups)
    names = sorted(set(groups_by_id.values()))
    n_test = int(round(test_fraction * len(names)))
    if test_fraction > 0:
        n_test = max(n_test, 1)
    if len(names) - n_test < k:
        raise SegdeployError(f"{len(names)} groups are too few for a test split plus {k} folds.",
                             fix=f"use a smaller k (at most {len(names) - n_test}) or a larger dataset.")
    order = [names[j] for j in np.random.default_rng(seed).permutation(len(names))]
    split_of_group = {g: "test" for g in order[:n_test]}
    for j, chunk in enumerate(np.array_split(np.array(order[n_test:], dtype=object), k)):
        for g in chunk:
            split_of_group[g] = "val" if j == fold else "train"
    out: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    for i in sorted(groups_by_id):
        out[split_of_group[groups_by_id[i]]].append(i)
    return out


def splits_from_mapping(mapping: object, ids: list[str], *, path: Path | str | None = None) -> dict[str, list[str]]:
    """{"train", "val", "test"} from a ``split.json`` mapping id -> split name; it must name every id exactly."""
    problems = split_file_problems(mapping, ids)
    if problems:
        raise SegdeployError("; ".join(problems) + ".", path=path,
                             fix="correct split.json (segdeploy data check lists each id), or pass "
                                 "use_split_file=False for a k-fold split.")
    out: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    for i in sorted(mapping):
        out[mapping[i]].append(i)
    return out


def split_file_problems(mapping: object, ids: list[str]) -> list[str]:
    """What is wrong with a split.json mapping, one line per kind of problem (empty when it is usable)."""
    if not isinstance(mapping, dict):
        return ["split.json must be an object mapping id -> train/val/test"]
    problems = []
    bad = sorted(i for i, s in mapping.items() if s not in SPLIT_NAMES)
    if bad:
        problems.append(f"{len(bad)} ids have a split name other than train/val/test "
                        f"(e.g. {bad[0]!r}: {mapping[bad[0]]!r})")
    unknown = sorted(set(mapping) - set(ids))
    if unknown:
        problems.append(f"{len(unknown)} ids in split.json have no image/mask pair (e.g. {', '.join(unknown[:3])})")
    missing = sorted(set(ids) - set(mapping))
    if missing:
        problems.append(f"{len(missing)} ids are missing from split.json (e.g. {', '.join(missing[:3])})")
    return problems
