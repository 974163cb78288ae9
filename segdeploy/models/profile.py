"""Parameter count and compute of a model, measured rather than declared.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs. Papers'
"GFLOPs" (fvcore, mmcv, ptflops) are usually multiply-accumulates, i.e. our ``gmacs``; compare against that.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from segdeploy.models import count_params, create_model

PROFILE_SIZE = 512  # the study's input size: GFLOPs are comparable across models only at one size
PROFILE_CLASSES = 2  # the head's width barely changes the totals; binary is the common case


def _count_flops(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def profile_model(model: nn.Module, in_chans: int, img_size: int) -> dict:
    """``params_m`` (millions), ``gmacs`` and ``gflops`` (= 2 x gmacs) of one forward pass at batch 1.

    The forward runs on the meta device (shapes only: under a second even for large models); a model whose
    forward needs real values (``.item()``, data-dependent shapes) is measured with a real CPU forward.
    """
    params = count_params(model)
    was_training = model.training
    model.eval()  # count the inference graph (no dropout, BN in eval)
    try:
        meta_model = copy.deepcopy(model).to("meta")
        flops = _count_flops(meta_model, torch.empty(1, in_chans, img_size, img_size, device="meta"))
    except Exception:  # meta tensors cannot do everything a real forward can
        device = next(model.parameters(), torch.empty(0)).device
        flops = _count_flops(model, torch.zeros(1, in_chans, img_size, img_size, device=device))
    finally:
        model.train(was_training)
    return {"params_m": params / 1e6, "gmacs": flops / 2e9, "gflops": flops / 1e9}


def build_for_profile(name: str) -> nn.Module:
    """``name`` at the declared configuration (PROFILE_SIZE, PROFILE_CLASSES, 3 channels) on the meta device (no
    memory, no weight init: a 50M-parameter model builds in well under a second instead of seconds); on CPU when
    its constructor needs real tensors."""

    kwargs = dict(num_classes=PROFILE_CLASSES, in_chans=3, img_size=PROFILE_SIZE)
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except Exception:  # noqa: BLE001 -- e.g. a constructor that computes something from real values
        return create_model(name, **kwargs)
