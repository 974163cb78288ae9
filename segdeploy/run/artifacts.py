"""The files an exported ONNX model consists of (the graph and its external-data weights), their size and their
digest. Below every stage that reads exported files (engines, bench) and used by export to write the manifest."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from segdeploy.errors import SegdeployError
from segdeploy.fileio import sha256_file


def onnx_files(path: Path) -> list[Path]:
    """The ONNX graph file and the external-data files its weights live in (the torch dynamo exporter
    writes ``model.onnx.data``), so sizes and hashes cover the weights, not only the graph."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data


    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)})
    folder = Path(path).resolve().parent
    for loc in locations:
        # onnxruntime refuses these too: a model file must not make a tool read (or hash) files elsewhere
        if Path(loc).is_absolute() or folder not in (folder / loc).resolve().parents:
            raise SegdeployError(f"external data location {loc!r} points outside the model's folder {folder}.",
                                 path=path, fix="re-export the model (segdeploy export RUN); external data files "
                                                "must lie beside the .onnx file.")
    return [Path(path)] + [Path(path).parent / loc for loc in locations]


def onnx_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in onnx_files(path)) / 1e6, 3)


def onnx_digest(path: Path) -> str:
    """sha256 of the ONNX graph and its external weight files: retraining changes only the weights file."""
    files = onnx_files(path)
    if len(files) == 1:
        return sha256_file(files[0])
    return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _sha256(path: str, identity: tuple) -> str:  # identity: a rewritten or replaced file is hashed again
    return sha256_file(path)


def file_sha256(path: Path) -> str | None:
    try:
        st = path.stat()
        # atomic writes replace the inode, so a re-export is a new identity even where mtimes are coarse
        identity = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return _sha256(str(path.resolve()), identity) if path.is_file() else None
    except OSError:  # absent or unreadable: loading it reports why on the row
        return None
