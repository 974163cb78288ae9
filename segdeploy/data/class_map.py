"""Class maps: merge or select a dataset's classes, e.g. NeoPolyp's two polyp classes as one ``polyp``.

A map names target classes and the source labels each takes, written inline (``"polyp=1,2"``; several targets
separated by ``;``: ``"rv=1;myo=2;lv=3"``) or as a JSON file (``{"polyp": [1, 2]}``). Source labels are mask
values or source class names. The target holding source label 0 is index 0 (``background=0`` is implied when
no target names it), the others follow in the order written, and every source label the map does not name goes
to background, so ``"lv=3"`` trains the left ventricle alone.

``open_dataset(spec, class_map=...)`` applies a map: the dataset's ``classes``/``num_classes`` and every mask it
loads are the mapped ones, so training, export, bench and cam need no other change. A training run records the
resolved map (``ResolvedClassMap.record``) in its model.json, which :meth:`ClassMap.parse` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.errors import SegdeployError

BACKGROUND = "background"
_FIX = 'write the map as "name=label,label;name=label" (e.g. "polyp=1,2") or a JSON file {"polyp": [1, 2]}.'


@dataclass(frozen=True)
class ClassMap:
    """Target class name -> source labels (mask values as int, or source class names), in the order given."""

    targets: tuple[tuple[str, tuple[int | str, ...]], ...]
    text: str  # how the map was given, for messages and records

    @classmethod
    def parse(cls, spec: str | Path | Mapping | ClassMap) -> ClassMap:
        """A map from inline text, a JSON file path, or a mapping (e.g. the record in a run's model.json)."""
        if isinstance(spec, ClassMap):
            return spec
        if isinstance(spec, Mapping):
            return cls._from_mapping(spec, text=json.dumps(dict(spec)))
        text = str(spec).strip()
        path = Path(text).expanduser()
        if text.endswith(".json") or (path.is_file() and "=" not in text):
            from segdeploy.fileio import read_json

            data = read_json(path)
            if not isinstance(data, dict):
                raise SegdeployError("a class-map file must hold a JSON object.", path=path, fix=_FIX)
            return cls._from_mapping(data, text=str(path))
        targets = []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            name, eq, labels = part.partition("=")
            if not eq or not name.strip() or not labels.strip():
                raise SegdeployError(f"class map {text!r}: {part!r} is not name=labels.", fix=_FIX)
            targets.append((name.strip(), tuple(_label(t) for t in labels.split(",") if t.strip())))
        return cls._checked(targets, text)

    @classmethod
    def _from_mapping(cls, data: Mapping, text: str) -> ClassMap:
        targets = []
        for name, labels in data.items():
            if isinstance(labels, (str, int)) and not isinstance(labels, bool):
                labels = [labels]
            if not isinstance(labels, Sequence) or not labels:
                raise SegdeployError(f"class map {text}: {name!r} must list source labels, got {labels!r}.", fix=_FIX)
            targets.append((str(name), tuple(_label(v) for v in labels)))
        return cls._checked(targets, text)

    @classmethod
    def _checked(cls, targets: list, text: str) -> ClassMap:
        if not targets:
            raise SegdeployError(f"class map {text!r} names no class.", fix=_FIX)
        names = [n for n, _ in targets]
        if len(set(names)) != len(names):
            raise SegdeployError(f"class map {text!r} names a class twice.", fix=_FIX)
        return cls(tuple(targets), text)

    def resolve(self, source_classes: Sequence[str], *, path: str | Path | None = None) -> ResolvedClassMap:
        """The map applied to a dataset with ``source_classes``; SegdeployError when it does not fit them."""
        k = len(source_classes)
        fix = f"name labels 0..{k - 1} or the source classes ({', '.join(source_classes)})."
        sources: dict[str, list[int]] = {}
        taken: dict[int, str] = {}
        for name, labels in self.targets:
            idx = []
            for lab in labels:
                if isinstance(lab, str):
                    if lab not in source_classes:
                        raise SegdeployError(f"class map {self.text!r}: no source class named {lab!r}.", path=path,
                                             fix=fix)
                    lab = list(source_classes).index(lab)
                if not 0 <= lab < k:
                    raise SegdeployError(f"class map {self.text!r}: label {lab} is outside the dataset's {k} "
                                         f"classes.", path=path, fix=fix)
                if lab in taken:
                    raise SegdeployError(f"class map {self.text!r}: label {lab} ({source_classes[lab]}) goes to both "
                                         f"{taken[lab]!r} and {name!r}.", path=path, fix="give each label one class.")
                taken[lab] = name
                idx.append(lab)
            sources[name] = idx
        if 0 in taken:
            first = taken[0]
        elif BACKGROUND in sources:
            raise SegdeployError(f"class map {self.text!r}: 'background' does not hold label 0.", path=path,
                                 fix="add 0 to background's labels, or name label 0's class otherwise.")
        else:  # "background=0" implied
            first = BACKGROUND
            sources = {first: [0], **sources}
        order = [first] + [n for n in sources if n != first]
        lut = np.zeros(256, np.uint8)  # every label the map does not name is background (index 0)
        for j, name in enumerate(order):
            lut[sources[name]] = j
        unnamed = [i for i in range(k) if i not in taken and i != 0]
        return ResolvedClassMap(classes=order, sources={n: sorted(sources[n]) for n in order}, lut=lut,
                                source_classes=list(source_classes), to_background=unnamed)


@dataclass(frozen=True)
class ResolvedClassMap:
    classes: list[str]  # target classes, background first
    sources: dict[str, list[int]]  # target class -> source mask values
    lut: np.ndarray  # (256,) uint8: source value -> target index
    source_classes: list[str]
    to_background: list[int]  # source labels the map does not name (they count as background)

    def apply(self, mask: np.ndarray) -> np.ndarray:
        return self.lut[mask]

    @property
    def record(self) -> dict[str, list[int]]:
        """What a run stores in model.json (``dataset.class_map``); :meth:`ClassMap.parse` reads it back."""
        return {n: list(v) for n, v in self.sources.items()}

    def describe(self) -> str:
        parts = [f"{n}={'+'.join(self.source_classes[i] for i in v)}" for n, v in self.sources.items()]
        return "; ".join(parts)


def _label(token: object) -> int | str:
    if isinstance(token, bool):
        raise SegdeployError(f"class map label {token!r} is neither a mask value nor a class name.", fix=_FIX)
    if isinstance(token, int):
        return token
    text = str(token).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def check_run_classes(run_name: str, run_classes: Sequence[str], dataset) -> None:
    """Refuse (before any work) a mapped dataset whose classes are not the run's, by name and order."""
    if list(run_classes) != list(dataset.classes):
        raise SegdeployError(
            f"run {run_name} predicts classes [{', '.join(run_classes)}]; dataset {dataset.name} mapped with "
            f"--class-map {dataset.class_map_text!r} gives [{', '.join(dataset.classes)}].",
            path=dataset.root, fix="name the run's classes in the map, in the run's order (e.g. "
                                   f"'{';'.join(f'{c}=...' for c in run_classes[1:])}'), using "
                                   f"the dataset's labels {', '.join(dataset.source_classes)}.")


def dataset_for_run(dataset, run_meta, class_map: str | Path | Mapping | None, *, run_name: str = "run"):
    """The view of ``dataset`` a run (``run_meta``: its ``segdeploy.records.RunMeta``) is scored on: ``class_map``
    when given (its classes must be the run's); else, on the run's own training set, the map the run was trained
    with; else ``dataset`` itself."""
    recorded = run_meta.dataset.class_map
    if class_map is None and recorded and dataset.name in run_meta.dataset.names():
        class_map = recorded
    if class_map is None:
        return dataset
    view = dataset.with_class_map(class_map)
    check_run_classes(run_name, run_meta.classes or [], view)
    return view


def class_map_record(dataset) -> dict:
    """What a training run records under model.json ``dataset`` when a class map was applied (else nothing)."""
    if dataset.class_map is None:
        return {}
    return {"class_map": dataset.class_map.record, "source_classes": dataset.class_map.source_classes}
