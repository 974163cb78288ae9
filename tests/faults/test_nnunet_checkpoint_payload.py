"""An nnU-Net checkpoint is a pickle: a payload in it must never run. ``load_checkpoint`` reads with
``torch.load(weights_only=True)`` and allows only numpy's scalar and dtype types (what nnU-Net's logs hold)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from segdeploy.errors import SegdeployError
from segdeploy.models.importers.nnunet import load_checkpoint


class _Payload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):  # what an attacker's checkpoint does: code run by the unpickler
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def test_a_payload_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "written-by-payload"
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "init_args": _Payload(str(target))}, path)
    with pytest.raises(SegdeployError, match="refused unread") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    assert not target.exists()
    # the payload is live: nnU-Net's own loader (weights_only=False) would have run it
    torch.load(path, weights_only=False)
    assert target.read_text() == "pwned"
    os.remove(target)


def test_numpy_scalars_and_dtypes_of_nnunet_logs_load(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(3)}, "_best_ema": np.float64(0.5),
                "logging": {"ema_fg_dice": [np.float32(0.1), np.float64(0.2)], "dtype": np.dtype("float32")},
                "inference_allowed_mirroring_axes": (0, 1), "trainer_name": "nnUNetTrainer"}, path)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["network_weights"]["w"], torch.ones(3)) and float(ckpt["_best_ema"]) == 0.5
    assert ckpt["inference_allowed_mirroring_axes"] == (0, 1)
