"""``onnx``: any ONNX file with one NCHW float input and one NCHW class-logit (or probability) output.

The file cannot say how its inputs were normalised, so the user gives ``--mean/--std`` (and ``--size``,
``--classes``, ``--in-chans`` where its shape is symbolic), or the same keys in a JSON (``--spec``). The run
keeps a copy with segdeploy's I/O names (``input``/``logits``) and a symbolic batch axis: export takes it as the
fp32 file as is and makes fp16/int8 from it. There is no PyTorch original: the torch backend and Grad-CAM say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.models.imported import GIVEN_ONNX
from segdeploy.models.importers import ModelFormat, register_format
from segdeploy.models.importers.base import ImportOptions, Imported, class_names, family_or

FILE = GIVEN_ONNX  # export takes it as the fp32 file (segdeploy.models.imported.given_graph)


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _options(src: Path, options: ImportOptions) -> ImportOptions:
    if options.spec is None:
        return options
    try:
        spec = json.loads(Path(options.spec).read_text())
    except (OSError, ValueError) as e:
        raise SegdeployError(f"the ONNX spec is not readable JSON ({e}).", path=options.spec,
                             fix='write {"mean": [...], "std": [...], "size": S, "classes": [...]}') from e
    merged = dict(options.__dict__)
    for key in ("mean", "std", "size", "classes", "in_chans", "family"):
        if merged.get(key) is None and spec.get(key) is not None:
            merged[key] = spec[key]
    return ImportOptions(**merged)


def _normalised(model, size: int) -> bytes:
    """The graph with segdeploy's I/O names and a symbolic batch axis (as export writes every file)."""
    from segdeploy.export.onnx_export import INPUT_NAME, OUTPUT_NAME

    graph = model.graph
    renames = {graph.input[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in (graph.input[0], graph.output[0]):
        vi.name = renames[vi.name]
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model.SerializeToString()


def scan(src: Path, options: ImportOptions) -> Imported:
    import onnx

    if src.is_dir():
        found = sorted(src.glob("*.onnx"))
        if len(found) != 1:
            raise SegdeployError(f"expected one .onnx file in the folder, found {len(found)}.", path=src,
                                 fix="pass the .onnx file itself.")
        src = found[0]
    options = _options(src, options)
    try:
        model = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001 -- protobuf's decode errors have no common type
        raise SegdeployError(f"not a readable ONNX file ({e}).", path=src, fix="pass an .onnx file.") from e
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise SegdeployError(f"the graph has {len(inputs)} inputs and {len(model.graph.output)} outputs; segdeploy "
                             "runs models with one image input and one logits output.", path=src,
                             fix="export the model with one NCHW input and one NCHW output.")
    elem = inputs[0].type.tensor_type.elem_type
    in_dims, out_dims = _dims(inputs[0]), _dims(model.graph.output[0])
    if elem != onnx.TensorProto.FLOAT or len(in_dims) != 4 or len(out_dims) != 4:
        raise SegdeployError(f"input is {onnx.TensorProto.DataType.Name(elem)} of rank {len(in_dims)}, output of "
                             f"rank {len(out_dims)}; segdeploy needs a float NCHW input and NCHW logits.", path=src,
                             fix="re-export the model with a float32 (B, C, H, W) input.")
    in_chans = in_dims[1] or options.in_chans
    sides = {d for d in in_dims[2:] if d}
    if len(sides) > 1:
        raise SegdeployError(f"the input is {in_dims[2]}x{in_dims[3]}; segdeploy feeds square images.", path=src,
                             fix="export the model with a square (or symbolic) input size.")
    size = next(iter(sides), None) or options.size
    if options.size and sides and options.size != size:
        raise SegdeployError(f"--size {options.size} but the file's input is fixed at {size}.", path=src,
                             fix=f"drop --size or pass --size {size}.")
    missing = [flag for flag, v in (("--in-chans", in_chans), ("--size", size), ("--mean", options.mean),
                                    ("--std", options.std)) if not v]
    num_classes = out_dims[1] or (len(options.classes) if options.classes else None)
    if not num_classes:
        missing.append("--classes")
    if missing:
        raise SegdeployError(f"the ONNX file does not say {', '.join(missing)} (how its inputs were made).",
                             path=src, fix=f"pass {' '.join(missing)} (or the same keys in a JSON via --spec).")
    original_io = [inputs[0].name, model.graph.output[0].name]  # before _normalised renames them
    data = _normalised(model, size)
    _check_runs(data, src, in_chans, size, num_classes)
    return Imported(format="onnx", model=f"onnx:{src.stem}", family=family_or(options, "general"),
                    classes=class_names(options, num_classes, None, src), in_chans=in_chans, img_size=size,
                    mean=list(options.mean), std=list(options.std), keep={FILE: data}, read=[src] + ([Path(options.spec)] if options.spec else []),
                    preprocessing={"scheme": "letterbox, x/255, (x - mean) / std (as given)", "size": size,
                                   "mean": list(options.mean), "std": list(options.std)},
                    details={"original_io": original_io})


def _check_runs(data: bytes, src: Path, in_chans: int, size: int, k: int) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for b in (1, 2):
        try:
            out = session.run(None, {"input": np.zeros((b, in_chans, size, size), np.float32)})[0]
        except Exception as e:  # noqa: BLE001 -- onnxruntime's errors have no common type
            raise SegdeployError(f"the file does not run at batch {b} ({str(e)[:200]}).", path=src,
                                 fix="export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes=...)).")
        if out.shape != (b, k, size, size):
            raise SegdeployError(f"batch {b} of {size}x{size} images gave an output of shape {list(out.shape)}, "
                                 f"expected [{b}, {k}, {size}, {size}].", path=src,
                                 fix="export logits at the input's size (upsample inside the model), batch axis "
                                     "dynamic.")


def library_predict(src: Path, image: np.ndarray, x: np.ndarray, imp: Imported) -> dict:
    """onnxruntime on the original file (its own input/output names) on the same preprocessed input"""
    from segdeploy.data.transforms import letterbox_meta, restore
    from segdeploy.export.onnx_export import ort_session

    path = src if src.is_file() else next(src.glob("*.onnx"))
    session = ort_session(path)
    logits = session.run([imp.details["original_io"][1]], {imp.details["original_io"][0]: x[None]})[0][0]
    lb = letterbox_meta(image.shape[0], image.shape[1], imp.img_size)
    return {"logits": logits, "mask": restore(logits, lb).argmax(0)}


register_format(ModelFormat(name="onnx", library="onnxruntime", extra=None, scan=scan,
                            library_predict=library_predict))
