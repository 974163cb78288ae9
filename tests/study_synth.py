"""A synthetic study results folder for the statistics and report tests: rows as ``study run`` writes them (bench
fields + ``study``, ``val_dice``, ``target``, ``train_dataset``, ``per_image``) with per-image confusion sidecars.

Per-image confusions are drawn so that a model's micro Dice is known: for each image and foreground class with
``g`` ground-truth pixels, TP ~ Binomial(g, q) and FP = FN = g - TP, so the per-class micro Dice is
sum(TP) / sum(g) -> q. ``q`` = the model's skill minus an image difficulty shared by all models (so paired tests
have something to pair) plus a little noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ENV_CPU = {"cpu": "Synthetic CPU 9000", "cpu_cores": 2, "ram_gb": 16.0, "gpus": [], "python": "3.11.7",
           "torch": {"version": "2.14.1"}, "onnxruntime": {"version": "1.32.0", "package": "onnxruntime"},
           "tensorrt": None, "segdeploy": "0.1.0", "os": "Linux 6"}

FAMILY = {"unet": "specialized", "hiformer-b": "specialized", "segformer-b3": "general", "segnext-l": "general",
          "unetplusplus": "baseline"}
PARAMS = {"unet": 31.0, "hiformer-b": 26.0, "segformer-b3": 47.0, "segnext-l": 49.0, "unetplusplus": 26.1}


def draw_confusions(rng, n_images: int, classes: int, skill: float, difficulty: np.ndarray,
                    noise: float = 0.02) -> np.ndarray:
    """(n, K, K) confusions with FP = FN = g - TP per class (errors go to/from background)."""
    k = classes + 1
    cms = np.zeros((n_images, k, k), np.int64)
    for i in range(n_images):
        for c in range(1, k):
            g = int(rng.integers(200, 2000))
            q = float(np.clip(skill - difficulty[i] + rng.normal(0, noise), 0.01, 0.999))
            tp = int(rng.binomial(g, q))
            cms[i, c, c] = tp
            cms[i, c, 0] = g - tp  # FN
            cms[i, 0, c] = g - tp  # FP
        cms[i, 0, 0] = 50_000
    return cms


def micro_dice(cms: np.ndarray) -> tuple[float, list[float]]:
    cm = cms.sum(0).astype(float)
    tp = np.diag(cm)
    dice = 2 * tp / (cm.sum(0) + cm.sum(1))
    return float(dice[1:].mean()), dice[1:].tolist()


@dataclass
class SynthStudy:
    datasets: dict = field(default_factory=lambda: {"derm": ["lesion"], "cardio": ["rv", "myo", "lv"]})
    skills: dict = field(default_factory=lambda: {"unet": 0.80, "hiformer-b": 0.83, "segformer-b3": 0.87,
                                                  "segnext-l": 0.85, "unetplusplus": 0.82})
    folds: tuple = (0, 1, 2)
    lrs: tuple = (1e-4, 1e-5)
    n_images: int = 40
    backends: tuple = (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))
    cross: dict = field(default_factory=lambda: {"derm": "derm-shifted"})
    seed: int = 0
    dataset_skills: dict = field(default_factory=dict)  # dataset -> {model: skill}, overriding ``skills`` there
    trivial: dict = field(default_factory=dict)  # dataset -> trivial_dice as bench records it
    rising: set = field(default_factory=set)  # models whose training curve still rises at the end

    def write(self, out: Path) -> Path:
        """Write ``out/results.jsonl`` and ``out/per_image/*.npz``; returns the results path."""
        rng = np.random.default_rng(self.seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "per_image").mkdir(exist_ok=True)
        lines = []
        for dataset, classes in self.datasets.items():
            ids = np.array([f"{dataset}_{i:03d}" for i in range(self.n_images)])
            difficulty = rng.gamma(2.0, 0.03, self.n_images)
            targets = [(dataset, ids, difficulty, 0.0)]
            if dataset in self.cross:
                shifted = np.array([f"{self.cross[dataset]}_{i:03d}" for i in range(self.n_images)])
                targets.append((self.cross[dataset], shifted, rng.gamma(2.0, 0.03, self.n_images), 0.15))
            for model, skill in {**self.skills, **self.dataset_skills.get(dataset, {})}.items():
                for lr in self.lrs:
                    lr_shift = 0.0 if lr == self.lrs[0] else -0.03  # the first lr is better on val and test
                    for fold in self.folds:
                        fold_skill = skill + lr_shift + rng.normal(0, 0.005)
                        val = fold_skill + rng.normal(0, 0.003)
                        cell = f"{model}-{dataset}-f{fold}-lr{lr:g}"
                        for target, t_ids, t_diff, penalty in targets:
                            base = draw_confusions(rng, len(t_ids), len(classes), fold_skill - penalty, t_diff)
                            for backend, precision in self.backends:
                                cms = base if precision != "int8" else draw_confusions(
                                    rng, len(t_ids), len(classes), fold_skill - penalty - 0.004, t_diff)
                                lines.append(self._row(out, model, dataset, target, fold, lr, cell, val, backend,
                                                       precision, t_ids, cms, classes))
            lines.append(self._unavailable(dataset, "unet", "tensorrt", "int8"))
        lines.append(self._failed(list(self.datasets)[0], "segnext-l", "onnxruntime", "fp16"))
        results = out / "results.jsonl"
        results.write_text("".join(json.dumps(r) + "\n" for r in lines))
        return results

    def _row(self, out, model, dataset, target, fold, lr, cell, val, backend, precision, ids, cms, classes):
        dice, per_class = micro_dice(cms)
        name = f"{cell}-{target}-{backend}-{precision}.npz"
        np.savez(out / "per_image" / name, ids=ids, confusion=cms)
        params = PARAMS[model]
        speed = {"torch": 1.0, "onnxruntime": 0.7}[backend] * (0.45 if precision == "int8" else 1.0)
        p50 = params * 2.0 * speed * (1 + 0.02 * fold)
        return {
            "schema": "segdeploy.bench/1", "dataset": target, "split": "test" if target == dataset else "all",
            "run": f"/runs/{cell}", "run_name": cell, "model": model, "family": FAMILY[model],
            "backend": backend, "precision": precision, "device": "cpu", "device_requested": "auto", "batch": 8,
            "n_images": len(ids), "status": "ok", "reason": None, "dice": dice,
            "dice_per_class": dict(zip(classes, per_class)), "iou": dice / (2 - dice), "recall_fg": dice,
            "precision_fg": dice, "hd95": 10.0 * (1 - dice) * 10,
            "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.15, "p99": p50 * 1.3, "n": 50},
            "throughput_ips": 1000.0 / p50 * 1.5, "peak_memory_delta_mb": params * 4 * speed,
            "energy_j_per_image": None, "file_size_mb": params * 4 * (0.25 if precision == "int8" else 1),
            "params_m": params, "gmacs": params * 1.7, "env": ENV_CPU, "dice_vs_torch_fp32": None,
            "study": {"model": model, "dataset": dataset, "fold": fold, "lr": lr, "cell_id": cell},
            "val_dice": val, "target": target, "train_dataset": dataset,
            "per_image": f"per_image/{name}",
            **({"trivial_dice": self.trivial[dataset]} if target == dataset and dataset in self.trivial else {}),
            **({"train_curve": self._curve(model, val)} if target == dataset else {}),
        }

    def _curve(self, model, val):
        """12 epochs ending at ``val``: still rising for the models in ``rising``, flat for the last 6 otherwise."""
        if model in self.rising:
            values = [val - 0.03 * (11 - e) for e in range(12)]
        else:
            values = [val - 0.05 * max(0, 5 - e) for e in range(12)]
        return {"loss": [1.0 / (e + 1) for e in range(12)], "val_dice": values, "stopped_early": False,
                "best_epoch": 12}

    def _unavailable(self, dataset, model, backend, precision):
        return {"dataset": dataset, "model": model, "family": FAMILY[model], "backend": backend,
                "precision": precision, "device": "auto", "status": "unavailable",
                "reason": "TensorRT is not installed (pip install tensorrt)", "env": ENV_CPU,
                "study": {"model": model, "dataset": dataset, "fold": 0, "lr": self.lrs[0]},
                "train_dataset": dataset, "target": dataset}

    def _failed(self, dataset, model, backend, precision):
        return {**self._unavailable(dataset, model, backend, precision), "status": "failed",
                "reason": "RuntimeError: fp16 export produced NaN logits"}
