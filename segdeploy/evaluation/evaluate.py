"""The one evaluation path every stage uses: preprocess -> infer -> restore -> score.

Each image of ``ids`` is letterboxed and normalised with the run's ``img_size``/``mean``/``std``
(:func:`segdeploy.data.transforms.preprocess`), inferred in batches by ``predict``, its logits restored to the
image's original resolution (:func:`~segdeploy.data.transforms.restore`), arg-maxed and scored there against the
original mask (:class:`~segdeploy.evaluation.metrics.SegMetrics`). Training's validation (checkpoint selection),
``export --int8-auto``, ``bench`` and Grad-CAM's image ranking therefore all report the same number for the same
model and images.

``predict`` is any callable ``(B, C, S, S) float32 numpy -> (B, K, S, S) logits`` (numpy, or anything
``np.asarray`` accepts): an engine's ``run``, :func:`torch_predictor` around a PyTorch module, an ONNX Runtime
session wrapped in a function.

Besides the metrics, the per-image confusion matrices are kept (``Evaluation.confusion``, ``(N, K, K)`` int64,
rows = ground truth, in the order of ``image_ids``): per-class TP/FP/FN of every image, from which any subset of
the images can be re-scored (:meth:`Evaluation.scores`) for bootstrap intervals or paired tests between models.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.evaluation.metrics import SegMetrics, confusion_scores, image_dice
from segdeploy.fileio import atomic_write_bytes
from segdeploy.numerics import require_finite

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not records
class Evaluation:
    """What :func:`evaluate` measured.

    ``metrics``: :meth:`SegMetrics.result` (the fields a bench row carries). ``image_ids`` and ``confusion``
    ``(N, K, K)`` int64 (rows = ground truth, columns = prediction), one matrix per image in the same order.
    ``input_batch_1`` ``(1, C, S, S)`` and ``input_batch_b`` ``(batch, C, S, S)``: real preprocessed inputs for
    latency and throughput loops (the batch-B one repeats images when the split is smaller than ``batch``)."""

    metrics: dict
    image_ids: list[str]
    confusion: np.ndarray
    class_names: list[str]
    input_batch_1: np.ndarray
    input_batch_b: np.ndarray

    def scores(self, indices: Sequence[int] | np.ndarray | None = None) -> dict:
        """Dice/IoU/precision/recall (micro over the images, as ``metrics``) and the per-image mean, recomputed
        from the confusion matrices of the images at ``indices`` (all when None; repeats allowed, as a bootstrap
        resample has them). Equal to ``metrics`` minus HD95 for all images."""
        cms = self.confusion if indices is None else self.confusion[np.asarray(indices, dtype=np.int64)]
        return confusion_scores(cms, self.class_names)

    def image_dice(self) -> np.ndarray:
        """(N,) float64: each image's mean foreground Dice (``metrics.image_dice``), in ``image_ids`` order."""
        return np.array([image_dice(cm) for cm in self.confusion], dtype=np.float64)


class PreparedImages:
    """A view of a dataset that keeps each image's decoded sample and its network input after first use, so that
    evaluating the same images again (bench: every backend x precision of one run) reads, decodes and letterboxes
    each image once. Costs one decoded image and one input array per image of the split, held in memory; with
    ``max_bytes`` the images past that budget are prepared afresh on each use instead of kept."""

    def __init__(self, dataset, max_bytes: int | None = None):
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.kept_bytes = 0
        self._samples: dict = {}
        self._inputs: dict = {}

    def _room(self, nbytes: int) -> bool:
        if self.max_bytes is not None and self.kept_bytes + nbytes > self.max_bytes:
            return False
        self.kept_bytes += nbytes
        return True

    def __getattr__(self, name):  # classes, num_classes, ... of the dataset itself
        return getattr(self.dataset, name)

    def load(self, sample_id: str):
        if sample_id in self._samples:
            return self._samples[sample_id]
        sample = self.dataset.load(sample_id)
        if self._room(sample.image.nbytes + sample.mask.nbytes):
            self._samples[sample_id] = sample
        return sample

    def prepared(self, sample_id: str, img_size: int, mean, std):
        """(sample, input CxSxS, letterbox) for the preprocessing ``img_size``/``mean``/``std``."""
        from segdeploy.data.transforms import preprocess

        key = (sample_id, img_size, tuple(mean), tuple(std))
        sample = self.load(sample_id)
        if key in self._inputs:
            return (sample, *self._inputs[key])
        prepared = preprocess(sample.image, img_size, mean, std)
        if self._room(prepared[0].nbytes):
            self._inputs[key] = prepared
        return (sample, *prepared)


def _batches(dataset, ids: Sequence[str], batch: int, img_size: int, mean, std) -> Iterator[tuple[list, np.ndarray,
                                                                                                     list]]:
    from segdeploy.data.transforms import preprocess

    def prepare(sample_id: str):
        sample = dataset.load(sample_id)
        return (sample, *preprocess(sample.image, img_size, mean, std))

    if isinstance(dataset, PreparedImages):
        def prepare(sample_id: str):  # noqa: F811 -- the kept inputs of an earlier evaluation
            return dataset.prepared(sample_id, img_size, mean, std)

    for start in range(0, len(ids), batch):
        items = [prepare(i) for i in ids[start:start + batch]]
        yield [s for s, _, _ in items], np.stack([x for _, x, _ in items]), [lm for _, _, lm in items]


def _png_bytes(pred: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pred).save(buf, format="PNG")  # 2-D uint8 -> mode L, one class index per pixel
    return buf.getvalue()


def evaluate(predict: Predict, dataset, ids: Sequence[str], *, img_size: int, mean: Sequence[float],
             std: Sequence[float], num_classes: int, class_names: Sequence[str] | None = None, batch: int = 8,
             save_dir: str | Path | None = None, on_batch: Callable[[int], None] | None = None,
             on_image: Callable[[str, np.ndarray], None] | None = None,
             compute_hd95: bool = True) -> Evaluation:
    """Score ``predict`` on the images ``ids`` of ``dataset`` (anything with ``load(id) -> Sample``) at each
    image's original resolution.

    ``save_dir``: write each prediction as ``<id>.png`` (class index per pixel, original size). ``on_batch(n)``
    after each batch of ``n`` images (progress bars); ``on_image(id, prediction HxW uint8)`` for each image (a
    caller that needs some predictions keeps them). ``compute_hd95=False`` skips the surface distances (the
    slow part) where only overlap is wanted."""
    from segdeploy.data.transforms import restore

    ids = list(ids)
    if not ids:
        raise ValueError("no images to evaluate")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    metrics = SegMetrics(num_classes, names, compute_hd95=compute_hd95)
    save_dir = Path(save_dir) if save_dir is not None else None
    confusion: list[np.ndarray] = []
    first_batch = None
    for samples, x, letterbox in _batches(dataset, ids, batch, img_size, mean, std):
        if first_batch is None:
            first_batch = x
        # non-finite logits make every downstream number meaningless: refused here for every stage
        logits = require_finite(np.asarray(predict(x), dtype=np.float32), "the model's logits")
        if logits.shape != (len(samples), num_classes, img_size, img_size):
            raise ValueError(f"predict returned {logits.shape} for input {x.shape}; expected "
                             f"{(len(samples), num_classes, img_size, img_size)}")
        for sample, lg, lm in zip(samples, logits, letterbox):
            pred = restore(lg, lm).argmax(axis=0).astype(np.uint8)
            confusion.append(metrics.update(pred, sample.mask))
            if save_dir is not None:
                atomic_write_bytes(save_dir / f"{sample.id}.png", _png_bytes(pred))
            if on_image is not None:
                on_image(sample.id, pred)
        if on_batch is not None:
            on_batch(len(samples))
    # throughput needs a full batch even when the split is smaller than B: repeat images to fill it
    batch_b = np.resize(first_batch, (batch, *first_batch.shape[1:])).astype(np.float32)
    return Evaluation(metrics=metrics.result(), image_ids=ids, confusion=np.stack(confusion).astype(np.int64),
                      class_names=names, input_batch_1=first_batch[:1].copy(), input_batch_b=batch_b)


def torch_predictor(model, device=None, amp_dtype=None) -> Predict:
    """``predict`` for a PyTorch module: eval mode, no autograd, input moved to ``device`` (default: where the
    module's parameters are), autocast to ``amp_dtype`` when given (training's mixed precision); logits come back
    as float32 numpy."""
    import torch

    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)

    def predict(x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(torch.from_numpy(x).to(device))
        return logits.float().cpu().numpy()

    return predict
