"""TensorRT optimization profiles, shared by the native TensorRT engines (:mod:`segdeploy.engines.trt_build`) and
ONNX Runtime's TensorRT execution provider (:mod:`segdeploy.engines.ort_backend`), so both build for the same
batch sizes: one profile of min/opt/max input shapes, spelled ``--batch MIN:OPT:MAX``."""

from __future__ import annotations

from pathlib import Path

from segdeploy.errors import SegdeployError

DEFAULT_BATCH = "1:8:32"


def profile_shapes(spec: str, input_shape: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    """"1:8:32" -> ((1,C,S,S), (8,C,S,S), (32,C,S,S)): the min/opt/max input shapes of the profile. A single
    number builds a fixed-batch engine."""
    parts = spec.split(":")
    fix = "use --batch MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:32 (or one number for a fixed batch)."
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise SegdeployError(f"batch spec {spec!r} is not MIN:OPT:MAX.", fix=fix)
    low, opt, high = (int(p) for p in parts)
    if not 1 <= low <= opt <= high:
        raise SegdeployError(f"batch spec {spec!r} must satisfy 1 <= MIN <= OPT <= MAX.", fix=fix)
    return tuple((b, *input_shape) for b in (low, opt, high))


def profile_record(input_name: str, spec: str, shapes: tuple[tuple[int, ...], ...]) -> dict:
    low, opt, high = shapes
    return {"input": input_name, "batch": spec, "min": list(low), "opt": list(opt), "max": list(high)}


def onnx_input_name(path: Path) -> str:
    """The graph's image input (the first input that is not an initializer): what the profile's shapes bind to."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)
