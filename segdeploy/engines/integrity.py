"""An ONNX file is benchmarked only as what the export recorded: its digest must be the manifest's.

``segdeploy export`` writes each file's sha256 to ``onnx/manifest.json`` together with its parity against
PyTorch. A file replaced afterwards (another run's export copied in, an export interrupted before its manifest was
written, a hand edit) has no such check behind it; benchmarking it under this run's name would report another
model's numbers. Runs without a manifest (files placed by hand, older tests) are not checked: there is nothing
to compare with.
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.backends import DEFAULT_INT8_FORM
from segdeploy.errors import SegdeployError, warn
from segdeploy.run.artifacts import file_sha256, onnx_digest


class StaleArtifact(SegdeployError):
    """An artifact differs from what the run's records say it is."""


def verify_onnx(run, precision: str, form: str | None = None) -> None:
    """Raise :class:`StaleArtifact` when ``onnx/model.<precision>.onnx`` (with ``form``, an INT8 form's own file,
    e.g. ``model.int8-cpu.onnx``) is not the file its manifest entry describes."""
    from segdeploy.run.folder import manifest_path, onnx_path
    from segdeploy.run.manifest import read_manifest

    form = None if form == DEFAULT_INT8_FORM else form  # the tensorrt form is model.int8.onnx, the entry itself
    path = onnx_path(run.dir, precision, form)
    manifest = read_manifest(run.dir)
    if not manifest.precisions or not path.is_file():
        return
    fix = f"re-export it: segdeploy export {run.dir} --precisions {precision}"
    entry = top = manifest.entry(precision)
    if form is not None:  # an INT8 form is recorded under its precision's entry, with its own sha256
        entry = ((entry.get("forms") or {}).get(form) or {}) if entry.get("status") == "ok" else {}
    what = f"{precision} ({form} form)" if form else precision
    recorded = entry.get("sha256") if entry.get("status") == "ok" else None
    if recorded is None:
        raise StaleArtifact(f"{manifest_path(run.dir).name} has no ok {what} export, yet the file exists (an "
                            "export that was interrupted, or a file copied in): its parity was never checked.",
                            path=path, fix=fix)
    problem = other_checkpoint(run, top)  # forms share their precision's checkpoint
    if problem:
        raise StaleArtifact(f"the {what} export {problem}", path=path, fix=fix)
    actual = onnx_digest(path)
    if actual != recorded:
        raise StaleArtifact(f"sha256 {actual[:12]}... differs from the {recorded[:12]}... recorded in "
                            f"{manifest_path(run.dir).name} at export ({entry.get('created', 'unknown time')}): the "
                            "file was replaced (another run's export?).", path=path, fix=fix)


def _readable_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file whose header describes data that is all there (header only)."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + size + end
    except (OSError, ValueError, KeyError, TypeError, struct.error, MemoryError, OverflowError):
        return False


_warned: set[str] = set()


def other_checkpoint(run, entry: dict) -> str | None:
    """What is wrong when the manifest ``entry`` was exported from another ``model.safetensors`` than the run's
    current one (None when it is the same, or when that cannot be told: see the module docstring)."""
    from segdeploy.run.folder import WEIGHTS

    recorded = entry.get("checkpoint_sha256")
    weights = run.weights_path  # an imported model: the file its source keeps
    if not recorded:
        if entry and str(run.dir) not in _warned:
            _warned.add(str(run.dir))
            warn("onnx/manifest.json predates checkpoint digests: whether its files were exported from today's "
                 f"{WEIGHTS} cannot be checked; re-export (segdeploy export {run.dir}) to record it.", path=run.dir)
        return None
    current = file_sha256(weights)
    if current is None or current == recorded or not _readable_safetensors(weights):
        return None
    return (f"comes from another checkpoint: {WEIGHTS} had sha256 {recorded[:12]}... at export, it has "
            f"{current[:12]}... now (retrained, resumed or edited since), so its numbers would be the old weights'.")


def checkpoint_changed(run, precision: str) -> bool:
    """Whether ``precision``'s manifest entry names another checkpoint than the run's current one."""
    from segdeploy.run.manifest import read_manifest

    try:
        entry = read_manifest(run.dir).entry(precision)
    except SegdeployError:
        return False  # a damaged manifest: loading the engine reports it
    return entry.get("status") == "ok" and bool(entry.get("checkpoint_sha256")) and \
        other_checkpoint(run, entry) is not None
