"""The run directory: one trained model and everything derived from it.

    RUN_DIR/
      model.safetensors      best weights (by validation Dice)
      model.json             metadata: model, classes, input size, normalisation, split, metrics, versions
      train_state.safetensors  resumable training state (last epoch; tensors + JSON metadata, no pickle),
                             removed when training finishes
      history.jsonl          one line per epoch
      splits.json            the train/val/test ids, written before the first checkpoint (segdeploy.run.splits)
      onnx/model.<precision>.onnx + onnx/manifest.json     (segdeploy export; int8 also model.int8-cpu.onnx)
      engines/               TensorRT engines and their build records (segdeploy engines build)
      source/                an imported model's own files (segdeploy models import; no model.safetensors)

Every stage takes RUN_DIR, so a user can inspect, copy or delete any artifact with ordinary tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from segdeploy.errors import SegdeployError
from segdeploy.fileio import atomic_save_safetensors, atomic_write_json, read_json
from segdeploy.models import create_model
from segdeploy.models.imported import build_imported, import_record
from segdeploy.numerics import require_finite_weights
from segdeploy.records import RunMeta
from segdeploy.run.splits import split_ids

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")  # the ONNX files export writes (bf16 runs on torch only)
WEIGHTS = "model.safetensors"
META = "model.json"
TRAIN_STATE = "train_state.safetensors"
LEGACY_TRAIN_STATE = "train_state.pt"  # a pickle: refused, never loaded
HISTORY = "history.jsonl"


def onnx_path(run_dir: str | Path, precision: str, form: str | None = None) -> Path:
    """``onnx/model.<precision>.onnx``; with ``form``, a variant of that precision made for one kind of runtime
    (``model.int8-cpu.onnx``: see segdeploy.export.quantize.INT8_FORMS)."""
    return Path(run_dir) / "onnx" / f"model.{precision}{'-' + form if form else ''}.onnx"


def manifest_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "onnx" / "manifest.json"


def save_checkpoint(run_dir: str | Path, model: nn.Module, meta: RunMeta | dict) -> Path:
    """Weights as safetensors, metadata as JSON, each written atomically (weights first: the JSON is
    the marker of a complete checkpoint). A dict ``meta`` is read as a ``RunMeta`` first, so it is checked."""
    run_dir = Path(run_dir)
    meta = meta if isinstance(meta, RunMeta) else RunMeta.from_json(meta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_save_safetensors(run_dir / WEIGHTS, state, {"model": meta.model})
    atomic_write_json(run_dir / META, meta.to_json())
    return run_dir / WEIGHTS


def read_meta(run_dir: str | Path) -> RunMeta:
    run_dir = Path(run_dir)
    if not (run_dir / META).is_file():
        raise SegdeployError(f"not a run directory (no {META}).", path=run_dir,
                             fix=f"train one first: segdeploy train --data D --model NAME --out {run_dir}")
    return RunMeta.from_json(read_json(run_dir / META), path=run_dir / META)


@dataclass
class Run:
    dir: Path
    meta: RunMeta

    @property
    def name(self) -> str:
        return self.meta.run_name or self.dir.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.meta.input_shape

    @property
    def weights_path(self) -> Path:
        """The checkpoint the torch backend loads (an imported model: the largest file it keeps in source/)."""
        source = self.dir / "source"
        if "imported" in self.meta.extra and source.is_dir():
            return max((p for p in source.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        return self.dir / WEIGHTS

    def check_dataset(self, dataset) -> None:
        """Raise when ``dataset`` cannot be scored by this run's model (other classes or channels)."""
        m = self.meta
        if m.num_classes != dataset.num_classes or m.in_chans != dataset.in_chans:
            raise SegdeployError(
                f"run {self.name} predicts {m.num_classes} classes from {m.in_chans}-channel images, dataset "
                f"{dataset.name} has {dataset.num_classes} classes ({', '.join(dataset.classes)}) and "
                f"{dataset.in_chans}-channel images.", path=self.dir,
                fix="use each run with a dataset that has the same classes and channels as its training set.")

    def split_ids(self, dataset, split: str, *, allow_missing: bool = False) -> list[str]:
        """Ids of ``split`` ("train", "val", "test" or "all") in ``dataset``. On the dataset the run was trained on,
        the ids recorded at training time (``splits.json``), so its test images are the ones it never saw; a
        missing test id refuses unless ``allow_missing`` (the rules: :mod:`segdeploy.run.splits`)."""

        return split_ids(self, dataset, split, allow_missing=allow_missing)

    def build_model(self) -> nn.Module:
        """The trained PyTorch model, on CPU, in eval mode (an imported one rebuilt from ``source/`` by its
        format: :mod:`segdeploy.models.imported`)."""
        from safetensors.torch import load_file

        record = import_record(self.meta)
        if record is not None:
            return build_imported(self.dir, record)

        m = self.meta
        model = create_model(m.model, num_classes=m.num_classes, in_chans=m.in_chans, img_size=m.img_size)
        weights = self.dir / WEIGHTS
        if not weights.is_file():
            raise SegdeployError("checkpoint weights are missing.", path=weights, fix="re-run segdeploy train.")
        try:
            state = load_file(str(weights))
        except Exception as e:  # noqa: BLE001 -- safetensors' own error type for a truncated header or data
            raise SegdeployError(f"the checkpoint is truncated or not a safetensors file ({type(e).__name__}: "
                                 f"{str(e)[:120]}).", path=weights,
                                 fix="restore it from a copy, or retrain (segdeploy train ... --restart).") from e
        require_finite_weights(state, weights)
        expected = model.state_dict()
        wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
                 if k in expected and v.shape != expected[k].shape]
        if wrong:
            k, got, want = wrong[0]
            raise SegdeployError(f"the checkpoint does not fit {META} (num_classes {m.num_classes}, in_chans "
                                 f"{m.in_chans}): {len(wrong)} tensors differ in shape, e.g. {k} is {list(got)} "
                                 f"in {WEIGHTS}, {list(want)} in the model.", path=self.dir / META,
                                 fix=f"restore the {META} written with these weights, or retrain.")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SegdeployError(f"checkpoint does not match model {m.model!r} (missing {len(missing)}, "
                                 f"unexpected {len(unexpected)} keys).", path=weights,
                                 fix="the model code changed since training: retrain, or check out the version "
                                     f"recorded in {META}.")
        return model.eval()


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    return Run(dir=run_dir, meta=read_meta(run_dir))
