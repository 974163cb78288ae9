"""CPU training speed-ups: the decoded-image caches, the bf16 autocast choice, and a bf16 training run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from segdeploy.machine import cpuinfo
from segdeploy.data import open_dataset
from segdeploy.data.transforms import TorchSegDataset, TrainAugment
from segdeploy.errors import SegdeployError
from segdeploy.train import TrainConfig, train_model
from segdeploy.train.guard import check_config
from segdeploy.train.precision import amp_mode, autocast_dtype


def _counting(ds):
    loads: list[str] = []
    real = ds.load
    ds.load = lambda i: loads.append(i) or real(i)
    return loads


def test_training_cache_gives_the_arrays_of_fresh_decoding_and_keeps_to_its_budget():
    ds = open_dataset("synthetic:12")
    ids = ds.ids[:5]
    loads = _counting(ds)
    fresh = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5], cache_bytes=0)
    cached = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5])
    one_image = 64 * 64 * 2  # 1 channel uint8 + uint8 mask
    bounded = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5], cache_bytes=2 * one_image)
    for epoch in range(2):
        for j in range(len(ids)):
            a, b, c = fresh[j], cached[j], bounded[j]
            for x, y in ((a, b), (a, c)):
                assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    assert loads.count(ids[0]) == 2 + 1 + 1  # fresh decodes it each epoch, the caches once
    assert loads.count(ids[4]) == 2 + 1 + 2  # past the bounded cache's budget: decoded each epoch
    assert cached.cached_bytes == 5 * one_image and bounded.cached_bytes == 2 * one_image
    # augmentation still runs per access on the kept arrays: the same draws give the same result as decoding
    aug_fresh = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5], augment=TrainAugment(64), cache_bytes=0)
    aug_cached = TorchSegDataset(ds, ids, 64, mean=[0.5], std=[0.5], augment=TrainAugment(64)).preload()
    torch.manual_seed(3)
    first = [aug_fresh[j] for j in range(len(ids))]
    torch.manual_seed(3)
    second = [aug_cached[j] for j in range(len(ids))]
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(aug_cached[0][0], aug_cached[0][0])  # and a new draw on every access


def test_prepared_images_budget_keeps_some_and_scores_the_same():
    from segdeploy.evaluation.evaluate import PreparedImages, evaluate

    ds = open_dataset("synthetic:12")
    ids = ds.ids[:4]
    loads = _counting(ds)
    kw = dict(img_size=64, mean=[0.5], std=[0.5], num_classes=ds.num_classes, batch=2, compute_hd95=False)
    predict = lambda x: np.concatenate([x, -x, x * 0.5, x * 0.2], axis=1)  # noqa: E731 -- 4 "classes" of logits
    small = PreparedImages(ds, max_bytes=1)
    full = PreparedImages(ds)
    results = [evaluate(predict, kept, ids, **kw) for kept in (small, small, full, full)]
    assert small.kept_bytes == 0 and full.kept_bytes > 0
    assert loads.count(ids[0]) == 2 + 1
    for r in results[1:]:
        assert r.metrics == results[0].metrics
        np.testing.assert_array_equal(r.confusion, results[0].confusion)


def _isa(bf16):
    return lambda *a, **k: {"arch": "x86_64", "logical_cpus": 2, "features": [], "int8": None, "bf16": bf16,
                            "fp16": None}


def test_amp_auto_is_bf16_only_on_a_cpu_that_computes_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(cpuinfo, "cpu_isa", _isa(None))  # e.g. Skylake or Haswell: no bf16 instructions
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, True) is None  # an older config's amp=True means auto
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16  # forced: emulated, but asked for
    monkeypatch.setattr(cpuinfo, "cpu_isa", _isa("BF16"))  # Arm BF16: not a path PyTorch's CPU kernels use
    assert autocast_dtype(cpu, "auto") is None
    for path in ("AVX512-BF16", "AMX-BF16"):
        monkeypatch.setattr(cpuinfo, "cpu_isa", _isa(path))
        assert autocast_dtype(cpu, "auto") is torch.bfloat16
        assert autocast_dtype(cpu, None) is None  # without --amp a CPU trains in fp32
        assert autocast_dtype(cpu, "off") is None and autocast_dtype(cpu, False) is None
    assert amp_mode(None, torch.device("cuda")) == "auto"  # without --amp a GPU keeps mixed precision
    with pytest.raises(SegdeployError, match="fp16"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(SegdeployError, match="--amp 'fast'"):
        check_config(TrainConfig(data="synthetic", model="unet-tiny", out="x", amp="fast"))


def test_one_epoch_in_bf16_has_finite_loss_and_records_it(tmp_path):
    meta = train_model(TrainConfig(data="synthetic:24", model="unet-tiny", out=tmp_path / "run", epochs=1,
                                   img_size=64, batch_size=4, lr=1e-3, device="cpu", k=3, amp="bf16",
                                   channels_last=True), progress=False)
    [epoch] = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert math.isfinite(epoch["loss"]) and 0 < epoch["loss"] < 10
    on_disk = json.loads((tmp_path / "run" / "model.json").read_text())
    assert on_disk["amp"] == meta.amp == "bfloat16" and on_disk["config"]["amp"] == "bf16"
    assert on_disk["protocol"]["precision"].startswith("bfloat16 autocast")
    assert 0 <= on_disk["val"]["dice"] <= 1
