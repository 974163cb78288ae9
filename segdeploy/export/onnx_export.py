"""PyTorch -> ONNX with a dynamic batch axis, and the parity check of an ONNX file against PyTorch.

Every exported file has one float32 input ``input`` (B, C, S, S) and one float32 output ``logits``
(B, K, S, S), whatever its precision, so every backend feeds the same normalised batch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from segdeploy.errors import SegdeployError, describe_error
from segdeploy.fileio import atomic_target, commit

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    import torch.nn as nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
LEGACY_OPSET = 17  # the TorchScript exporter's best-tested opset; >= 17 keeps LayerNormalization one op
_PROTOBUF_LIMIT = 2**31 - 1  # a .onnx protobuf cannot exceed 2 GB: larger weights go to a .onnx.data file
_DUMMY_BATCH = 2  # a batch-1 dummy lets dynamo bake batch 1 into reshapes (SegFormer)
_CHECK_BATCHES = (1, 3)  # run through the file to prove the batch axis is dynamic


class ExportFailed(SegdeployError):
    """Neither exporter produced a valid ONNX file with a dynamic batch axis."""


def save_onnx(model_proto: "onnx.ModelProto", path: str | Path) -> Path:
    """Atomic save; weights stay inside the .onnx unless they pass the 2 GB protobuf limit."""
    import onnx

    path = Path(path)
    data_file = path.with_name(path.name + ".data")
    weight_bytes = sum(len(t.raw_data) for t in model_proto.graph.initializer)
    external = weight_bytes > _PROTOBUF_LIMIT
    tmp = atomic_target(path)
    # external data is written straight to its final name: the .onnx commit is what marks the pair complete
    onnx.save_model(model_proto, str(tmp), save_as_external_data=external,
                    location=data_file.name if external else None)
    commit(tmp, path)
    if not external:
        data_file.unlink(missing_ok=True)  # a stale data file from an earlier, larger export
    return path


def remove_onnx(path: str | Path) -> None:
    path = Path(path)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def onnx_opset(path: str | Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ort_session(path: str | Path) -> "onnxruntime.InferenceSession":
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT warns about every unused initializer; errors still raise
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_dynamic_batch(path: str | Path, input_shape: tuple[int, int, int]) -> None:
    """Run the file at batch 1 and 3: an export that baked the dummy's batch into a reshape fails here."""
    session = ort_session(path)
    rng = np.random.default_rng(0)
    c, h, w = input_shape
    for b in _CHECK_BATCHES:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: rng.standard_normal((b, c, h, w), dtype=np.float32)})[0]
        if out.ndim != 4 or out.shape[0] != b or out.shape[2:] != (h, w):
            raise ValueError(f"batch {b} gave logits of shape {out.shape}, expected ({b}, K, {h}, {w}): "
                             "the batch axis is not dynamic")


def _export_dynamo(model: "nn.Module", dummy, path: Path, opset: int) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (dummy,), None, dynamo=True, opset_version=opset, verbose=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: batch},), external_data=False)
    save_onnx(program.model_proto, path)


def _export_legacy(model: "nn.Module", dummy, path: Path, opset: int) -> None:
    import onnx
    import torch

    buffer = io.BytesIO()
    # this exporter always turns its log on (it tests the function _jit_is_onnx_log_enabled, not its value)
    # and dumps the whole graph to stdout when an op fails; stderr keeps `--format json` output parseable
    if hasattr(torch._C, "_jit_set_onnx_log_output_stream"):
        torch._C._jit_set_onnx_log_output_stream("stderr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice is not news to the user
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    save_onnx(onnx.load_from_string(buffer.getvalue()), path)


def export_onnx(model: "nn.Module", path: str | Path, input_shape: tuple[int, int, int], opset: int = 18) -> dict:
    """Export ``model`` to ``path`` (float32, dynamic batch), then ``onnx.checker`` and a batch-1/batch-3 run.

    Tries the dynamo exporter at ``opset`` first and falls back to the TorchScript exporter at opset 17.
    Returns ``{exporter: "dynamo"|"legacy", opset, dynamo_error?}``; raises :class:`ExportFailed` with both
    reasons when neither produces a valid file.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.randn((_DUMMY_BATCH, *input_shape), generator=torch.Generator().manual_seed(0))
    errors: dict[str, str] = {}
    was_training = model.training
    model.eval()
    try:
        for exporter, export, exporter_opset in (("dynamo", _export_dynamo, opset),
                                                 ("legacy", _export_legacy, LEGACY_OPSET)):
            try:
                export(model, dummy, path, exporter_opset)
                onnx.checker.check_model(str(path))  # by path: works for files with external data too
                check_dynamic_batch(path, input_shape)
            except Exception as e:  # any exporter bug or unsupported op: try the next exporter
                errors[exporter] = describe_error(e)
                remove_onnx(path)
                continue
            info = {"exporter": exporter, "opset": exporter_opset}
            if errors:
                info["dynamo_error"] = errors["dynamo"]
            return info
    finally:
        model.train(was_training)
    raise ExportFailed("; ".join(f"{name} exporter: {err}" for name, err in errors.items()), path=path)


def parity(onnx_file: str | Path, model: "nn.Module", batches: np.ndarray | Iterable[np.ndarray],
           batch_size: int = 4) -> dict:
    """Compare ONNX Runtime (CPU) on ``onnx_file`` with the float32 PyTorch ``model`` on the same images.

    ``batches``: one (N, C, S, S) float32 array of preprocessed images or an iterable of such arrays; a big
    array is fed ``batch_size`` images at a time. Returns ``max_abs_diff``, ``mean_abs_diff`` (over all
    logits), ``argmax_agreement`` (fraction of pixels whose predicted class agrees), ``n_images`` and
    ``ref_abs_max`` (the largest |logit| of PyTorch, the scale to judge the differences against).
    """
    import torch

    session = ort_session(onnx_file)
    if isinstance(batches, np.ndarray):
        batches = [batches[i:i + batch_size] for i in range(0, len(batches), batch_size)]
    max_diff = sum_diff = ref_max = 0.0
    n_logits = n_pixels = n_agree = n_images = 0
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0].astype(np.float32)
            ref = model(torch.from_numpy(batch)).float().numpy()
            if got.shape != ref.shape:
                raise ValueError(f"ONNX logits have shape {got.shape}, PyTorch {ref.shape}")
            if not np.isfinite(got).all():
                raise ValueError(f"ONNX Runtime produced {int((~np.isfinite(got)).sum())} non-finite logits")
            diff = np.abs(got - ref)
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.sum(dtype=np.float64))
            ref_max = max(ref_max, float(np.abs(ref).max()))
            n_logits += diff.size
            n_agree += int((got.argmax(1) == ref.argmax(1)).sum())
            n_pixels += ref.shape[0] * ref.shape[2] * ref.shape[3]
            n_images += ref.shape[0]
    if n_images == 0:
        raise ValueError("no images to compare")
    return {"max_abs_diff": max_diff, "mean_abs_diff": sum_diff / n_logits,
            "argmax_agreement": n_agree / n_pixels, "n_images": n_images, "ref_abs_max": ref_max}


def take_given_onnx(given: Path, path: str | Path, input_shape: tuple[int, int, int]) -> dict:
    """An imported ONNX model's own graph (I/O names and batch axis normalised at import) as the fp32 file,
    checked as :func:`export_onnx` checks its own files."""
    import shutil

    import onnx

    from segdeploy.fileio import atomic_target, commit

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    shutil.copyfile(given, tmp)
    commit(tmp, path)
    onnx.checker.check_model(str(path))
    check_dynamic_batch(path, input_shape)
    return {"exporter": "imported", "opset": onnx_opset(path)}


class OrtReference:
    """Stands in for the PyTorch model in export's parity check where there is none (an imported ONNX model):
    onnxruntime on the given fp32 graph, called as the model is (a CPU tensor in, a tensor out)."""

    def __init__(self, path: Path):
        self.session = ort_session(path)

    def eval(self):
        return self

    def __call__(self, x):
        import torch

        return torch.from_numpy(self.session.run(None, {INPUT_NAME: x.numpy()})[0])
