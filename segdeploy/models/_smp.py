"""Helpers for models built from segmentation_models_pytorch (smp).

smp builds encoders from a name looked up in ``smp.encoders.encoders``; extending that table is how smp
documents custom encoders, and it is how the ``-tiny`` configurations get the same encoder code with
fewer channels and blocks.
"""

from __future__ import annotations

import copy



def register_smp_encoder(name: str, base: str, **params) -> str:
    """Add an smp encoder ``name`` that is ``base`` with ``params`` overridden (no pretrained weights)."""
    from segmentation_models_pytorch.encoders import encoders

    if name not in encoders:
        entry = copy.deepcopy(encoders[base])
        entry["params"].update(params)
        entry["pretrained_settings"] = {}
        encoders[name] = entry
    return name


def smp_weights(pretrained: bool) -> str | None:
    """smp downloads ImageNet encoder weights from its hub when asked; offline that fails loudly."""
    return "imagenet" if pretrained else None


