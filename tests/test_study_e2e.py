"""A real study end to end on a PH2 subset from ../shared/datasets: 2 models x 2 folds x 2 learning rates, 64 px,
2 epochs, scored on the test split and on held-out PH2 images as a cross-dataset target (through a class map).

The local run is SIGKILLed while the second cell trains and run again: finished cells are not redone, the killed
cell continues from its checkpoint, no row is duplicated. The same study on a local Ray instance (2 CPUs, two cells
at once) must give the same validation and test Dice per cell (CPU training with the same seeds and thread count
is deterministic). Wall times are printed (run with -s to see them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from segdeploy.run.folder import TRAIN_STATE
from segdeploy.study.config import load_study
from segdeploy.study.plan import MARKER, STATUS, cell_dir, expand
from segdeploy.study.results import RESULTS, SELECTION, read_rows

pytestmark = pytest.mark.slow

STUDY = """
name = "e2e"
models = ["unet-tiny", "segformer-tiny"]
datasets = ["{train}"]
k = 4
folds = [0, 1]
lr = [2e-3, 5e-4]
epochs = 2
img_size = 64
batch_size = 8
augment = 0.5
backends = ["torch", "onnxruntime"]
precisions = ["fp32", "int8"]
bench_batch = 8
duration = 0.1

[resources]
num_cpus = 1

[[cross]]
source = "{train}"
target = "{heldout}"
name = "ph2-heldout"
class_map = "lesion=1"
"""
N_TRAIN, N_HELDOUT = 40, 16
WALL: dict[str, float] = {}


def link(src: Path, dst: Path, images: list[Path]) -> Path:
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for image in images:
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / f"{image.stem}.png").symlink_to(src / "masks" / f"{image.stem}.png")
    (dst / "meta.json").write_text((src / "meta.json").read_text())
    return dst


@pytest.fixture(scope="module")
def study_file(shared_datasets, tmp_path_factory) -> Path:
    src = shared_datasets / "ph2"
    images = sorted((src / "images").iterdir())
    work = tmp_path_factory.mktemp("study")
    train = link(src, work / "ph2-train", images[:N_TRAIN])
    heldout = link(src, work / "ph2-heldout", images[N_TRAIN:N_TRAIN + N_HELDOUT])
    path = work / "study.toml"
    path.write_text(STUDY.format(train=train, heldout=heldout))
    return path


def cli_run(study: Path, out: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segdeploy.commands.app", "study", "run", str(study), "--out", str(out)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=os.environ.copy())


@pytest.fixture(scope="module")
def local(study_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "study"
    cells = expand(load_study(study_file))
    first, second = cell_dir(out, cells[0]), cell_dir(out, cells[1])
    t0 = time.perf_counter()
    proc = cli_run(study_file, out, out.parent / "run1.log")
    deadline = time.time() + 900
    while not (second / TRAIN_STATE).is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = {"in_training": (second / TRAIN_STATE).is_file(),
              "history": (second / "history.jsonl").read_text() if (second / "history.jsonl").is_file() else "",
              "first_marker": (first / MARKER).stat().st_mtime_ns, "second_marker": (second / MARKER).exists(),
              "rows": read_rows(out / RESULTS)}
    WALL["local, until SIGKILL"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    proc = cli_run(study_file, out, out.parent / "run2.log")
    assert proc.wait(timeout=1800) == 0, (out.parent / "run2.log").read_text()
    WALL["local, resumed run"] = time.perf_counter() - t1
    return {"out": out, "cells": cells, "killed": killed, "log": (out.parent / "run2.log").read_text()}


def by_config(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["study"]["cell_id"], r["target"], r["backend"], r["precision"]): r for r in rows}


def test_kill_then_rerun_redoes_nothing_and_duplicates_nothing(local):
    out, cells, killed = local["out"], local["cells"], local["killed"]
    assert killed["first_marker"] and not killed["second_marker"], "the kill was meant to land in the second cell"
    assert {r["study"]["cell_id"] for r in killed["rows"]} == {cells[0].cell_id}
    rows = read_rows(out / RESULTS)
    keys = [(r["study"]["cell_id"], r["target"], r["backend"], r["precision"]) for r in rows]
    assert not [k for k, n in Counter(keys).items() if n > 1]
    # every cell: 2 backends x 2 precisions on the test split and on the cross-dataset target
    assert len(rows) == len(cells) * 2 * 2 * 2
    assert {r["study"]["cell_id"] for r in rows} == {c.cell_id for c in cells}
    assert (cell_dir(out, cells[0]) / MARKER).stat().st_mtime_ns == killed["first_marker"]  # not redone
    assert all(json.loads((cell_dir(out, c) / MARKER).read_text())["status"] == "ok" for c in cells)
    history = (cell_dir(out, cells[1]) / "history.jsonl").read_text()
    assert [json.loads(line)["epoch"] for line in history.splitlines()] == [1, 2]
    if killed["in_training"]:  # the epoch trained before the kill was kept, training went on from its checkpoint
        assert history.startswith(killed["history"]) and killed["history"]
        assert "resuming" in local["log"]


def test_rows_carry_the_study_fields(local):
    out, cells = local["out"], local["cells"]
    rows = read_rows(out / RESULTS)
    for row in rows:
        cell = next(c for c in cells if c.cell_id == row["study"]["cell_id"])
        assert row["study"] == cell.study_field() and row["train_dataset"] == cell.dataset_name == "ph2-train"
        meta = json.loads((cell_dir(out, cell) / "model.json").read_text())
        assert row["val_dice"] == meta["val"]["dice"] and 0 <= row["val_dice"] <= 1
        if row["backend"] == "torch" and row["precision"] == "int8":
            assert row["status"] == "unavailable" and row["per_image"] is None
            continue
        assert row["status"] == "ok" and 0 <= row["dice"] <= 1
        expected = {"ph2-train": N_TRAIN // 5, "ph2-heldout": N_HELDOUT}[row["target"]]
        assert row["n_images"] == expected and row["split"] == ("test" if row["target"] == "ph2-train" else "all")
        assert (row.get("class_map") is None) == (row["target"] == "ph2-train")  # the cross map reached bench
        # the per-image confusions add up to the row's Dice (background excluded, micro over the images)
        with np.load(out / row["per_image"]) as saved:
            ids, confusion = saved["ids"], saved["confusion"]
        assert confusion.shape == (expected, 2, 2) and confusion.dtype == np.int64 and len(set(ids)) == expected
        total = confusion.sum(axis=0)
        assert 2 * total[1, 1] / (2 * total[1, 1] + total[0, 1] + total[1, 0]) == pytest.approx(row["dice"], abs=1e-12)
        assert row["per_image"].startswith(f"cells/{cell.cell_id}/")  # relative to the study folder
        if row["target"] == "ph2-train":  # the training curve and the trivial baselines travel with the row
            assert len(row["train_curve"]["val_dice"]) == meta["epochs_run"] == len(row["train_curve"]["loss"])
            assert set(row["trivial_dice"]) == {"all_bg", "all_fg", "prior"} and row["trivial_dice"]["prior"] >= 0
        else:
            # a cross-dataset row: no curve of its own (the typed field is written, null), no training prior
            assert row.get("train_curve") is None and row["trivial_dice"]["prior"] is None


def test_reported_lr_has_the_best_mean_validation_dice(local):
    out = local["out"]
    rows = read_rows(out / RESULTS)
    val = defaultdict(dict)
    for r in rows:
        val[(r["study"]["model"], r["study"]["lr"])][r["study"]["fold"]] = r["val_dice"]
    selection = {s["model"]: s for s in json.loads((out / SELECTION).read_text())["selections"]}
    for model in ("unet-tiny", "segformer-tiny"):
        means = {lr: float(np.mean(list(val[(model, lr)].values()))) for lr in (2e-3, 5e-4)}
        assert all(len(val[(model, lr)]) == 2 for lr in means)
        assert selection[model]["lr"] == max(means, key=means.get) and selection[model]["complete"]
        assert selection[model]["mean_val_dice"] == pytest.approx(max(means.values()))
    # the statistics behind `study summarize` and `report` read the same rows and make the same choice
    from segdeploy.analysis.aggregate import lr_choices
    from segdeploy.analysis.rows import load_rows

    choices = lr_choices(load_rows([out]))
    assert {m: c.lr for (m, _), c in choices.items()} == {m: s["lr"] for m, s in selection.items()}


def test_summarize_and_report_read_the_study_folder(local, tmp_path):
    from typer.testing import CliRunner

    from segdeploy.commands.app import app

    runner = CliRunner()
    summary = runner.invoke(app, ["study", "summarize", str(local["out"]), "--resamples", "200"])
    assert summary.exit_code == 0, summary.output
    report = runner.invoke(app, ["report", str(local["out"]), "--out", str(tmp_path / "report"),
                                 "--resamples", "200"])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "report.html").stat().st_size > 0


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def on_ray(study_file, ray_session, tmp_path_factory):
    from segdeploy.study.runner import run_study

    out = tmp_path_factory.mktemp("ray") / "study"
    t0 = time.perf_counter()
    result = run_study(study_file, out, executor="ray")
    WALL["ray (2 CPUs, 2 cells at once)"] = time.perf_counter() - t0
    assert (result.ok, result.failed) == (len(expand(load_study(study_file))), 0)
    return out


def test_ray_gives_the_same_dice_per_cell_as_local(local, on_ray):
    here, there = by_config(read_rows(local["out"] / RESULTS)), by_config(read_rows(on_ray / RESULTS))
    assert here.keys() == there.keys()
    for key, row in here.items():
        assert there[key]["val_dice"] == row["val_dice"], key
        assert there[key].get("dice") == row.get("dice"), key
    print("\nwall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in WALL.items()))


def test_ray_ran_cells_concurrently(on_ray, study_file):
    spans = []
    for cell in expand(load_study(study_file)):
        start = datetime.fromisoformat(json.loads((cell_dir(on_ray, cell) / STATUS).read_text())["started"])
        end = datetime.fromisoformat(json.loads((cell_dir(on_ray, cell) / MARKER).read_text())["finished"])
        spans.append((start, end))
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


def test_storage_probe_names_what_a_worker_cannot_see(ray_session, tmp_path):
    from segdeploy.errors import SegdeployError
    from segdeploy.study.executors.ray import check_shared_storage

    answers = check_shared_storage(ray_session, tmp_path, [str(tmp_path)])
    assert len(answers) == len([n for n in ray_session.nodes() if n["Alive"]]) and answers[0]["reads_driver_file"]
    with pytest.raises(SegdeployError) as info:
        check_shared_storage(ray_session, tmp_path, [str(tmp_path / "not-mounted")])
    assert "not-mounted" in info.value.message and "every node mounts" in info.value.fix
    assert not (tmp_path / ".storage-probe").exists()
