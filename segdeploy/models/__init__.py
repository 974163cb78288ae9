"""Model registry, timm style: one flat namespace, ``create_model(name, num_classes, in_chans, img_size)``.

A model family is one file in this package that decorates its factories with :func:`register_model`.
Every model maps a plain tensor (B, in_chans, H, W) to logits (B, num_classes, H, W).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch.nn as nn

from segdeploy.errors import SegdeployError

FAMILIES = ("specialized", "general", "baseline")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # specialized | general | baseline
    source: str  # paper / library the architecture follows
    params_m: float | None = None  # declared parameter count (millions) at the study's configuration
    fixed_size: int | None = None  # the model resizes its input to this size internally
    pretrained: str | None = None  # where --pretrained loads from (hub id / library weights name)
    tiny_of: str | None = None  # for "-tiny" configurations: the full model they shrink
    notes: str = ""
    # an operator the original runs as its own (CUDA) kernel that runs here as plain exportable PyTorch ops: the
    # deployed cost measured for this model is that of this version (the report says so beside its numbers)
    plain_ops: str = ""
    # why a faithful build differs from params_m by more than 10% (verify and tests accept it, and say so)
    params_gap: str = ""
    factory: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("factory")
        return d


_REGISTRY: dict[str, ModelInfo] = {}
# every module of this package is a model family, except these and private (_*) helpers; imported on first use
# so `segdeploy --help` stays fast
_NOT_FAMILIES = {"cli", "profile", "weights", "importers"}
_loaded = False


def register_model(name: str, *, family: str, source: str, **info) -> Callable:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name=name, family=family, source=source, factory=fn, **info)
        return fn

    return deco


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_") and mod.name not in _NOT_FAMILIES:
                importlib.import_module(f"{__name__}.{mod.name}")


def list_models(family: str | None = None) -> list[str]:
    _load_families()
    return sorted(n for n, i in _REGISTRY.items() if family is None or i.family == family)


def model_info(name: str) -> ModelInfo:
    _load_families()
    if name not in _REGISTRY:
        raise SegdeployError(f"unknown model {name!r}.",
                             fix=f"choose one of: {', '.join(sorted(_REGISTRY))} (`segdeploy models`).")
    return _REGISTRY[name]


def plain_ops(name: str) -> str:
    """``plain_ops`` of a model, or of the full model a ``-tiny`` configuration shrinks ("" when none)."""
    info = model_info(name)
    return info.plain_ops or (model_info(info.tiny_of).plain_ops if info.tiny_of else "")


def create_model(name: str, num_classes: int, in_chans: int = 3, img_size: int = 512, *,
                 pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """Build a registered model. ``pretrained`` loads the library's ImageNet encoder weights (needs the
    hub); ``weights`` loads a local checkpoint file into the model (missing/unexpected keys reported)."""
    info = model_info(name)
    model = info.factory(num_classes=num_classes, in_chans=in_chans, img_size=img_size, pretrained=pretrained)
    if weights:
        from segdeploy.models.weights import load_weights

        load_weights(model, weights)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
