"""A tiny nnU-Net v2 2d model made by nnunetv2 itself, for the ``nnunet`` importer's tests.

Run as ``python -m tests.nnunet_fixture ROOT`` (a process of its own: nnunetv2 reads its folders from the
environment when imported, and its workers need a ``__main__`` guard). It writes a raw data set of 10 grayscale
64x64 PNG cases (a bright disc on a textured background) plus 3 test cases of 96 and 128 px (larger than the
64 px patch, so nnU-Net tiles them; the last with a zero border, which nnU-Net crops away), plans and
preprocesses it with nnunetv2's own API, shrinks the 2d plan (3 stages of 8-32 features) so it trains in seconds,
and trains folds 0 and 1 for one epoch of 3 iterations each with nnunetv2's ``nnUNetTrainer_1epoch`` (a trainer
nnU-Net itself ships, so that ``nnUNetPredictor`` finds it by name), then runs nnU-Net's own validation of each.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

DATASET_ID, DATASET = 901, "Dataset901_Tiny"
TRAINER = "nnUNetTrainer_1epoch"
SIZE = 64
TEST_SIZES = (96, 128)
FOLDS = (0, 1)  # two folds: nnUNetPredictor averages their logits


def case(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(18, size - 18, 2).tolist() + [int(rng.integers(7, 14))]
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    image = 60 + 40 * np.sin(xx / 5.0 + rng.uniform(0, 6)) + rng.normal(0, 12, (size, size)) + 90 * mask
    return np.clip(image, 1, 255).astype(np.uint8), mask  # no zeros: nnU-Net's nonzero crop keeps the image


def write_raw(raw: Path, n_train: int = 10, n_test: int = 3) -> None:
    from PIL import Image

    root = raw / DATASET
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        # test cases larger than the 64 px patch: nnU-Net tiles them (a sliding window), and the last one has a
        # zero border, which nnU-Net crops away before normalising
        size = SIZE if i < n_train else TEST_SIZES[(i - n_train) % len(TEST_SIZES)]  # 96, 128, 96
        image, mask = case(rng, size)
        if i == n_train + n_test - 1:
            image[:, :20], image[-12:, :] = 0, 0
            mask[:, :20], mask[-12:, :] = 0, 0
        split, name = ("Tr", f"case_{i:03d}") if i < n_train else ("Ts", f"test_{i:03d}")
        Image.fromarray(image).save(root / f"images{split}" / f"{name}_0000.png")
        Image.fromarray(mask).save(root / f"labels{split}" / f"{name}.png")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "gray"}, "labels": {"background": 0, "disc": 1}, "numTraining": n_train,
        "file_ending": ".png"}))


def shrink_plans(plans_file: Path) -> None:
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"]["2d"]
    kw = cfg["architecture"]["arch_kwargs"]
    n = 3
    kw.update(n_stages=n, features_per_stage=[8, 16, 32][:n], kernel_sizes=kw["kernel_sizes"][:n],
              strides=kw["strides"][:n], n_conv_per_stage=[1] * n, n_conv_per_stage_decoder=[1] * (n - 1))
    cfg.update(batch_size=4, patch_size=[SIZE, SIZE])
    plans["configurations"] = {"2d": cfg}  # no 3d configuration for a 2D data set anyway
    plans_file.write_text(json.dumps(plans, indent=2))


def main(root: Path) -> Path:
    root = Path(root)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[var] = str(root / sub)
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.environ.update(nnUNet_n_proc_DA="1", nnUNet_compile="f", nnUNet_def_n_proc="1")  # planning needs >= 1
    write_raw(root / "raw")
    import torch

    torch.set_num_threads(1)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                       preprocess)

    extract_fingerprints([DATASET_ID], num_processes=1, show_progress_bar=False)
    plan_experiments([DATASET_ID])
    pre = root / "preprocessed" / DATASET
    shrink_plans(pre / "nnUNetPlans.json")
    preprocess([DATASET_ID], configurations=("2d",), num_processes=(1,), show_progress_bar=False)

    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import nnUNetTrainer_1epoch

    os.environ["nnUNet_n_proc_DA"] = "0"  # training: augment in this process (no worker processes)
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = False  # nnunetv2's run_training sets this key; the trainer pops it
    for fold in FOLDS:
        trainer = nnUNetTrainer_1epoch(dict(plans), "2d", fold, dataset_json, device=torch.device("cpu"))
        trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 3, 1
        trainer.run_training()
        trainer.perform_actual_validation(False)
    return root / "results" / DATASET / f"{TRAINER}__nnUNetPlans__2d"


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
