"""The study file: TOML, loaded into a typed :class:`StudyConfig`, every key checked.

A mistake is one :class:`SegdeployError` naming the key, the file and the fix, raised before any work starts.
Unknown keys are errors too (with the closest known key suggested), so a typo cannot silently fall back to a
default and cost a night of GPU time. ``segdeploy study init`` writes the commented templates in ``templates/``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from segdeploy.bench.config import BenchConfig
from segdeploy.engines import BACKENDS
from segdeploy.errors import SegdeployError, warn
from segdeploy.records import key_default, key_help
from segdeploy.study.values import _bool, _checked, _int, _name, _names, _number
from segdeploy.train.config import TrainConfig

TEMPLATES = ("demo", "reference", "cost")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


# The study keys that are training's or bench's settings: study key -> the field of TrainConfig / BenchConfig that
# owns its name, default and help text. Their order is the plan's fingerprint order (segdeploy.study.plan): append,
# never reorder. Bench's batch is `bench_batch` here, as the study file also holds training's `batch_size`.
TRAIN_KEYS = {"k": "k", "epochs": "epochs", "img_size": "img_size", "batch_size": "batch_size", "seed": "seed",
              "patience": "patience", "augment": "augment", "pretrained": "pretrained",
              "max_train_images": "max_train_images"}
BENCH_KEYS = {"device": "device", "bench_batch": "batch", "duration": "duration", "isolate": "isolate",
              "threads": "threads", "timeout": "timeout"}
# old study key -> its new name: still read, with one line saying so (plan.json files of old studies are read too)
DEPRECATED_KEYS = {"batch": "batch_size"}


def _train(name: str):
    return field(default=key_default(TrainConfig, TRAIN_KEYS[name]))


def _bench(name: str):
    return field(default=key_default(BenchConfig, BENCH_KEYS[name]))


def key_doc(study_key: str) -> str:
    """The help text of a study key owned by TrainConfig or BenchConfig ("" for the study's own keys)."""
    if study_key in TRAIN_KEYS:
        return key_help(TrainConfig, TRAIN_KEYS[study_key])
    if study_key in BENCH_KEYS:
        return key_help(BenchConfig, BENCH_KEYS[study_key])
    return ""


def upgrade_keys(table: dict, *, say: Callable[[str], None] | None = None) -> dict:
    """``table`` with deprecated keys renamed; ``say`` gets one line per old key naming the new one. Both the old
    and the new name at once is an error (which one is meant?)."""
    out = dict(table)
    for old, new in DEPRECATED_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"both `{old}` and `{new}` are given; `{old}` is the old name of `{new}`")
        out[new] = out.pop(old)
        if say:
            say(f"`{old}` is deprecated: write `{new}` (read as {new} = {out[new]!r}).")
    return out


@dataclass(frozen=True)
class Resources:
    """What one cell reserves. ``num_cpus`` is also torch's thread count in every executor, so a cell computes
    the same numbers whether it runs locally or on Ray (CPU reductions depend on the thread count)."""

    num_cpus: int = 1
    num_gpus: float = 0.0
    max_retries: int = 3  # Ray: re-run a cell whose worker died (the cell resumes from its checkpoint)


@dataclass(frozen=True)
class CrossTarget:
    """Runs trained on ``source`` are also scored on ``target`` (another dataset), optionally through a class map
    on the target's labels (``segdeploy.data.class_map``): ``"polyp=1"`` scores the target's label 1 as the runs'
    class ``polyp``; the mapped classes must be the runs' classes, by name and order."""

    source: str
    target: str
    name: str
    class_map: str | None = None
    split: str = "all"


@dataclass(frozen=True)
class StudyConfig:
    name: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    train: bool = True
    k: int = _train("k")
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lr: tuple[float, ...] = (1e-4, 5e-5, 1e-5)
    # training's and bench's keys: defaults (and help texts, names) are TrainConfig's and BenchConfig's
    epochs: int = _train("epochs")
    img_size: int = _train("img_size")
    batch_size: int = _train("batch_size")
    seed: int = _train("seed")
    patience: int = _train("patience")
    augment: float = _train("augment")
    pretrained: bool = _train("pretrained")
    max_train_images: int | None = _train("max_train_images")
    backends: tuple[str, ...] = ("torch", "onnxruntime")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    device: str = _bench("device")
    bench_batch: int = _bench("bench_batch")
    duration: float = _bench("duration")
    # "process", as `segdeploy bench` does; "none" runs them in the cell's process (faster to start; no memory figures)
    isolate: str = _bench("isolate")
    threads: int | None = _bench("threads")  # None here: resources.num_cpus (see bench_threads)
    timeout: float | None = _bench("timeout")  # needs isolate "process"
    gradcam: bool = False
    gradcam_worst: int = 8
    resources: Resources = field(default_factory=Resources)
    cross: tuple[CrossTarget, ...] = ()
    # dataset (as in ``datasets``) -> the class map it is trained with, e.g. NeoPolyp as one "polyp=1,2" class
    class_maps: dict[str, str] = field(default_factory=dict)
    # models trained elsewhere ([[imported]] tables, segdeploy.study.imported): one cell per dataset, no training
    imported: tuple = ()
    path: str | None = field(default=None, compare=False)  # the file it came from (not part of the study)

    @property
    def bench_threads(self) -> int:
        """Host threads of the CPU runtimes at bench: ``threads``, else what the cell reserves."""
        return self.threads or self.resources.num_cpus

    def as_dict(self) -> dict:
        """Plain JSON-able form (lists, no file path): what plan.json records and compares."""
        d = asdict(self)
        d.pop("path")
        if not d["imported"]:  # plans written before imported models existed stay the same plan
            d.pop("imported")
        return _lists(d)


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


_COMMENT_AT, _WIDTH = 44, 120  # the templates' comment column and line width
_KEY_LINE = re.compile(r"^(# )?([a-z_]+) = [^#]*$")


def _documented(line: str) -> list[str]:
    """A template line setting a key TrainConfig or BenchConfig owns, without a comment of its own, gets that key's
    help text as its comment (wrapped at the comment column); a line with a comment says what is particular to the
    study and is kept."""
    m = _KEY_LINE.match(line)
    doc = key_doc(m.group(2)) if m else ""
    if not doc:
        return [line]
    import textwrap

    head = line.rstrip().ljust(_COMMENT_AT - 1) + " "
    wrapped = textwrap.wrap(doc, _WIDTH - _COMMENT_AT - 2)
    return [f"{head}# {wrapped[0]}", *(" " * _COMMENT_AT + f"# {w}" for w in wrapped[1:])]


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise SegdeployError(f"unknown study template {name!r}.", fix=f"use one of {', '.join(TEMPLATES)}.")
    text = resources.files("segdeploy.study").joinpath("templates", f"{name}.toml").read_text(encoding="utf-8")
    return "\n".join(out for line in text.split("\n") for out in _documented(line))


def _toml_loads(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file."""
    path = Path(path)
    if not path.is_file():
        raise SegdeployError("study file not found.", path=path,
                             fix="write one with `segdeploy study init --template demo|reference|cost PATH`.")
    try:
        data = _toml_loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SegdeployError(f"not UTF-8 text ({e.reason}).", path=path, fix="save the study file as UTF-8.") from e
    except ValueError as e:  # tomllib.TOMLDecodeError; its message names line and column
        raise SegdeployError(f"not valid TOML: {e}.", path=path,
                             fix="correct the line named (compare with `segdeploy study init`'s template).") from e
    return parse_study(data, path=path.resolve(), default_name=path.stem)


# key -> (checker, example shown in the fix); a checker returns the normalised value or raises ValueError(problem)
def _lrs(v: Any) -> tuple[float, ...]:
    v = v if isinstance(v, list) else [v]
    values = tuple(_number()(x) for x in v)
    if not values or len(set(values)) != len(values):
        raise ValueError(f"must be a non-empty list of distinct learning rates, got {v!r}")
    return values


def _device(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


def _isolate(v: Any) -> str:
    if v not in ("process", "none"):
        raise ValueError(f"must be \"process\" or \"none\", got {v!r}")
    return v


def _split(v: Any) -> str:
    if v not in ("all", "train", "val", "test"):
        raise ValueError(f"must be all, train, val or test, got {v!r}")
    return v


def _class_map(v: Any) -> str:
    """Inline ``"name=labels;..."`` or a JSON file, checked by segdeploy.data.class_map's parser (whether its
    labels exist is checked against the dataset when the study starts)."""
    from segdeploy.data.class_map import ClassMap

    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a class map such as \"polyp=1,2\" or a JSON file, got {v!r}")
    try:
        ClassMap.parse(v)
    except SegdeployError as e:
        raise ValueError(f"is not a class map ({e.message})") from None
    return v.strip()


_TOP: dict[str, tuple[Callable[[Any], Any], str]] = {
    "name": (_name, 'name = "my-study"'),
    "models": (_names, 'models = ["unet", "segformer-b3"] (see `segdeploy models`)'),
    "datasets": (_names, 'datasets = ["data/neopolyp", "synthetic"] (folders or registered names)'),
    "train": (_bool, "train = true (false: cost only, random weights)"),
    "k": (_int(2), "k = 5"),
    "folds": (lambda v: v, 'folds = "all" or folds = [0, 1]'),  # checked against k below
    "lr": (_lrs, "lr = [1e-4, 5e-5, 1e-5]"),
    "epochs": (_int(1), "epochs = 150"),
    "img_size": (_int(16), "img_size = 512"),
    "batch_size": (_int(1), "batch_size = 8"),
    "seed": (_int(0), "seed = 42"),
    "patience": (_int(1), "patience = 20"),
    "augment": (_number(positive=False), "augment = 1.0"),
    "pretrained": (_bool, "pretrained = false"),
    "max_train_images": (_int(1), "max_train_images = 200 (or leave the key out)"),
    "backends": (_names, 'backends = ["torch", "onnxruntime"]'),
    "precisions": (_names, 'precisions = ["fp32", "fp16", "int8"]'),
    "device": (_device, 'device = "auto"'),
    "bench_batch": (_int(1), "bench_batch = 8"),
    "duration": (_number(), "duration = 1.0"),
    "isolate": (_isolate, 'isolate = "process"'),
    "threads": (_int(1), "threads = 2 (or leave the key out: resources.num_cpus)"),
    "timeout": (_number(), "timeout = 1800.0 (seconds; or leave the key out)"),
    "gradcam": (_bool, "gradcam = false"),
    "gradcam_worst": (_int(1), "gradcam_worst = 8"),
}
_RESOURCES = {
    "num_cpus": (_int(1), "num_cpus = 1"),
    "num_gpus": (_number(positive=False), "num_gpus = 1"),
    "max_retries": (_int(0), "max_retries = 3"),
}
_CROSS = {
    "source": (_name, 'source = "data/neopolyp"'),
    "target": (_name, 'target = "data/kvasir"'),
    "name": (_name, 'name = "kvasir"'),
    "class_map": (_class_map, 'class_map = "polyp=1,2"'),
    "split": (_split, 'split = "all"'),
}
_TABLES = {"resources": _RESOURCES, "cross": _CROSS, "class_maps": None, "imported": None}


def parse_study(data: dict, *, path: str | Path | None = None, default_name: str = "study") -> StudyConfig:
    """A :class:`StudyConfig` from parsed TOML, every key checked (errors name ``path``)."""
    from segdeploy.models import list_models

    top = {k: v for k, v in data.items() if k not in _TABLES}
    try:
        top = upgrade_keys(top, say=lambda line: warn(line, path=path))  # one yellow line on the command line
    except ValueError as e:
        raise SegdeployError(f"{e}.", path=path, fix="keep only the new name.") from None
    values = _checked(top, _TOP, "", path)
    if "models" not in values and data.get("imported"):
        values["models"] = ()  # only imported models
    for key in ("models", "datasets"):
        if key not in values:
            raise SegdeployError(f"`{key}` is missing.", path=path, fix=f"write e.g. {_TOP[key][1]}.")

    known = set(list_models())
    unknown = [m for m in values["models"] if m not in known]
    if unknown:
        raise SegdeployError(f"`models` names unregistered model(s) {', '.join(unknown)}.", path=path,
                             fix=f"choose from `segdeploy models`: {', '.join(sorted(known))}.")

    bad = [b for b in values.get("backends", ()) if b not in BACKENDS]
    if bad:
        raise SegdeployError(f"`backends` has unknown backend(s) {', '.join(bad)}.", path=path,
                             fix=f"choose from {', '.join(BACKENDS)}.")
    bad = [p for p in values.get("precisions", ()) if p not in PRECISIONS]
    if bad:
        raise SegdeployError(f"`precisions` has unknown precision(s) {', '.join(bad)}.", path=path,
                             fix=f"choose from {', '.join(PRECISIONS)}.")

    if values.get("timeout") is not None and values.get("isolate", "process") != "process":
        raise SegdeployError("`timeout` needs isolate = \"process\" (a configuration in the cell's process cannot "
                             "be stopped).", path=path, fix='remove `timeout` or write isolate = "process".')

    k = values.get("k", 5)
    folds = values.get("folds", "all")
    if folds == "all":
        values["folds"] = tuple(range(k))
    else:
        ok = isinstance(folds, list) and folds and all(isinstance(f, int) and not isinstance(f, bool)
                                                       and 0 <= f < k for f in folds)
        if not ok or len(set(folds)) != len(folds):
            raise SegdeployError(f"`folds` must be \"all\" or a list of distinct folds in 0..{k - 1} (k = {k}), "
                                 f"got {folds!r}.", path=path, fix='write e.g. folds = "all" or folds = [0, 1].')
        values["folds"] = tuple(folds)

    resources_table = data.get("resources", {})
    if not isinstance(resources_table, dict):
        raise SegdeployError("`resources` must be a table.", path=path, fix="write [resources] then num_cpus = 1.")
    resources_values = Resources(**_checked(resources_table, _RESOURCES, "resources.", path))

    cross_list = data.get("cross", [])
    if isinstance(cross_list, dict):
        cross_list = [cross_list]
    if not isinstance(cross_list, list) or not all(isinstance(c, dict) for c in cross_list):
        raise SegdeployError("`cross` must be an array of tables.", path=path,
                             fix='write [[cross]] then source = "...", target = "...".')
    cross = tuple(_cross(c, values["datasets"], path) for c in cross_list)
    class_maps = _class_maps(data.get("class_maps", {}), values["datasets"], path)
    names = [c.name for c in cross]
    if len(set(names)) != len(names):
        raise SegdeployError(f"`cross.name` repeats: {names}.", path=path,
                             fix="give each [[cross]] target its own name = \"...\".")

    cross, class_maps = _resolve_datasets(values, cross, class_maps, Path(path).resolve().parent if path else None,
                                          path)
    train = values.get("train", True)
    if not train and values.get("gradcam"):
        raise SegdeployError("`gradcam` = true with `train` = false: Grad-CAM of random weights explains nothing.",
                             path=path, fix="set gradcam = false for a cost-only study.")
    if not train and cross:
        raise SegdeployError("`cross` targets with `train` = false: a cost-only study scores nothing.", path=path,
                             fix="remove the [[cross]] tables, or set train = true.")
    from segdeploy.study.imported import parse_imported

    imported = parse_imported(data.get("imported", []), models=values["models"],
                              base=Path(path).resolve().parent if path else None, path=path)
    if imported and class_maps:
        raise SegdeployError("[[imported]] models with [class_maps]: an imported model is scored on the dataset's "
                             "own classes.", path=path, fix="run the imported models in a study without class_maps.")
    name = values.pop("name", None) or default_name
    return StudyConfig(name=name, resources=resources_values, cross=cross, class_maps=class_maps,
                       imported=imported, path=str(path) if path else None, **values)


def _cross(table: dict, datasets: tuple[str, ...], path) -> CrossTarget:
    values = _checked(table, _CROSS, "cross.", path)
    for key in ("source", "target"):
        if key not in values:
            raise SegdeployError(f"`cross.{key}` is missing.", path=path, fix=f"write e.g. {_CROSS[key][1]}.")
    if values["source"] not in datasets:
        raise SegdeployError(f"`cross.source` {values['source']!r} is not one of `datasets` {list(datasets)}.",
                             path=path, fix="name the training dataset exactly as it is written in `datasets`.")
    values.setdefault("name", dataset_key(values["target"]))
    return CrossTarget(**values)


def _class_maps(table: Any, datasets: tuple[str, ...], path) -> dict[str, str]:
    if not isinstance(table, dict):
        raise SegdeployError("`class_maps` must be a table.", path=path,
                             fix='write [class_maps] then "data/neopolyp" = "polyp=1,2".')
    out = {}
    for key, value in table.items():
        if key not in datasets:
            raise SegdeployError(f"`class_maps` names {key!r}, which is not one of `datasets` {list(datasets)}.",
                                 path=path, fix="name the dataset exactly as it is written in `datasets`.")
        try:
            out[key] = _class_map(value)
        except ValueError as e:
            raise SegdeployError(f"`class_maps.{key}` {e}.", path=path,
                                 fix='write e.g. "data/neopolyp" = "polyp=1,2".') from None
    return out


def is_registered(spec: str) -> bool:
    """``spec`` names a registered dataset (``synthetic``, ``synthetic:48``), not a folder (the rule of
    :func:`segdeploy.data.folder.resolve_spec`, without generating anything)."""
    from segdeploy.data import list_datasets

    return "/" not in spec and spec.partition(":")[0] in list_datasets()


def dataset_key(spec: str) -> str:
    """How a dataset is named in cells and rows: a registered name as written, a folder by its own name
    (what bench writes in a row's ``dataset``)."""
    return spec if is_registered(spec) else Path(spec).expanduser().resolve().name


def _resolve_datasets(values: dict, cross: tuple[CrossTarget, ...], class_maps: dict[str, str], base: Path | None,
                      path) -> tuple[tuple[CrossTarget, ...], dict[str, str]]:
    """Folders written relative are relative to the study file (so workers with another working directory find
    them); registered names stay as they are."""
    def resolved(spec: str) -> str:
        if is_registered(spec):
            return spec
        p = Path(spec).expanduser()
        return str((base / p).resolve() if base is not None and not p.is_absolute() else p.resolve())

    keys = [dataset_key(resolved(d)) for d in values["datasets"]]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise SegdeployError(f"`datasets` has two entries named {', '.join(dupes)} (a folder is named by its last "
                             "path component).", path=path, fix="rename one of the folders.")
    values["datasets"] = tuple(resolved(d) for d in values["datasets"])
    return (tuple(CrossTarget(source=resolved(c.source), target=resolved(c.target), name=c.name,
                              class_map=c.class_map, split=c.split) for c in cross),
            {resolved(k): v for k, v in class_maps.items()})
