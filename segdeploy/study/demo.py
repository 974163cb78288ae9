"""The demo's pipeline: the built-in default dataset, one specialized and one general model, trained, exported
and benchmarked (torch, onnxruntime). Every step is resumable: running it again reuses finished runs, exports and
result rows. ``segdeploy demo`` prints what this returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from segdeploy.bench.runner import run_bench
from segdeploy.export import export_run
from segdeploy.records import BenchRow, comma_list
from segdeploy.run.folder import TRAIN_STATE, read_meta
from segdeploy.run.manifest import read_manifest
from segdeploy.train.loop import TrainConfig, train_model


def run_demo(out: Path, models: str | Sequence[str], *, data: str = "synthetic", epochs: int = 20,
             lr: float = 2e-3, augment: float = 0.5, img_size: int = 128,
             backends: str | Sequence[str] = ("torch", "onnxruntime"),
             precisions: str | Sequence[str] = ("fp32", "fp16", "int8"), device: str = "auto",
             duration: float = 1.0, min_iters: int = 20, say: Callable[[str], None] = print,
             stage: Callable[[str], None] = print) -> tuple[list[Path], list[BenchRow]]:
    """Train, export and bench each of ``models``; returns the run folders and the bench rows (``out``/
    results.jsonl). ``stage`` announces a step that runs, ``say`` one done earlier."""
    wanted = comma_list(precisions)
    run_dirs = []
    for name in comma_list(models):
        run_dir = out / name
        run_dirs.append(run_dir)
        has_meta = (run_dir / "model.json").is_file()
        if has_meta and read_meta(run_dir).complete:
            say(f"train {name}: done earlier ({run_dir})")
        else:
            stage(f"train {name}")
            resume = (run_dir / TRAIN_STATE).is_file()
            # an unfinished run without a state to resume (killed before its first epoch was saved) starts over
            train_model(TrainConfig(data=data, model=name, out=run_dir, epochs=epochs, img_size=img_size,
                                    batch_size=8, lr=lr, augment=augment, device=device, patience=epochs,
                                    resume=resume, restart=not resume and has_meta,
                                    # fp32: results/baseline.json (make check) was recorded from fp32 training
                                    amp="off"))
        manifest = read_manifest(run_dir)
        todo = [p for p in wanted if not manifest.is_ok(p)]
        if todo:
            stage(f"export {name}")
            export_run(run_dir, todo)
        else:
            say(f"export {name}: done earlier")
    stage("bench")
    # each configuration in a process of its own: in one process a runtime reuses what the previous one freed, and
    # a configuration's memory reads near zero (segformer-tiny once showed 1 MB)
    rows = run_bench(run_dirs, data, comma_list(backends), wanted, out / "results.jsonl", device=device,
                     duration_s=duration, min_iters=min_iters, save_predictions=out / "predictions",
                     isolate="process")
    return run_dirs, rows
