"""Parameter count and compute of a model, measured rather than declared.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs. Papers'
"GFLOPs" (fvcore, mmcv, ptflops) are usually multiply-accumulates, i.e. our ``gmacs``; compare against that.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from segdeploy.models import count_params


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
