"""MISSFormer's exportable antialiased resize and its MiT-B1 weight loading."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from segdeploy.models import create_model
from segdeploy.models.missformer import AntialiasResize, MISSFormer, load_mit_state


@pytest.mark.parametrize("n_in,n_out", [(512, 224), (256, 224), (224, 512), (96, 64)])
def test_antialias_resize_matches_torch_interpolate(n_in, n_out):
    torch.manual_seed(0)
    x = torch.randn(2, 3, n_in, n_in)
    expected = F.interpolate(x, size=(n_out, n_out), mode="bilinear", antialias=True, align_corners=False)
    got = AntialiasResize(n_in, n_out)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # downsampling really is antialiased: plain bilinear differs clearly on noise
    if n_out < n_in:
        plain = F.interpolate(x, size=(n_out, n_out), mode="bilinear", align_corners=False)
        assert (plain - expected).abs().max() > 0.1


@pytest.mark.slow  # a full-width MISSFormer export
def test_resizing_missformer_exports_without_antialiased_resize(tmp_path):
    """The resize-in/out path (what `missformer` does at 512) exports as MatMuls and matches ONNX Runtime."""
    from segdeploy.export.onnx_export import export_onnx, parity

    torch.manual_seed(0)
    model = MISSFormer(2, 3, img_size=96, work_size=64, dims=(16, 32, 48, 64), depths=(1, 1, 1, 1),
                       heads=(1, 2, 3, 4), bridge_depth=1).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, (3, 96, 96))
    graph = onnx.load(str(path)).graph
    antialiased = [n.name for n in graph.node if n.op_type == "Resize"
                   and any(a.name == "antialias" and a.i for a in n.attribute)]
    assert not antialiased
    result = parity(path, model, np.random.default_rng(0).standard_normal((3, 3, 96, 96), dtype=np.float32))
    assert result["max_abs_diff"] < 1e-4 and result["argmax_agreement"] == 1.0
    with pytest.raises(ValueError, match="img_size=128"):
        model(torch.randn(1, 3, 128, 128))


@pytest.mark.parametrize("in_chans", [3, 1])
def test_mit_b1_state_loads_into_the_encoder(in_chans):
    import segmentation_models_pytorch as smp

    assert "imagenet" in smp.encoders.encoders["mit_b1"]["pretrained_settings"]  # what pretrained=True asks for
    torch.manual_seed(0)
    mit = smp.encoders.get_encoder("mit_b1", in_channels=in_chans, weights=None)  # random stand-in, offline
    model = create_model("missformer", num_classes=2, in_chans=in_chans, img_size=224)
    assert load_mit_state(model, mit.state_dict()) == len(mit.state_dict())
    ours = model.backbone.state_dict()
    for key, value in mit.state_dict().items():
        assert torch.equal(ours[key], value), key
    # every encoder tensor came from MiT except the ReMix-FFN LayerNorms MiT does not have
    assert {k for k in ours if k not in mit.state_dict()} == {k for k in ours if ".mlp.norm1." in k}
    with pytest.raises(ValueError, match="does not fit"):
        load_mit_state(model, {"block1.0.attn.q.weight": ours["block1.0.attn.q.weight"]})
