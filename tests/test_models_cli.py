"""``segdeploy models verify all``: per-model rows (params, GMACs, parity, latency), failures as rows, exit codes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import segdeploy.models as models
from segdeploy.fileio import read_json
from segdeploy.models import ModelInfo, count_params, create_model


def _conv_macs(model: nn.Module, in_chans: int, size: int) -> int:
    """Multiply-adds of every (transposed) convolution, counted from forward hooks: the independent way."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        per_position = module.in_channels // module.groups * module.out_channels * module.weight[0, 0].numel()
        # a transposed conv does its multiply-adds once per *input* position, a conv once per output position
        spatial = inputs[0].shape[2:] if isinstance(module, nn.ConvTranspose2d) else output.shape[2:]
        total += output.shape[0] * per_position * spatial.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, in_chans, size, size))
    for h in handles:
        h.remove()
    return total


def _invoke(*args: str):
    from segdeploy.commands.app import app

    return CliRunner().invoke(app, ["models", "verify", *args])


@pytest.mark.slow  # exports and times two models
def test_verify_all_tiny_reports_every_field(monkeypatch, tmp_path):
    # a fixed slice of the registry (it grows while families are added); --tiny must drop the full "unet"
    monkeypatch.setattr(models, "list_models", lambda family=None: ["nnunet-plain-tiny", "unet", "unet-tiny"])
    out = tmp_path / "verify.json"
    result = _invoke("all", "--tiny", "--img-size", "64", "--format", "json", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert read_json(out) == report
    assert [r["model"] for r in report["models"]] == ["nnunet-plain-tiny", "unet-tiny"]
    assert report["summary"] == {"ok": 2, "mismatch": 0, "failed": 0}
    assert report["img_size"] == 64 and report["host"]["cpu_count"] >= 1 and report["host"]["onnxruntime"]
    for row in report["models"]:
        name = row["model"]
        assert row["status"] == "ok" and row["reason"] is None and row["family"] == models.model_info(name).family
        # parameters at the declared configuration (512x512, 2 classes); tiny models declare none
        assert row["params_m"] * 1e6 == pytest.approx(count_params(create_model(name, 2, 3, 512)))
        assert row["declared_params_m"] is None and row["params_ok"] is None
        # GMACs at the verified size: FlopCounterMode agrees with multiply-adds counted by hooks
        assert row["gmacs"] * 1e9 == pytest.approx(_conv_macs(create_model(name, 3, 3, 64), 3, 64))
        assert row["gflops"] == pytest.approx(2 * row["gmacs"])
        assert row["exporter"] == "dynamo" and row["opset"] == 18
        assert set(row["batches"]) == {"1", "3"}
        for b, check in row["batches"].items():
            assert check["n_images"] == int(b) and check["ok"]
            assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0
        lat = row["latency_ms"]
        assert lat["n"] >= 5 and 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]


@pytest.mark.slow  # exports and times two models
def test_failures_become_rows_and_exit_1(monkeypatch, tmp_path):
    """A model that cannot be built is a failed row; a wrong declared size is a mismatch; the next model still
    runs; the table says so; the exit code is 1."""

    def broken(**kwargs):
        raise RuntimeError("deliberately broken constructor")

    unet_tiny = models.model_info("unet-tiny")
    monkeypatch.setitem(models._REGISTRY, "broken-tiny", ModelInfo(
        name="broken-tiny", family="baseline", source="test", tiny_of="unet", factory=broken))
    monkeypatch.setitem(models._REGISTRY, "misdeclared", ModelInfo(
        name="misdeclared", family="baseline", source="test", params_m=1.0, factory=unet_tiny.factory))
    monkeypatch.setattr(models, "list_models", lambda family=None: ["broken-tiny", "misdeclared", "unet-tiny"])
    out = tmp_path / "verify.json"
    result = _invoke("all", "--img-size", "64", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "1 ok, 1 mismatch, 1 failed" in result.stdout
    rows = {r["model"]: r for r in read_json(out)["models"]}
    assert list(rows) == ["broken-tiny", "misdeclared", "unet-tiny"]
    assert rows["broken-tiny"]["status"] == "failed"
    assert "RuntimeError: deliberately broken constructor" in rows["broken-tiny"]["reason"]
    assert rows["misdeclared"]["status"] == "mismatch" and rows["misdeclared"]["params_ok"] is False
    assert "declared 1.0M" in rows["misdeclared"]["reason"]
    assert all(c["ok"] for c in rows["misdeclared"]["batches"].values())  # the export itself was fine
    assert rows["unet-tiny"]["status"] == "ok"


def test_tiny_full_flags_need_all():
    from segdeploy.commands.app import app

    result = CliRunner().invoke(app, ["models", "verify", "unet-tiny", "--full"])
    # a usage error before any model is built: the one error line and nothing else (no table, no traceback)
    assert result.exit_code == 2
    assert result.output == "error: --tiny/--full select among all models. Fix: use `verify all` or drop the flag.\n"
