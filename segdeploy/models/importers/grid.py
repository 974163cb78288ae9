"""``bench --pipeline-grid``: an imported nnU-Net run measured over its pipeline settings, as nnU-Net users weigh
them (one fold vs all chosen folds, mirroring on vs off, tile step 0.5, 0.75 or 1.0 of the patch). Each setting
is a run of its own under
``RUN/pipelines/<setting>/``, imported again from the recorded source folder and exported in the precisions the
bench asks for, so every setting is a row (model name and ``imported.pipeline`` say which) on the same fronts.
Other runs pass through unchanged. Tiles per forward call are bench's ``--batch`` (part of every row's key)."""

from __future__ import annotations

from pathlib import Path

from segdeploy.errors import SegdeployError

PIPELINES_DIR = "pipelines"


TILE_STEPS = (0.5, 0.75, 1.0)


def grid_settings(folds: list[int], steps=TILE_STEPS) -> list[tuple[list[int], bool, float]]:
    """(folds, mirroring, tile step): the first fold alone and, when there are more, all of them; mirroring on
    and off; each tile step."""
    fold_sets = [folds[:1]] + ([folds] if len(folds) > 1 else [])
    return [(f, m, s) for f in fold_sets for m in (True, False) for s in steps]


def setting_name(folds: list[int], mirroring: bool, step: float) -> str:
    return f"folds-{'-'.join(map(str, folds))}_mirror-{'on' if mirroring else 'off'}_step-{step:g}"


def expand_pipeline_grid(run_dirs, precisions, *, parity_images: int = 2, on_step=None,
                         steps=TILE_STEPS) -> list[Path]:
    """``run_dirs`` with every imported nnU-Net run replaced by its pipeline settings' runs (made when missing)."""
    from segdeploy.export import export_run
    from segdeploy.run.manifest import read_manifest
    from segdeploy.models.importers import import_model, import_record
    from segdeploy.models.importers.base import ImportOptions
    from segdeploy.run.folder import META, load_run

    onnx_precisions = [p for p in precisions if p in ("fp32", "fp16", "int8")]
    out: list[Path] = []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        record = import_record(run)
        if record is None or record.format != "nnunet":
            out.append(run.dir)
            continue
        src, pipeline = Path(record.source), record.details["pipeline"]
        if not (src / "plans.json").is_file():
            raise SegdeployError("the pipeline grid re-imports the nnU-Net results folder this run came from, and it "
                                 "is gone.", path=src, fix="restore the folder, or import each setting yourself "
                                                            "(segdeploy models import nnunet ... --folds, "
                                                            "--no-mirroring).")
        splits_file = (record.details.get("training_cases") or {}).get("splits_file")
        for folds, mirroring, step in grid_settings(list(pipeline["folds"]), steps):
            target = run.dir / PIPELINES_DIR / setting_name(folds, mirroring, step)
            if not (target / META).is_file():
                if on_step:
                    on_step(f"importing {target.name}")
                options = ImportOptions(family=run.meta.family, folds=",".join(map(str, folds)),
                                        checkpoint=pipeline["checkpoint"].removeprefix("checkpoint_").removesuffix(
                                            ".pth"), mirroring=mirroring, tile_step=step,
                                        preprocessed=Path(splits_file).parent if splits_file else None)
                import_model("nnunet", src, target, options, data=run.meta.dataset.spec,
                             parity_images=parity_images)
            manifest = read_manifest(target)
            missing = [p for p in onnx_precisions if not manifest.is_ok(p)]
            if missing:
                if on_step:
                    on_step(f"exporting {target.name}: {', '.join(missing)}")
                export_run(target, missing, parity_images=parity_images)
            out.append(target)
    return out
