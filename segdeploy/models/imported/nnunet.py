"""An nnU-Net v2 2d model from the files its import kept: every imported fold's network, built from the plans as
nnU-Net builds it (``get_network_from_plans(..., deep_supervision=False)``) with its weights from
``fold_N.safetensors`` (the pickled checkpoint is never opened again), wrapped as the graph segdeploy deploys
(:class:`NnUNetDeployed`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
import torch.nn as nn

from segdeploy.models.imported import require_extra


def build_network(plans: dict, config_name: str, in_chans: int, k: int) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"][config_name]["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  in_chans, k, allow_init=True, deep_supervision=False)


class NnUNetDeployed(nn.Module):
    """Normalised tiles (B, C, P, P) -> logits averaged over mirrors and folds (per tile, as nnUNetPredictor's
    ``_internal_maybe_mirror_and_predict``; its fold average is linear, so it commutes with the tiling)."""

    def __init__(self, nets: list[nn.Module], mirror_axes: list[int]):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        spatial = [a + 2 for a in mirror_axes]
        self.flips = [()] + [c for i in range(len(spatial)) for c in itertools.combinations(spatial, i + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0
        for net in self.nets:
            for axes in self.flips:
                total = total + (torch.flip(net(torch.flip(x, axes)), axes) if axes else net(x))
        return total / (len(self.nets) * len(self.flips))


def build(source_dir: Path, record) -> nn.Module:
    require_extra("nnunetv2", "nnunet", "nnunet")
    from safetensors.torch import load_file

    plans = json.loads((source_dir / "plans.json").read_text())
    dataset = json.loads((source_dir / "dataset.json").read_text())
    details = record.details
    pipeline = details["pipeline"]
    nets = []
    for f in pipeline["folds"]:
        net = build_network(plans, details["configuration"], len(dataset["channel_names"]), len(dataset["labels"]))
        net.load_state_dict(load_file(str(source_dir / f"fold_{f}.safetensors")), strict=True)
        nets.append(net.eval())
    axes = pipeline["mirror_axes"] if pipeline["mirroring"] else []
    return NnUNetDeployed(nets, axes).eval()
