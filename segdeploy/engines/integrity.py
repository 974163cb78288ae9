"""An ONNX file is benchmarked only as what the export recorded: its digest must be the manifest's.

``segdeploy export`` writes each file's sha256 to ``onnx/manifest.json`` together with its parity against
PyTorch. A file replaced afterwards (another run's export copied in, an export interrupted before its manifest was
written, a hand edit) has no such check behind it; benchmarking it under this run's name would report another
model's numbers. Runs without a manifest (files placed by hand, older tests) are not checked: there is nothing
to compare with.
"""

from __future__ import annotations

from segdeploy.backends import DEFAULT_INT8_FORM
from segdeploy.errors import SegdeployError
from segdeploy.run.artifacts import onnx_digest


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
    entry = manifest.entry(precision)
    if form is not None:  # an INT8 form is recorded under its precision's entry, with its own sha256
        entry = ((entry.get("forms") or {}).get(form) or {}) if entry.get("status") == "ok" else {}
    what = f"{precision} ({form} form)" if form else precision
    recorded = entry.get("sha256") if entry.get("status") == "ok" else None
    if recorded is None:
        raise StaleArtifact(f"{manifest_path(run.dir).name} has no ok {what} export, yet the file exists (an "
                            "export that was interrupted, or a file copied in): its parity was never checked.",
                            path=path, fix=fix)
    actual = onnx_digest(path)
    if actual != recorded:
        raise StaleArtifact(f"sha256 {actual[:12]}... differs from the {recorded[:12]}... recorded in "
                            f"{manifest_path(run.dir).name} at export ({entry.get('created', 'unknown time')}): the "
                            "file was replaced (another run's export?).", path=path, fix=fix)
