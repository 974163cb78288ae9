"""Training's settings, defined once: each key's name, default and help text (no torch here, so the command line
reads them without loading it). ``segdeploy train``'s options, the study file's training keys, its template
comments and the plan's training fingerprint keys are read from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from segdeploy.records import key


@dataclass
class TrainConfig:
    data: str
    model: str
    out: Path
    epochs: int = key(150, "Maximum epochs (the study: 150, with early stopping).")
    img_size: int = key(512, "Square network input; images are padded to square and resized.")
    batch_size: int = key(8, "Training batch size.")
    lr: float = key(1e-4, "AdamW learning rate (the study picks from 1e-4, 5e-5, 1e-5).")
    weight_decay: float = 1e-2
    device: str = key("auto", "auto, cpu, cuda or cuda:N.")
    seed: int = key(42, "Seed of every random generator (splits, initialisation, augmentation, batches).")
    patience: int = key(20, "Early stopping: epochs without a validation Dice gain of min-delta.")
    min_delta: float = key(0.001, "Early stopping: the smallest validation Dice gain that counts.")
    k: int = key(5, "Cross-validation folds (ignored when the dataset has split.json).")
    fold: int = key(0, "Which fold is validation.")
    group_regex: str | None = key(None, "Regex on the image id whose group 1 names the patient/case; a group never "
                                        "spans two splits.")
    # scales the geometric augmentation ranges; 0 disables augmentation
    augment: float = key(1.0, "Strength of the geometric augmentations (0 = none, 1 = the study's ranges).")
    workers: int | None = key(None, "DataLoader workers (default: 0 on CPU, 4 on CUDA).")
    # auto | bf16 | fp16 | off; None: auto on CUDA, off on CPU (segdeploy.train.precision)
    amp: str | None = key(None, "Mixed precision: auto (bf16 on sm80+ GPUs and on CPUs with AMX-BF16 or "
                                "AVX512-BF16, fp16 on older GPUs, else fp32), bf16, fp16 (CUDA) or off. Default: auto "
                                "on CUDA, off (fp32) on CPU.")
    pretrained: bool = key(False, "Load the library's ImageNet encoder weights (needs the hub).")
    weights: str | None = key(None, "Local weights file to initialise from (keys are reported).")
    resume: bool = key(False, "Continue an interrupted run in --out.")
    restart: bool = key(False, "Discard what --out holds (a finished run, or one stuck after a crash or a full disk: "
                               "checkpoint, training state, history, and the ONNX files and engines made from its "
                               "weights) and train from scratch.")
    max_train_images: int | None = key(None, "Use only the first N training images (smoke tests).")
    class_map: str | None = key(None, "Merge or select classes: 'polyp=1,2' (';' between classes; unnamed labels -> "
                                      "background) or a JSON file.")
    channels_last: bool = False  # NHWC model and inputs (benchmarks/train_throughput.py measures whether it helps)
    cache_mb: int = 2048  # decoded, letterboxed training and validation images kept in memory, at most this much
    extra: dict = field(default_factory=dict)

    def for_record(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d
