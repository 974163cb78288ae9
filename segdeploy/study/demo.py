"""The demo is a study: the built-in default dataset, one specialized and one general model, one fold at one
learning rate, each cell trained, exported and benchmarked (torch, onnxruntime) by the study's cell code
(:func:`segdeploy.study.cell.train_cell`, ``export_cell``, ``bench_cell``), so the demo and a study share one set
of resume rules: running it again reuses finished runs, exports and result rows. ``segdeploy demo`` prints what
this returns.

What differs from ``segdeploy study run`` is only where things go, kept as the demo always wrote them: each run in
``OUT/<model>`` (what ``make export``/``cam``/``check`` read), one ``OUT/results.jsonl`` with plain bench rows (no
study fields, so ``results/baseline.json`` keys still match), predictions in ``OUT/predictions``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from segdeploy.records import BenchRow, comma_list
from segdeploy.run.folder import META, read_meta
from segdeploy.study.cell import bench_cell, export_cell, export_todo, train_cell
from segdeploy.study.config import StudyConfig
from segdeploy.study.plan import expand

DEMO_FOLD = 0


def demo_study(models: str | Sequence[str], *, data: str = "synthetic", epochs: int = 20, lr: float = 2e-3,
               augment: float = 0.5, img_size: int = 128, backends: str | Sequence[str] = ("torch", "onnxruntime"),
               precisions: str | Sequence[str] = ("fp32", "fp16", "int8"), device: str = "auto",
               duration: float = 1.0) -> StudyConfig:
    """The demo's built-in study: one fold, one lr, no early stop before ``epochs`` (patience = epochs)."""
    return StudyConfig(name="demo", models=tuple(comma_list(models)), datasets=(data,), folds=(DEMO_FOLD,),
                       lr=(lr,), epochs=epochs, img_size=img_size, patience=epochs, augment=augment,
                       backends=tuple(comma_list(backends)), precisions=tuple(comma_list(precisions)), device=device,
                       duration=duration, isolate="process")


def run_demo(out: Path, models: str | Sequence[str], *, data: str = "synthetic", epochs: int = 20,
             lr: float = 2e-3, augment: float = 0.5, img_size: int = 128,
             backends: str | Sequence[str] = ("torch", "onnxruntime"),
             precisions: str | Sequence[str] = ("fp32", "fp16", "int8"), device: str = "auto",
             duration: float = 1.0, min_iters: int = 20, say: Callable[[str], None] = print,
             stage: Callable[[str], None] = print) -> tuple[list[Path], list[BenchRow]]:
    """Train, export and bench each of ``models``; returns the run folders and the bench rows (``out``/
    results.jsonl). ``stage`` announces a step that runs, ``say`` one done earlier."""
    out = Path(out)
    config = demo_study(models, data=data, epochs=epochs, lr=lr, augment=augment, img_size=img_size,
                        backends=backends, precisions=precisions, device=device, duration=duration)
    cells = expand(config)
    run_dirs = [out / cell.model for cell in cells]
    for cell, run_dir in zip(cells, run_dirs):
        if (run_dir / META).is_file() and read_meta(run_dir).complete:
            say(f"train {cell.model}: done earlier ({run_dir})")
        else:
            stage(f"train {cell.model}")
        train_cell(config, cell, run_dir, progress=True)
        if export_todo(config, run_dir):
            stage(f"export {cell.model}")
            export_cell(config, run_dir)
        else:
            say(f"export {cell.model}: done earlier")
    stage("bench")
    # each configuration in a process of its own (isolate="process"): in one process a runtime reuses what the
    # previous one freed, and a configuration's memory reads near zero (segformer-tiny once showed 1 MB). The demo's
    # rows keep bench's defaults for threads (each runtime's own) and carry no study fields, as they always did.
    rows: list[BenchRow] = []
    for cell, run_dir in zip(cells, run_dirs):
        rows += bench_cell(config, run_dir, cell.dataset, "test", out / "results.jsonl", threads=None,
                           min_iters=min_iters, save_predictions=out / "predictions", progress=True)
    return run_dirs, rows
